-- The Lua API: the same behaviour on the C module and on the FFI path.

local T = ...
local b = T.buttress

local S = 1e9

local function failing()
    return nil, "down"
end

local function ok_fn(...)
    return ...
end

-------------------------------------------------------------- defaults

T.test("defaults come from the core and match API.md", function()
    local d = b.defaults()
    T.eq(d.breaker.failure_threshold, 5)
    T.eq(d.breaker.reset_timeout, 30)
    T.eq(d.breaker.half_open_calls, 1)
    T.eq(d.breaker.success_threshold, 1)
    T.eq(d.breaker.trial_timeout, nil, "trial_timeout = reset_timeout")
    T.eq(d.breaker.failure_rate, 0)
    T.eq(d.breaker.window, 100)
    T.eq(d.breaker.window_type, "count")
    T.eq(d.breaker.min_calls, 10)
    T.eq(d.retry.attempts, 3)
    T.eq(d.retry.base, 0.1)
    T.eq(d.retry.multiplier, 2)
    T.eq(d.retry.cap, 10)
    T.eq(d.retry.jitter, "full")
    T.eq(d.retry.deadline, nil)
    T.eq(d.budget.ratio, 0.2)
    T.eq(d.budget.min_per_second, 10)
    T.eq(d.budget.window, 10)
end)

T.test("the facade holds no default of its own", function()
    local src = assert(io.open("lua/buttress.lua")):read("*a"):gsub("%-%-[^\n]*", "")
    -- defaults are read from *_config_init through the backend
    T.ok(not src:find("= 30%s*[,}]"), "a literal 30 s default in the facade")
    T.ok(not src:find("attempts%s*=%s*3"), "a literal attempts default in the facade")
end)

--------------------------------------------------------------- breaker

T.test("breaker: call passes results and arguments through", function()
    local br = b.breaker {}
    local x, y, z = br:call(ok_fn, 1, nil, 3)
    T.eq(x, 1)
    T.eq(y, nil)
    T.eq(z, 3)
    T.eq(br:metrics().successes, 1)
end)

T.test("breaker: nil, err counts as a failure and is returned as is", function()
    local br = b.breaker { failure_threshold = 3 }
    local r, e = br:call(failing)
    T.eq(r, nil)
    T.eq(e, "down")
    T.eq(br:metrics().failures, 1)
    -- a lone nil (no error) is a success
    br:call(function() return nil end)
    T.eq(br:metrics().successes, 1)
end)

T.test("breaker: a raised error is a failure and is raised again unchanged", function()
    local br = b.breaker {}
    local obj = { "mine" }
    local ok, err = pcall(br.call, br, function() error(obj) end)
    T.eq(ok, false)
    T.eq(err, obj)
    T.eq(br:metrics().failures, 1)
end)

T.test("breaker: opens after the threshold and rejects with a fresh err", function()
    local clock = T.clock(0)
    local br = b.breaker { failure_threshold = 2, reset_timeout = 10, clock = clock.fn }
    br:call(failing)
    T.eq(br:state(), "closed")
    br:call(failing)
    T.eq(br:state(), "open")
    clock.ns = 4 * S
    local called = false
    local r, e1 = br:call(function() called = true end)
    T.eq(r, nil)
    T.eq(called, false)
    T.eq(e1.kind, "open")
    T.near(e1.retry_after, 6, 1e-6)
    T.ok(tostring(e1):find("open", 1, true))
    local _, e2 = br:call(ok_fn)
    T.ok(e1 ~= e2, "a new error object per rejection")
    T.ok(b.is_error(e2))
    T.eq(br:metrics().rejected, 2)
end)

