-- Fault injection (issue 9): a flaky in-process dependency that raises,
-- returns nil + err, times out and answers slowly, driven through
-- buttress.retry with a deadline, a retry budget and a breaker.  Time is a
-- test clock that the dependency and the retry's sleep move forward, so
-- every bound is checked to the nanosecond; one test at the end uses the
-- real clock and real short sleeps.
--
-- Checked: attempts never exceed `attempts`; no attempt starts at or after
-- the deadline (and no sleep ends past it); retries stay within the budget;
-- the breaker opens, rejects without calling the dependency, and its
-- rejections are not retried; slow calls are counted.

local T = ...
local b = T.buttress

local S = 1e9

-- Park-Miller: exact in doubles (products stay below 2^46), so Lua 5.4 and
-- LuaJIT draw the same faults from the same seed.
local function rng(seed)
    local x = seed % 2147483646 + 1
    return function(n)
        x = x * 16807 % 2147483647
        return x % n + 1
    end
end

local FAILS = { raise = true, raise_table = true, raise_nil = true, nil_err = true,
                timeout = true }

-- A flaky dependency.  `pick()` names the fault of each call:
--   ok, nil_ok (a bare nil: a success), slow (answers after `slow_ns`),
--   raise (a string error), raise_table, raise_nil (error(nil)), nil_err,
--   timeout (waits until the caller's remaining time, capped at `slow_ns`,
--   then returns nil, "timeout": what a cosocket timed by r:remaining() does).
local function flaky(clock, pick, opts)
    opts = opts or {}
    local dep = { calls = 0, starts = {}, faults = {}, slow_ns = opts.slow_ns or 0.3 * S }
    function dep.fn(...)
        dep.calls = dep.calls + 1
        dep.starts[dep.calls] = clock.ns
        local f = pick()
        dep.faults[dep.calls] = f
        if f == "ok" then
            return "ok", ...
        elseif f == "nil_ok" then
            return nil
        elseif f == "slow" then
            clock.ns = clock.ns + dep.slow_ns
            return "slow"
        elseif f == "raise" then
            error("injected: boom", 0)
        elseif f == "raise_table" then
            error({ code = 503 })
        elseif f == "raise_nil" then
            error(nil)
        elseif f == "nil_err" then
            return nil, "injected: unavailable"
        elseif f == "timeout" then
            local left = opts.remaining and opts.remaining()
            local wait = dep.slow_ns
            if left and left * S < wait then
                wait = math.floor(left * S + 0.5)
            end
            clock.ns = clock.ns + wait
            return nil, "timeout"
        end
        error("unknown fault " .. tostring(f))
    end
    return dep
end