T.test("breaker: half-open admits the configured trials; success closes", function()
    local clock = T.clock(0)
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1, half_open_calls = 2,
                           clock = clock.fn }
    br:call(failing)
    clock.ns = 1 * S
    local t1 = T.ok(br:allow())
    local t2 = T.ok(br:allow())
    local t3, e = br:allow()
    T.eq(t3, nil)
    T.eq(e.kind, "open")
    T.eq(br:state(), "half_open")
    T.eq(br:record(t1, true), true)
    T.eq(br:state(), "closed")
    -- the other trial's outcome is from an older generation now
    local ok, err = br:record(t2, false)
    T.eq(ok, nil)
    T.eq(err.kind, "stale")
    T.eq(br:state(), "closed")
end)

T.test("breaker: excluded is neutral and keeps the failure streak", function()
    local br = b.breaker {
        failure_threshold = 2,
        is_failure = function(ok, v, err)
            if err == "business" then
                return "excluded"
            end
            return not ok or (v == nil and err ~= nil)
        end,
    }
    br:call(failing)
    br:call(function() return nil, "business" end)
    T.eq(br:state(), "closed")
    T.eq(br:metrics().excluded, 1)
    br:call(failing)
    T.eq(br:state(), "open")
end)

T.test("breaker: is_failure override sees pcall's results", function()
    local seen
    local br = b.breaker {
        is_failure = function(ok, status)
            seen = { ok, status }
            return ok and status >= 500
        end,
    }
    T.eq(br:call(function() return 503 end), 503)
    T.eq(seen[1], true)
    T.eq(seen[2], 503)
    T.eq(br:metrics().failures, 1)
end)

T.test("breaker: is_failure that raises does not leak the trial permit", function()
    local clock = T.clock(0)
    local br = b.breaker {
        failure_threshold = 1, reset_timeout = 1, clock = clock.fn,
        is_failure = function(ok, v) if v == "boom" then error("predicate") end return not ok end,
    }
    pcall(br.call, br, function() error("x") end) -- opens
    clock.ns = 2 * S
    T.raises(function() br:call(function() return "boom" end) end, "predicate")
    T.ok(br:allow(), "the permit came back")
end)

T.test("breaker: fallback replaces the rejection", function()
    local br = b.breaker {
        failure_threshold = 1,
        fallback = function(err, a) return "cached:" .. a, err.kind end,
    }
    br:call(failing)
    local v, kind = br:call(ok_fn, "k")
    T.eq(v, "cached:k")
    T.eq(kind, "open")
end)

T.test("breaker: wrap keeps the function's arguments", function()
    local br = b.breaker {}
    local add = br:wrap(function(x, y) return x + y end)
    T.eq(add(2, 3), 5)
end)