local function from(seq)
    local i = 0
    return function()
        i = i + 1
        return seq[i] or seq[#seq]
    end
end

local function random_faults(draw, kinds)
    return function()
        return kinds[draw(#kinds)]
    end
end

-- A sleep on the test clock that records what it was asked.
local function test_sleep(clock, log)
    return function(s)
        log[#log + 1] = { at = clock.ns, s = s }
        clock.ns = clock.ns + math.floor(s * S + 0.5)
    end
end

local ALL = { "ok", "nil_ok", "slow", "raise", "raise_table", "raise_nil", "nil_err",
              "timeout" }
local MOSTLY_FAILING = { "raise", "raise_table", "raise_nil", "nil_err", "nil_err", "timeout",
                         "ok" }

T.test("faults: attempts never exceed `attempts`, whatever the dependency does", function()
    local runs, total_calls, total_retries, giveups = 0, 0, 0, 0
    for seed = 1, 300 do
        local draw = rng(seed)
        local clock = T.clock(1e12)
        local attempts = draw(6)
        local r = b.retry { attempts = attempts, base = 0.001, jitter = "full", seed = seed,
                            clock = clock.fn, sleep = test_sleep(clock, {}) }
        local dep = flaky(clock, random_faults(draw, MOSTLY_FAILING))
        for _ = 1, 5 do
            local before = dep.calls
            local ok, res, err = pcall(r.call, r, dep.fn, "arg")
            local n = dep.calls - before
            runs = runs + 1
            total_calls = total_calls + n
            total_retries = total_retries + n - 1
            T.ok(ok, "r:call raised: " .. tostring(res))
            T.ok(n >= 1 and n <= attempts, ("seed %d: %d calls, attempts = %d")
                 :format(seed, n, attempts))
            local last = dep.faults[dep.calls]
            for i = before + 1, dep.calls - 1 do
                T.ok(FAILS[dep.faults[i]], "a success was retried: " .. dep.faults[i])
            end
            if FAILS[last] then
                giveups = giveups + 1
                T.eq(n, attempts, "gave up before the last attempt")
                T.eq(res, nil)
                T.eq(err.kind, "exhausted")
                T.eq(err.attempts, n)
                T.eq(err.raised, (last:sub(1, 5) == "raise") or nil)
                if last == "raise_table" then
                    T.eq(err.cause.code, 503, "the raised table is the cause, unchanged")
                elseif last == "raise" then
                    T.eq(err.cause, "injected: boom")
                elseif last == "raise_nil" then
                    T.eq(err.cause, nil)
                else
                    T.eq(err.cause, last == "timeout" and "timeout" or "injected: unavailable")
                end
            else
                T.eq(err, last == "ok" and "arg" or nil, "fn's results come back")
                T.eq(res, (last == "ok" or last == "slow") and last or nil)
            end
            T.eq(b.remaining(), nil, "no retry frame left behind")
        end
        local m = r:metrics()
        T.eq(m.calls, 5)
    end
    T.ok(giveups > 50 and giveups < runs, "the mix gave up " .. giveups .. " of " .. runs)
    T.ok(total_retries > 0 and total_calls > runs)
end)

T.test("faults: retry metrics add up to what the dependency saw", function()
    local draw = rng(7)
    local clock = T.clock(1e12)
    local r = b.retry { attempts = 4, base = 0.01, clock = clock.fn, seed = 7,
                        sleep = test_sleep(clock, {}) }
    local dep = flaky(clock, random_faults(draw, ALL))
    local n = 400
    for _ = 1, n do
        pcall(r.call, r, dep.fn)
    end
    local m = r:metrics()
    T.eq(m.calls, n)
    T.eq(m.attempts, dep.calls)
    T.eq(m.retries, dep.calls - n)
    T.eq(m.successes + m.failures + m.giveups_attempts, n)
end)

T.test("faults: nothing starts at or after the deadline, no sleep ends past it", function()
    local by_kind = {}
    for seed = 1, 300 do
        local draw = rng(1000 + seed)
        local clock = T.clock(1e12)
        local deadline = draw(1000) / 1000           -- 1 ms .. 1 s
        local sleeps = {}
        local r
        r = b.retry { attempts = 2 + draw(8), base = draw(200) / 1000, multiplier = 1.5,
                      cap = 0.5, jitter = "equal", deadline = deadline, seed = seed,
                      clock = clock.fn, sleep = test_sleep(clock, sleeps) }
        local dep = flaky(clock, random_faults(draw, { "slow", "timeout", "raise", "nil_err",
                                                       "nil_err", "timeout" }),
                          { slow_ns = draw(400) * 1e6, remaining = function() return r:remaining() end })
        local seen = {}
        local inner = function(...)
            seen[#seen + 1] = r:remaining()
            return dep.fn(...)
        end
        local t0 = clock.ns
        local limit = t0 + deadline * S
        local res, err = r:call(inner)
        for i, start in ipairs(dep.starts) do
            T.ok(start < limit, ("seed %d: attempt %d started %.0f ns after the deadline")
                 :format(seed, i, start - limit))
            T.near(seen[i], (limit - start) / S, 2e-9, "r:remaining() inside fn")
        end
        for _, s in ipairs(sleeps) do
            T.ok(s.at + s.s * S <= limit + 1, "a sleep ran past the deadline")
        end
        if res == nil then
            by_kind[err.kind] = (by_kind[err.kind] or 0) + 1
            T.eq(err.attempts, dep.calls)
            T.ok(err.kind == "deadline" or err.kind == "exhausted", err.kind)
        else
            T.eq(res, "slow")
        end
        T.eq(b.remaining(), nil)
        T.eq(r:metrics().giveups_deadline, (res == nil and err.kind == "deadline") and 1 or 0)
    end
    T.ok((by_kind.deadline or 0) > 30, "few deadline give-ups: " .. tostring(by_kind.deadline))
end)

T.test("faults: a timed-out attempt that used up the deadline is not retried", function()
    local clock = T.clock(1e12)
    local r
    r = b.retry { attempts = 5, base = 0, deadline = 0.5, clock = clock.fn,
                  sleep = function() error("no sleep expected") end }
    local dep = flaky(clock, from { "timeout" },
                      { slow_ns = 10 * S, remaining = function() return r:remaining() end })
    local res, err = r:call(dep.fn)
    T.eq(res, nil)
    T.eq(err.kind, "deadline")
    T.eq(err.cause, "timeout")
    T.eq(dep.calls, 1)
    T.eq(clock.ns, 1e12 + 0.5 * S, "the attempt waited exactly the time left")
end)

T.test("faults: an inner retry never outlives the outer deadline", function()
    local clock = T.clock(1e12)
    local sleeps = {}
    local outer = b.retry { attempts = 3, base = 0.05, jitter = "none", deadline = 1,
                            clock = clock.fn, sleep = test_sleep(clock, sleeps) }
    local inner = b.retry { attempts = 50, base = 0.05, jitter = "none", clock = clock.fn,
                            sleep = test_sleep(clock, sleeps) }
    local dep = flaky(clock, from { "slow", "nil_err" }, { slow_ns = 0.1 * S })
    local fails = flaky(clock, from { "nil_err" })
    local inner_calls, inner_starts = 0, {}
    local limit = 1e12 + 1 * S
    local res, err = outer:call(function()
        local x = dep.fn()                       -- 0.1 s of work first
        local r2, e2 = inner:call(function()
            inner_calls = inner_calls + 1
            inner_starts[inner_calls] = clock.ns
            T.near(inner:remaining(), (limit - clock.ns) / S, 1e-9,
                   "the inner call sees the outer deadline")
            clock.ns = clock.ns + 0.05 * S
            return fails.fn()
        end)
        return r2, e2, x
    end)
    T.eq(res, nil)
    for _, start in ipairs(inner_starts) do
        T.ok(start < limit, "an inner attempt started after the outer deadline")
    end
    for _, s in ipairs(sleeps) do
        T.ok(s.at + s.s * S <= limit + 1)
    end
    T.ok(inner_calls < 50, "the inner retry ran all its attempts: " .. inner_calls)
    T.eq(inner:metrics().giveups_deadline >= 1, true)
    T.ok(err.kind == "deadline" or err.kind == "exhausted", err.kind)
end)

T.test("faults: retries stay within the budget, shared by two call sites", function()
    local clock = T.clock(1e12)
    -- reserve = min_per_second * window = 5 retries, plus 10% of the calls
    local budget = b.budget { ratio = 0.1, min_per_second = 0.5, window = 10, clock = clock.fn }
    local mk = function(seed)
        return b.retry { attempts = 4, base = 0.0001, jitter = "none", budget = budget,
                         clock = clock.fn, seed = seed, sleep = test_sleep(clock, {}) }
    end
    local r1, r2 = mk(1), mk(2)
    local draw = rng(42)
    local dep = flaky(clock, random_faults(draw, { "raise", "nil_err", "nil_err", "timeout",
                                                   "ok" }), { slow_ns = 1e6 })
    local calls, budget_giveups = 0, 0
    for i = 1, 300 do
        local r = i % 2 == 0 and r1 or r2
        local before = dep.calls
        local res, err = r:call(dep.fn)
        calls = calls + 1
        local retries = r1:metrics().retries + r2:metrics().retries
        T.ok(retries <= 5 + 0.1 * calls + 1e-9,
             ("%d retries after %d calls: over the budget"):format(retries, calls))
        if res == nil and err.kind == "budget" then
            budget_giveups = budget_giveups + 1
            T.eq(err.attempts, dep.calls - before)
        end
    end
    T.ok(clock.ns - 1e12 < 9 * S, "the run must stay inside one budget window")
    local m = budget:metrics()
    T.eq(m.deposits, calls)
    T.eq(m.withdrawals, r1:metrics().retries + r2:metrics().retries)
    T.eq(m.withdrawals, dep.calls - calls, "every retry the dependency saw was paid for")
    T.ok(budget_giveups > 0 and m.rejections == budget_giveups)
    -- spent: 20 failing calls earn 20 * 0.1 = 2 retries between them
    local once = flaky(clock, from { "nil_err" })
    local refused = 0
    for _ = 1, 20 do
        local res, err = r1:call(once.fn)
        T.eq(res, nil)
        refused = refused + (err.kind == "budget" and 1 or 0)
    end
    T.ok(once.calls <= 20 + 3, once.calls .. " calls")
    T.ok(refused >= 17, refused .. " refused")
end)

T.test("faults: the breaker opens, rejects without calling, and is not retried", function()
    local clock = T.clock(1e12)
    local br = b.breaker { failure_threshold = 3, reset_timeout = 5, clock = clock.fn }
    local r = b.retry { attempts = 6, base = 0.01, jitter = "none", breaker = br,
                        clock = clock.fn, sleep = test_sleep(clock, {}) }
    local dep = flaky(clock, from { "raise", "nil_err", "raise_table", "ok" })
    local res, err = r:call(dep.fn)
    T.eq(dep.calls, 3, "the fourth attempt must be rejected without a call")
    T.eq(res, nil)
    T.eq(err.kind, "open", "the rejection comes back as is, not retried")
    T.eq(br:state(), "open")
    -- opened at t = 0.03 (sleeps of 0.01 and 0.02), rejected after a 0.04 sleep
    T.near(err.retry_after, 5 - 0.04, 1e-6)
    T.eq(r:metrics().attempts, 4)
    -- open: every call is rejected at once, the dependency never sees one
    for _ = 1, 20 do
        local x, e = r:call(dep.fn)
        T.eq(x, nil)
        T.eq(e.kind, "open")
    end
    T.eq(dep.calls, 3)
    T.eq(br:metrics().rejected, 21)
    T.eq(r:metrics().retries, 3)
    -- after reset_timeout one trial goes through; its success closes
    clock.ns = clock.ns + 5 * S
    local v = r:call(dep.fn)
    T.eq(v, "ok")
    T.eq(br:state(), "closed")
    T.eq(dep.calls, 4)
end)

T.test("faults: a failed trial reopens and the retry does not hammer it", function()
    local clock = T.clock(1e12)
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1, clock = clock.fn }
    local r = b.retry { attempts = 10, base = 0, breaker = br, clock = clock.fn }
    local dep = flaky(clock, from { "nil_err" })
    r:call(dep.fn)
    T.eq(dep.calls, 1)
    clock.ns = clock.ns + 1 * S
    local _, err = r:call(dep.fn)    -- the trial fails, the retry is rejected
    T.eq(err.kind, "open")
    T.eq(dep.calls, 2)
    T.eq(br:metrics().transitions["half_open>open"], 1)
end)

T.test("faults: slow calls are counted and a slow rate opens the breaker", function()
    local clock = T.clock(1e12)
    local br = b.breaker { failure_threshold = 0, slow_call = 0.1, slow_rate = 0.5,
                           min_calls = 4, window = 10, clock = clock.fn }
    local r = b.retry { attempts = 3, base = 0, breaker = br, clock = clock.fn }
    local dep = flaky(clock, from { "ok", "slow", "ok", "slow", "ok" }, { slow_ns = 0.25 * S })
    for i = 1, 3 do
        local v = r:call(dep.fn)
        T.ok(v == "ok" or v == "slow", "a slow success is a success")
        T.eq(br:state(), "closed", "after call " .. i)
    end
    T.eq(br:metrics().slow, 1)
    T.eq(r:call(dep.fn), "slow")
    local m = br:metrics()
    T.eq(m.slow, 2)
    T.eq(m.window_slow, 2)
    T.eq(m.slow_rate, 0.5)
    T.eq(m.failures, 0)
    T.eq(dep.calls, 4, "slow successes are never retried")
    T.eq(br:state(), "open", "slow_rate 0.5 reached with min_calls = 4")
    local _, e = r:call(dep.fn)
    T.eq(e.kind, "open")
    T.eq(dep.calls, 4)
    T.ok(m.latency.max >= 0.25 * 0.9, "the slow call's latency is in the histogram")
end)

T.test("faults: deadline + budget + breaker under random faults keep every bound", function()
    local clock = T.clock(1e12)
    local budget = b.budget { ratio = 0.5, min_per_second = 0.01, window = 3600,
                              clock = clock.fn }
    local br = b.breaker { failure_threshold = 6, reset_timeout = 0.5, half_open_calls = 1,
                           slow_call = 0.2, clock = clock.fn }
    local sleeps = {}
    local r
    r = b.retry { attempts = 4, base = 0.05, cap = 0.3, deadline = 0.5, budget = budget,
                  breaker = br, seed = 99, clock = clock.fn, sleep = test_sleep(clock, sleeps) }
    local draw = rng(2024)
    local mix = { "ok", "ok", "ok", "nil_ok", "slow", "slow", "timeout", "timeout", "raise",
                  "raise_table", "raise_nil", "nil_err" }
    local dep = flaky(clock, random_faults(draw, mix),
                      { slow_ns = 0.3 * S, remaining = function() return r:remaining() end })
    local rejected, kinds = 0, {}
    for i = 1, 400 do
        local before, nsleeps = dep.calls, #sleeps
        local t0 = clock.ns
        local limit = t0 + 0.5 * S
        local ok, res, err = pcall(r.call, r, dep.fn)
        T.ok(ok, "r:call raised: " .. tostring(res))
        local n = dep.calls - before
        T.ok(n <= 4, "attempts exceeded")
        for j = before + 1, dep.calls do
            T.ok(dep.starts[j] < limit, "call " .. i .. ": an attempt started past the deadline")
        end
        for j = nsleeps + 1, #sleeps do
            T.ok(sleeps[j].at + sleeps[j].s * S <= limit + 1, "a sleep ran past the deadline")
        end
        if res == nil and type(err) == "table" and err.kind then
            kinds[err.kind] = (kinds[err.kind] or 0) + 1
            if err.kind == "open" then
                rejected = rejected + 1
            end
        end
        local spent = r:metrics().retries
        T.ok(spent <= 0.01 * 3600 + 0.5 * i + 1e-9, "over the budget")
        T.eq(b.remaining(), nil)
        clock.ns = clock.ns + draw(1000) * 1e6     -- idle 1 ms .. 1 s between calls
    end
    T.ok(clock.ns - 1e12 < 3000 * S, "the run must fit one budget window")
    local m = br:metrics()
    T.eq(m.successes + m.failures + m.stale, dep.calls,
         "the breaker saw every call made, and only those")
    T.ok(m.rejected >= rejected and rejected > 0, "the breaker never opened")
    T.ok(m.slow > 0, "no slow call counted")
    T.eq(budget:metrics().withdrawals, r:metrics().retries)
    for _, k in ipairs { "deadline", "budget", "open" } do
        T.ok((kinds[k] or 0) > 0, "no '" .. k .. "' outcome in the mix")
    end
end)

T.test("faults: real clock and short real sleeps respect the deadline", function()
    local r = b.retry { attempts = 20, base = 0.01, multiplier = 1, jitter = "none",
                        deadline = 0.12 }
    local starts = {}
    local t0 = b.now()
    local res, err = r:call(function()
        starts[#starts + 1] = b.now()
        b.sleep(0.015)                              -- a slow, failing dependency
        return nil, "slow failure"
    end)
    local elapsed = b.now() - t0
    T.eq(res, nil)
    T.eq(err.kind, "deadline")
    T.eq(err.attempts, #starts)
    T.ok(#starts >= 2 and #starts <= 6, #starts .. " attempts in 0.12 s of 25 ms rounds")
    -- the core decided each retry to start before the deadline; the real
    -- sleep may overshoot by scheduling noise only (generous on a busy CI)
    for i, s in ipairs(starts) do
        T.ok(s - t0 < 0.12 + 0.05, ("attempt %d started %.4f s in"):format(i, s - t0))
    end
    T.ok(elapsed < 0.12 + 0.015 + 0.2, ("took %.3f s"):format(elapsed))
end)

T.test("faults: real slow calls are counted by a breaker on the real clock", function()
    local br = b.breaker { failure_threshold = 0, slow_call = 0.03 }
    br:call(function() b.sleep(0.04) end)
    br:call(function() return 1 end)
    local m = br:metrics()
    T.eq(m.slow, 1)
    T.eq(m.successes, 2)
    T.ok(m.latency.max >= 0.04 * 0.9)
end)