T.test("breaker: on_state_change fires once per edge; a raising listener is isolated",
       function()
    local clock = T.clock(0)
    local edges = {}
    local old_stderr = io.stderr
    local br = b.breaker {
        failure_threshold = 1, reset_timeout = 1, clock = clock.fn,
        on_state_change = function(_, from, to)
            edges[#edges + 1] = from .. ">" .. to
            error("listener broke")
        end,
    }
    -- keep the log line out of the test output
    io.stderr = { write = function() end } -- luacheck: ignore
    br:call(failing)
    clock.ns = 1 * S
    br:call(ok_fn)
    br:force_open()
    br:disable()
    br:reset()
    io.stderr = old_stderr -- luacheck: ignore
    T.eq(table.concat(edges, " "),
         "closed>open open>half_open half_open>closed closed>forced_open "
         .. "forced_open>disabled disabled>closed")
    T.eq(br:state(), "closed")
end)

T.test("breaker: force_open, disable and reset", function()
    local br = b.breaker {}
    br:force_open()
    T.eq(br:state(), "forced_open")
    local _, e = br:call(ok_fn)
    T.eq(e.kind, "open")
    T.eq(e.retry_after, nil, "forced open: unknown retry_after")
    br:disable()
    T.eq(br:state(), "disabled")
    for _ = 1, 20 do
        br:call(failing)
    end
    T.eq(br:state(), "disabled")
    br:reset()
    T.eq(br:state(), "closed")
end)

T.test("breaker: the closed success path reads no clock but for the latency sample", function()
    local reads = 0
    local br = b.breaker { clock = function() reads = reads + 1; return 0 end }
    reads = 0
    for _ = 1, 100 do
        br:record(br:allow(), true)
        br:call(ok_fn)
    end
    -- two reads per sampled call, about one call in 16 (docs/lua.md)
    local sampled = br:metrics().latency.count
    T.eq(reads, 2 * sampled + 1) -- + 1: metrics() reads the clock
    T.ok(sampled >= 2 and sampled <= 40, "sampled " .. sampled .. " of 100 br:call")
    reads = 0
    br:record(br:allow(), false) -- a failure needs the time
    T.ok(reads > 0)
end)

T.test("breaker: slow calls are timed from allow to record", function()
    local clock = T.clock(0)
    local br = b.breaker { slow_call = 0.1, clock = clock.fn }
    local t = br:allow()
    clock.ns = 0.25 * S
    br:record(t, true)
    local m = br:metrics()
    T.eq(m.slow, 1)
    T.eq(m.latency.count, 1)
    T.near(m.latency.max, 0.25, 0.25 / 50)
    -- an explicit duration wins
    br:record(br:allow(), true, 0.01)
    T.eq(br:metrics().slow, 1)
end)

T.test("breaker: metrics have the documented fields", function()
    local br = b.breaker { name = "api-metrics" }
    br:call(ok_fn)
    local m = br:metrics()
    for _, k in ipairs { "calls", "successes", "failures", "excluded", "rejected", "slow",
                         "stale", "cancelled", "consecutive_failures", "window_calls",
                         "window_failures", "failure_rate", "slow_rate",
                         "calls_per_second" } do
        T.eq(type(m[k]), "number", k)
    end
    T.eq(m.state, "closed")
    T.eq(m.name, "api-metrics")
    T.eq(m.transitions["closed>open"], 0)
    T.eq(type(m.latency.p99), "number")
    T.eq(b.metrics()["api-metrics"].calls, 1)
end)

T.test("breaker: a name is a registry key", function()
    local a = b.breaker { name = "api-registry", failure_threshold = 3 }
    local c = b.breaker { name = "api-registry", failure_threshold = 3 }
    T.ok(a == c, "same settings: the same breaker")
    T.eq(b.get("api-registry"), a)
end)

T.test("breaker: cancelled gives a half-open permit back", function()
    local clock = T.clock(0)
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1, clock = clock.fn }
    br:call(failing)
    clock.ns = S
    local t = T.ok(br:allow())
    T.eq(br:allow(), nil)
    br:record(t, "cancelled")
    T.ok(br:allow(), "permit back")
end)

T.test("breaker: a lost trial expires after trial_timeout", function()
    local clock = T.clock(0)
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1, trial_timeout = 2,
                           clock = clock.fn }
    br:call(failing)
    clock.ns = S
    T.ok(br:allow()) -- never recorded
    clock.ns = 2 * S
    T.eq(br:allow(), nil)
    clock.ns = 3 * S
    T.ok(br:allow(), "the permit expired")
end)

T.test("breaker: calls inside coroutines each keep their own ticket", function()
    local clock = T.clock(0)
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1, half_open_calls = 1,
                           clock = clock.fn }
    br:call(failing)
    clock.ns = S
    local co = coroutine.wrap(function()
        return br:call(function() coroutine.yield("in"); return "done" end)
    end)
    T.eq(co(), "in")
    local r, e = br:call(ok_fn, 1) -- the one trial is busy in the coroutine
    T.eq(r, nil)
    T.eq(e.kind, "open")
    T.eq(co(), "done")
    T.eq(br:state(), "closed")
end)

----------------------------------------------------------------- retry

T.test("retry: returns fn's results after failures", function()
    local n = 0
    local r = b.retry { attempts = 3, base = 0 }
    local v, w = r:call(function(x)
        n = n + 1
        if n < 3 then return nil, "again" end
        return x, n
    end, "arg")
    T.eq(v, "arg")
    T.eq(w, 3)
    T.eq(r:metrics().retries, 2)
end)

T.test("retry: exhausted gives nil, err with the last cause", function()
    local n = 0
    local slept = {}
    local r = b.retry { attempts = 3, base = 0.5, jitter = "none",
                        sleep = function(s) slept[#slept + 1] = s end }
    local v, e = r:call(function() n = n + 1; return nil, "fail " .. n end)
    T.eq(v, nil)
    T.eq(e.kind, "exhausted")
    T.eq(e.cause, "fail 3")
    T.eq(e.attempts, 3)
    T.ok(tostring(e):find("fail 3", 1, true))
    T.eq(#slept, 2)
    T.near(slept[1], 0.5, 1e-9)
    T.near(slept[2], 1.0, 1e-9)
end)

T.test("retry: raised errors are retried; exhausted keeps the raised value", function()
    local r = b.retry { attempts = 2, base = 0 }
    local v, e = r:call(function() error({ code = 7 }) end)
    T.eq(v, nil)
    T.eq(e.kind, "exhausted")
    T.eq(e.cause.code, 7)
    T.eq(e.raised, true)
end)

T.test("retry: a zero delay never sleeps", function()
    local sleeps = 0
    local r = b.retry { attempts = 5, base = 0, sleep = function() sleeps = sleeps + 1 end }
    r:call(failing)
    T.eq(sleeps, 0)
end)

T.test("retry: retry_after replaces the backoff delay", function()
    local slept = {}
    local r = b.retry {
        attempts = 2, base = 5, jitter = "none",
        sleep = function(s) slept[#slept + 1] = s end,
        retry_after = function(err) return err.after end,
    }
    r:call(function() return nil, { after = 0.25 } end)
    T.near(slept[1], 0.25, 1e-9)
end)

T.test("retry: deadline gives up instead of sleeping past it", function()
    local clock = T.clock(0)
    local slept = 0
    local r = b.retry {
        attempts = 10, base = 1, jitter = "none", deadline = 2.5, clock = clock.fn,
        sleep = function(s) slept = slept + s; clock.ns = clock.ns + s * S end,
    }
    local v, e = r:call(failing)
    T.eq(v, nil)
    T.eq(e.kind, "deadline")
    T.ok(slept <= 2.5, "slept " .. slept)
end)

T.test("retry: remaining() inside fn, nested calls inherit the deadline", function()
    local clock = T.clock(0)
    local outer = b.retry { attempts = 1, deadline = 10, clock = clock.fn }
    local inner = b.retry { attempts = 1, deadline = 30, clock = clock.fn }
    T.eq(outer:remaining(), nil, "outside any call")
    local seen_outer, seen_inner
    outer:call(function()
        clock.ns = 4 * S
        seen_outer = outer:remaining()
        inner:call(function()
            seen_inner = inner:remaining()
        end)
        return true
    end)
    T.near(seen_outer, 6, 1e-9)
    T.near(seen_inner, 6, 1e-9, "the outer deadline is earlier")
    T.eq(b.remaining(), nil, "popped after the call")
end)

T.test("retry: an open circuit is not retried by default", function()
    local br = b.breaker { failure_threshold = 1 }
    br:call(failing)
    local n = 0
    local r = b.retry { attempts = 5, base = 0, breaker = br }
    local v, e = r:call(function() n = n + 1 end)
    T.eq(v, nil)
    T.eq(e.kind, "open")
    T.eq(n, 0)
    T.eq(r:metrics().retries, 0)
end)

T.test("retry: retry_on refuses a failure: it comes back as fn gave it", function()
    local r = b.retry { attempts = 5, base = 0, retry_on = function(err) return err ~= "fatal" end }
    local n = 0
    local v, e = r:call(function() n = n + 1; return nil, "fatal" end)
    T.eq(v, nil)
    T.eq(e, "fatal")
    T.eq(n, 1)
end)

T.test("retry: a budget refuses retries once spent", function()
    local clock = T.clock(S)
    local budget = b.budget { ratio = 0, min_per_second = 0.1, window = 10, clock = clock.fn }
    local r = b.retry { attempts = 3, base = 0, budget = budget, clock = clock.fn }
    local _, e = r:call(failing)
    T.eq(e.kind, "budget")
    T.eq(budget:metrics().rejections, 1)
end)

T.test("retry: before_sleep sees attempt and delay", function()
    local seen = {}
    local r = b.retry { attempts = 3, base = 0.1, jitter = "none", sleep = function() end,
                        before_sleep = function(st) seen[#seen + 1] = st.attempt .. ":" .. st.delay end }
    r:call(failing)
    T.eq(table.concat(seen, " "), "1:0.1 2:0.2")
end)

T.test("retry: default sleep of plain Lua really waits", function()
    local r = b.retry { attempts = 2, base = 0.02, jitter = "none" }
    local t0 = b.now()
    r:call(failing)
    T.ok(b.now() - t0 >= 0.019, "slept " .. (b.now() - t0))
end)

--------------------------------------------------------------- backoff

T.test("backoff: delays grow, saturate at the cap, no jitter", function()
    local d = b.backoff { base = 0.1, multiplier = 2, cap = 1, jitter = "none" }:delays(6)
    local want = { 0.1, 0.2, 0.4, 0.8, 1, 1 }
    for i = 1, 6 do
        T.near(d[i], want[i], 1e-9, "delay " .. i)
    end
end)

T.test("backoff: full jitter after the cap is spread over [0, cap]", function()
    local d = b.backoff { base = 1, cap = 2, jitter = "full", seed = 42 }:delays(200)
    local lo, hi, distinct = math.huge, -1, {}
    for i = 10, 200 do
        lo = math.min(lo, d[i])
        hi = math.max(hi, d[i])
        distinct[d[i]] = true
    end
    T.ok(lo >= 0 and hi <= 2)
    T.ok(hi - lo > 1, "spread " .. (hi - lo))
end)

T.test("backoff: huge retry numbers stay finite and within the cap", function()
    local bo = b.backoff { base = 0.1, cap = 10, jitter = "none" }
    for _, n in ipairs { 1024, 1025, 2 ^ 32 - 1 } do
        local v = bo:delay(n)
        T.ok(v == v and v >= 0 and v <= 10, "retry " .. n .. ": " .. tostring(v))
        T.near(v, 10, 1e-9)
    end
end)

T.test("backoff: the same seed gives the same delays", function()
    local a = b.backoff { seed = 7 }:delays(5)
    local c = b.backoff { seed = 7 }:delays(5)
    for i = 1, 5 do
        T.eq(a[i], c[i])
    end
end)

------------------------------------------------------------ misc

T.test("now() is monotonic seconds from the core", function()
    local a = b.now()
    local c = b.now()
    T.ok(c >= a)
    T.ok(a > 0)
end)

T.test("both paths: the backend is the one asked for", function()
    local want = os.getenv("BUTTRESS_BACKEND")
    if want and want ~= "" then
        T.eq(b.backend, want)
    elseif T.jit then
        T.eq(b.backend, "ffi")
    else
        T.eq(b.backend, "c")
    end
end)

T.test("prometheus: text format with every named breaker", function()
    local br = b.breaker { name = 'prom "q"\\x', failure_threshold = 1 }
    br:call(failing)
    local text = b.prometheus()
    T.ok(text:find('# TYPE buttress_breaker_calls_total counter', 1, true))
    T.ok(text:find('buttress_breaker_failures_total{breaker="prom \\"q\\"\\\\x"} 1',
                   1, true), "escaped label and count")
    T.ok(text:find('buttress_breaker_state{breaker="prom \\"q\\"\\\\x",state="open"} 1', 1, true))
    T.ok(text:find('from="closed",to="open"} 1', 1, true))
    for l in text:gmatch("[^\n]+") do
        T.ok(l:match("^#") or l:match("^[%w_]+{.*} [%d.eE+-]+$") or l:match("^[%w_]+{.*} NaN$"),
             "malformed line: " .. l)
    end
end)
