-- Observability in Lua (issue 5): br:metrics() and r:metrics() with the
-- fields of Python's, calls per second and latency from the core, latency
-- sampling, buttress.metrics.prometheus() checked by a strict parser of the
-- text exposition format, and the log lines of state changes and give-ups.

local T = ...
local b = T.buttress

local S = 1e9
local MS = 1e6

local function failing()
    return nil, "secret-token-123" -- an error message: never logged
end

local function ok_fn(...)
    return ...
end

local uniq = 0
local function name(prefix)
    uniq = uniq + 1
    return "metrics-" .. prefix .. "-" .. uniq
end

-- Run fn with a logger that keeps every line; the runner's logger after.
local function logged(fn)
    local lines = {}
    local prev = b.set_logger(function(level, msg, fields)
        lines[#lines + 1] = { level = level, msg = msg, fields = fields }
    end)
    local ok, err = pcall(fn, lines)
    b.set_logger(prev)
    assert(ok, err)
    return lines
end

local function of_event(lines, event)
    local out = {}
    for _, l in ipairs(lines) do
        if l.fields and l.fields.event == event then
            out[#out + 1] = l
        end
    end
    return out
end

------------------------------------------------------ a strict parser

-- The Prometheus text exposition format (0.0.4), strictly: every line is a
-- HELP, a TYPE or a sample; each family has one HELP and one TYPE before its
-- samples, which follow contiguously; sample names belong to the family
-- (summaries: name, name_sum, name_count; quantile label on name); label
-- names and values well formed, values escaped with \\ \" \n only; values
-- are floats, NaN or +-Inf; no series twice; the text ends with a newline.
local function parse_labels(s, pos, where)
    local labels, keys = {}, {}
    assert(s:sub(pos, pos) == "{", where)
    pos = pos + 1
    if s:sub(pos, pos) == "}" then
        return labels, keys, pos + 1
    end
    while true do
        local k = s:match("^[%a_][%w_]*", pos)
        assert(k, where .. ": label name expected at " .. pos)
        assert(labels[k] == nil, where .. ": label " .. k .. " twice")
        pos = pos + #k
        assert(s:sub(pos, pos + 1) == '="', where .. ": =\" expected after " .. k)
        pos = pos + 2
        local buf = {}
        while true do
            local c = s:sub(pos, pos)
            assert(c ~= "", where .. ": unterminated label value")
            if c == '"' then
                pos = pos + 1
                break
            elseif c == "\\" then
                local e = s:sub(pos + 1, pos + 1)
                if e == "\\" then
                    buf[#buf + 1] = "\\"
                elseif e == '"' then
                    buf[#buf + 1] = '"'
                elseif e == "n" then
                    buf[#buf + 1] = "\n"
                else
                    error(where .. ": bad escape \\" .. e)
                end
                pos = pos + 2
            else
                buf[#buf + 1] = c
                pos = pos + 1
            end
        end
        labels[k] = table.concat(buf)
        keys[#keys + 1] = k
        local c = s:sub(pos, pos)
        if c == "}" then
            return labels, keys, pos + 1
        end
        assert(c == ",", where .. ": , or } expected after a label")
        pos = pos + 1
    end
end

local function parse_value(v, where)
    if v == "NaN" then
        return 0 / 0
    elseif v == "+Inf" then
        return math.huge
    elseif v == "-Inf" then
        return -math.huge
    end
    assert(v:match("^[-+]?[%d.]+[eE]?[-+]?%d*$"), where .. ": bad value " .. v)
    return assert(tonumber(v), where .. ": bad value " .. v)
end

local TYPES = { counter = true, gauge = true, summary = true, histogram = true,
                untyped = true }

local function parse_prometheus(text)
    local fams, order, series = {}, {}, {}
    local cur
    if text == "" then
        return fams, order
    end
    assert(text:sub(-1) == "\n", "the text must end with a newline")
    local n = 0
    for line in text:gmatch("([^\n]*)\n") do
        n = n + 1
        local where = "line " .. n .. " (" .. line .. ")"
        assert(line ~= "", where .. ": empty line")
        if line:sub(1, 1) == "#" then
            local what, fname, rest = line:match("^# (%u+) ([%a_:][%w_:]*) (.*)$")
            assert(what == "HELP" or what == "TYPE", where .. ": bad comment")
            local f = fams[fname]
            if not f then
                f = { name = fname, samples = {} }
                fams[fname] = f
                order[#order + 1] = fname
            else
                assert(f == cur and #f.samples == 0, where .. ": family " .. fname
                       .. " is not contiguous")
            end
            cur = f
            if what == "HELP" then
                assert(f.help == nil, where .. ": second HELP")
                assert(not rest:find("\\[^\\n]"), where .. ": bad escape in HELP")
                f.help = rest
            else
                assert(f.type == nil, where .. ": second TYPE")
                assert(TYPES[rest], where .. ": unknown type " .. rest)
                f.type = rest
            end
        else
            local sname = line:match("^[%a_:][%w_:]*")
            assert(sname, where .. ": metric name expected")
            local labels, keys, pos = {}, {}, #sname + 1
            if line:sub(pos, pos) == "{" then
                labels, keys, pos = parse_labels(line, pos, where)
            end
            local v = line:sub(pos):match("^ (%S+)$")
            assert(v, where .. ": ' value' expected")
            local value = parse_value(v, where)
            assert(cur and cur.type and cur.help, where .. ": sample before HELP and TYPE")
            local f = cur
            local ok = sname == f.name
            if f.type == "summary" then
                if sname == f.name then
                    assert(labels.quantile and tonumber(labels.quantile), where
                           .. ": summary sample without a quantile")
                else
                    ok = sname == f.name .. "_sum" or sname == f.name .. "_count"
                    assert(labels.quantile == nil, where .. ": quantile on _sum/_count")
                end
            end
            assert(ok, where .. ": sample " .. sname .. " outside family " .. f.name)
            table.sort(keys)
            local id = { sname }
            for _, k in ipairs(keys) do
                id[#id + 1] = k .. "=" .. labels[k]
            end
            id = table.concat(id, "\0")
            assert(not series[id], where .. ": series twice")
            series[id] = true
            f.samples[#f.samples + 1] = { name = sname, labels = labels, value = value }
        end
    end
    for _, fname in ipairs(order) do
        local f = fams[fname]
        assert(f.type and f.help, fname .. ": HELP and TYPE expected")
        assert(#f.samples > 0, fname .. ": a family without samples")
    end
    return fams, order
end

-- The value of the one sample of family `fam` named `sname` whose labels
-- include `want`.
local function value(fams, fam, want, sname)
    local f = assert(fams[fam], "no family " .. fam)
    local found
    for _, s in ipairs(f.samples) do
        local match = s.name == (sname or fam)
        for k, v in pairs(want) do
            match = match and s.labels[k] == v
        end
        if match then
            assert(found == nil, fam .. ": more than one sample matches")
            found = s.value
        end
    end
    return found
end

T.test("parser: rejects malformed exposition text", function()
    local good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v"} 1\n'
    T.ok(parse_prometheus(good).a_total)
    for _, bad in ipairs {
        'a_total 1\n',                                                  -- no HELP/TYPE
        '# HELP a x\n# TYPE a gauge\na{k="v} 1\n',                       -- unterminated
        '# HELP a x\n# TYPE a gauge\na{k="\\t"} 1\n',                    -- bad escape
        '# HELP a x\n# TYPE a gauge\na{k="v"} one\n',                    -- bad value
        '# HELP a x\n# TYPE a gauge\na{k="v"} 1\na{k="v"} 2\n',          -- twice
        '# HELP a x\n# TYPE a gauge\nb 1\n',                             -- other family
        '# HELP a x\n# TYPE a gauge\na 1',                               -- no newline
        '# HELP a x\n# TYPE a summary\na 1\n',                           -- no quantile
        '# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na 2\n',
    } do
        T.ok(not pcall(parse_prometheus, bad), "accepted: " .. bad)
    end
end)

---------------------------------------------------- metrics() tables

-- The keys of Python's breaker.metrics() and of a decorated function's
-- .metrics() (retry policy).
local PY_BREAKER = {
    "calls", "calls_per_second", "cancelled", "consecutive_failures", "excluded",
    "failure_rate", "failures", "half_open_successes", "last_transition", "latency",
    "name", "rejected", "slow", "slow_rate", "stale", "state", "successes",
    "transitions", "trips", "window_calls", "window_failures", "window_slow",
}
local PY_RETRY = {
    "attempts", "calls", "calls_per_second", "failures", "giveups_attempts",
    "giveups_budget", "giveups_deadline", "latency", "name", "retries", "successes",
}
local LATENCY = { "count", "p50", "p95", "p99", "max", "mean" }

T.test("metrics: br:metrics() has the fields of Python's breaker.metrics()", function()
    local clock = T.clock(0)
    local br = b.breaker { name = name("fields"), failure_threshold = 1, reset_timeout = 5,
                           clock = clock.fn }
    br:call(ok_fn)
    local m = br:metrics()
    for _, k in ipairs(PY_BREAKER) do
        T.ok(m[k] ~= nil, "missing field " .. k)
    end
    for _, k in ipairs(LATENCY) do
        T.eq(type(m.latency[k]), "number", "latency." .. k)
    end
    T.eq(m.open_until, nil, "open_until: nil unless open (None in Python)")
    T.eq(m.transitions["closed>open"], 0)
    clock.ns = 2 * S
    br:call(failing)
    m = br:metrics()
    T.eq(m.state, "open")
    T.near(m.open_until, 7, 1e-6, "open_until: monotonic seconds")
    T.near(m.retry_after, 5, 1e-6)
    T.eq(m.transitions["closed>open"], 1)
    T.near(m.last_transition["closed>open"], 2, 1e-6)
end)

T.test("metrics: r:metrics() has the fields of Python's retry metrics", function()
    local r = b.retry { name = name("rfields"), attempts = 2, base = 0 }
    r:call(ok_fn)
    local m = r:metrics()
    for _, k in ipairs(PY_RETRY) do
        T.ok(m[k] ~= nil, "missing field " .. k)
    end
    for _, k in ipairs(LATENCY) do
        T.eq(type(m.latency[k]), "number", "latency." .. k)
    end
    T.eq(m.calls, 1)
    T.eq(m.latency.count, 1, "the first call is timed")
end)

T.test("metrics: calls per second come from the core, over the last minute", function()
    local clock = T.clock(0)
    local br = b.breaker { name = name("cps"), clock = clock.fn }
    clock.ns = 100 * S
    T.eq(br:metrics().calls_per_second, 0, "no calls yet")
    for _ = 1, 200 do
        br:call(ok_fn)
    end
    clock.ns = 110 * S
    -- 200 calls in the 10 s since the last stamp (a lifetime average since
    -- creation would say 200 / 110)
    T.near(br:metrics().calls_per_second, 20, 0.5)

    local r = b.retry { name = name("rcps"), clock = clock.fn, attempts = 1 }
    clock.ns = 200 * S
    T.eq(r:metrics().calls_per_second, 0)
    for _ = 1, 50 do
        r:call(ok_fn)
    end
    clock.ns = 205 * S
    T.near(r:metrics().calls_per_second, 10, 0.5)
end)

T.test("metrics: give-ups by reason", function()
    local clock = T.clock(0)
    local function sleep(s)
        clock.ns = clock.ns + s * S
    end
    local r = b.retry { name = name("reasons"), attempts = 2, base = 0, clock = clock.fn,
                        sleep = sleep }
    r:call(failing)
    local rd = b.retry { attempts = 5, base = 2, jitter = "none", deadline = 1,
                         clock = clock.fn, sleep = sleep }
    local _, e = rd:call(failing)
    T.eq(e.kind, "deadline")
    local budget = b.budget { ratio = 0, min_per_second = 0, clock = clock.fn }
    local rb = b.retry { attempts = 5, base = 0, budget = budget, clock = clock.fn,
                         sleep = sleep }
    _, e = rb:call(failing)
    T.eq(e.kind, "budget")
    local m, md, mb = r:metrics(), rd:metrics(), rb:metrics()
    T.eq(m.giveups_attempts, 1)
    T.eq(m.giveups_deadline + m.giveups_budget, 0)
    T.eq(md.giveups_deadline, 1)
    T.eq(mb.giveups_budget, 1)
end)

------------------------------------------------------------ latency

T.test("latency: a breaker timing every call (slow_call) records every call", function()
    local clock = T.clock(0)
    local br = b.breaker { slow_call = 1, clock = clock.fn }
    for i = 1, 100 do
        br:call(function()
            clock.ns = clock.ns + i * MS
        end)
    end
    local l = br:metrics().latency
    T.eq(l.count, 100)
    T.near(l.max, 0.1, 0.002)
    T.near(l.mean, 0.0505, 0.001)
end)

T.test("latency: untimed calls are sampled, about 1 in 16, the first timed", function()
    local clock = T.clock(0)
    local reads = 0
    local br = b.breaker { clock = function() reads = reads + 1; return clock.ns end }
    br:call(ok_fn)
    T.eq(br:metrics().latency.count, 1, "the first call is timed")
    for _ = 1, 3199 do
        br:call(ok_fn)
    end
    local l = br:metrics().latency
    T.ok(l.count >= 140 and l.count <= 270, "sampled " .. l.count .. " of 3200 (200 expected)")
    -- two clock reads per sampled call, none for the others (+ 2 metrics reads)
    T.eq(reads, 2 * l.count + 2)
end)

T.test("latency: the two-step form is not sampled; a duration given always counts",
       function()
    local clock = T.clock(0)
    local reads = 0
    local br = b.breaker { clock = function() reads = reads + 1; return clock.ns end }
    for _ = 1, 1600 do
        br:record(br:allow(), true)
    end
    T.eq(reads, 0, "allow + record read no clock")
    T.eq(br:metrics().latency.count, 0)
    for _ = 1, 100 do
        br:record(br:allow(), true, 0.25)
    end
    local l = br:metrics().latency
    T.eq(l.count, 100)
    T.near(l.p99, 0.25, 0.25 * 0.02)
    -- a breaker that needs durations times allow -> record itself
    local timed = b.breaker { slow_call = 1, clock = clock.fn }
    for _ = 1, 10 do
        local t = timed:allow()
        clock.ns = clock.ns + 3 * MS
        timed:record(t, true)
    end
    l = timed:metrics().latency
    T.eq(l.count, 10)
    T.near(l.p50, 0.003, 0.003 * 0.02)
end)

T.test("latency: samples do not line up with a periodic workload", function()
    -- every 8th call is slow: a fixed 1-in-16 sample would see all slow
    -- calls or none; random gaps see about 12.5 % of them
    local clock = T.clock(0)
    local br = b.breaker { clock = clock.fn }
    for i = 1, 8000 do
        br:call(function()
            clock.ns = clock.ns + (i % 8 == 0 and 100 or 1) * MS
        end)
    end
    local l = br:metrics().latency
    T.near(l.p50, 0.001, 0.001 * 0.02, "p50: a fast call")
    T.near(l.p95, 0.1, 0.1 * 0.02, "p95: a slow call")
    T.ok(l.mean > 0.008 and l.mean < 0.019, "mean " .. l.mean .. " (0.0134 expected)")
end)

T.test("latency: sampled percentiles stay close to the exact ones", function()
    -- durations 1..1000 ms, each once per 1000 calls, shuffled: exact p50,
    -- p95, p99 = 500, 950, 990 ms; about 1000 of the 16000 calls are
    -- sampled (docs/lua.md: the error this gives)
    local clock = T.clock(0)
    local br = b.breaker { clock = clock.fn }
    for i = 1, 16000 do
        local d = (i * 7919) % 1000 + 1
        br:call(function()
            clock.ns = clock.ns + d * MS
        end)
    end
    local l = br:metrics().latency
    T.ok(l.count > 800 and l.count < 1250, "sampled " .. l.count)
    T.near(l.p50, 0.5, 0.065, "p50")
    T.near(l.p95, 0.95, 0.035, "p95")
    T.near(l.p99, 0.99, 0.025, "p99")
end)

T.test("latency: r:call() times whole calls, sleeps included", function()
    local clock = T.clock(0)
    local sleeps = 0
    local r = b.retry { name = name("whole"), attempts = 3, base = 1, jitter = "none",
                        deadline = 100, clock = clock.fn,
                        sleep = function(s) sleeps = sleeps + 1; clock.ns = clock.ns + s * S end }
    local n = 0
    local res = r:call(function()
        n = n + 1
        clock.ns = clock.ns + 10 * MS
        if n < 3 then
            return nil, "again"
        end
        return "ok"
    end)
    T.eq(res, "ok")
    T.eq(sleeps, 2)
    local l = r:metrics().latency
    T.eq(l.count, 1)
    T.near(l.max, 3.03, 3.03 * 0.02, "1 s + 2 s of backoff + 3 x 10 ms")
    -- with a deadline every call is timed (the clock is read anyway)
    for _ = 1, 40 do
        r:call(ok_fn)
    end
    T.eq(r:metrics().latency.count, 41)
end)

T.test("latency: r:call() without deadline or budget is sampled", function()
    local clock = T.clock(0)
    local reads = 0
    local r = b.retry { attempts = 2, clock = function() reads = reads + 1; return clock.ns end }
    for _ = 1, 3200 do
        r:call(ok_fn)
    end
    local l = r:metrics().latency
    T.ok(l.count >= 140 and l.count <= 270, "sampled " .. l.count .. " of 3200")
    T.eq(reads, 2 * l.count + 1, "no clock read for the calls not sampled")
end)

--------------------------------------------------------- prometheus

T.test("prometheus: strict parse, Python's names, values of known sequences", function()
    local clock = T.clock(0)
    local bname = name('prom "q"\\x\nnl')
    local br = b.breaker { name = bname, failure_threshold = 2, reset_timeout = 10,
                           clock = clock.fn }
    br:call(ok_fn)
    br:call(failing)
    br:call(failing)                  -- opens
    br:call(ok_fn)                    -- rejected
    local rname = name("prom-retry")
    local r = b.retry { name = rname, attempts = 3, base = 0, clock = clock.fn }
    r:call(failing)                   -- 3 attempts, give-up (attempts)
    r:call(ok_fn)
    local gname = name("prom-budget")
    local g = b.budget { name = gname, clock = clock.fn }
    T.ok(g)
    local text = b.metrics.prometheus()
    local fams = parse_prometheus(text)
    local lb = { breaker = bname }
    T.eq(value(fams, "buttress_breaker_calls_total", lb), 3)
    T.eq(value(fams, "buttress_breaker_successes_total", lb), 1)
    T.eq(value(fams, "buttress_breaker_failures_total", lb), 2)
    T.eq(value(fams, "buttress_breaker_rejected_total", lb), 1)
    T.eq(value(fams, "buttress_breaker_slow_total", lb), 0)
    T.eq(value(fams, "buttress_breaker_excluded_total", lb), 0)
    T.eq(value(fams, "buttress_breaker_state", { breaker = bname, state = "open" }), 1)
    local hot = 0
    for _, st in ipairs { "closed", "open", "half_open", "forced_open", "disabled" } do
        hot = hot + value(fams, "buttress_breaker_state", { breaker = bname, state = st })
    end
    T.eq(hot, 1, "one-hot state")
    T.eq(value(fams, "buttress_breaker_transitions_total",
               { breaker = bname, from = "closed", to = "open" }), 1)
    T.eq(value(fams, "buttress_breaker_transitions_total",
               { breaker = bname, from = "open", to = "closed" }), nil, "zero edges left out")
    T.near(value(fams, "buttress_breaker_failure_rate", lb), 2 / 3, 1e-9)
    T.eq(value(fams, "buttress_breaker_slow_rate", lb), 0)
    T.eq(value(fams, "buttress_breaker_calls_per_second", lb) >= 0, true)
    T.eq(value(fams, "buttress_breaker_consecutive_failures", lb), 0, "the streak ended")
    T.eq(value(fams, "buttress_breaker_trips", lb), 1)
    local timed = value(fams, "buttress_breaker_latency_seconds", lb,
                        "buttress_breaker_latency_seconds_count")
    T.ok(timed >= 1, "latency count")
    T.ok(value(fams, "buttress_breaker_latency_seconds", { breaker = bname, quantile = "0.99" }))
    T.ok(value(fams, "buttress_breaker_latency_max_seconds", lb))
    T.eq(fams.buttress_breaker_calls_total.type, "counter")
    T.eq(fams.buttress_breaker_state.type, "gauge")
    T.eq(fams.buttress_breaker_latency_seconds.type, "summary")
    T.eq(fams.buttress_breaker_latency_max_seconds.type, "gauge")
    T.eq(fams.buttress_breaker_last_transition_timestamp_seconds, nil,
         "no Unix time given: no timestamps")

    local lr = { retry = rname }
    T.eq(value(fams, "buttress_retry_calls_total", lr), 2)
    T.eq(value(fams, "buttress_retry_attempts_total", lr), 4)
    T.eq(value(fams, "buttress_retry_retries_total", lr), 2)
    T.eq(value(fams, "buttress_retry_successes_total", lr), 1)
    T.eq(value(fams, "buttress_retry_giveups_total", { retry = rname, reason = "attempts" }), 1)
    T.eq(value(fams, "buttress_retry_giveups_total", { retry = rname, reason = "deadline" }), 0)
    T.eq(value(fams, "buttress_retry_giveups_total", { retry = rname, reason = "budget" }), 0)
    T.ok(value(fams, "buttress_retry_calls_per_second", lr))
    T.eq(value(fams, "buttress_retry_latency_seconds", lr,
               "buttress_retry_latency_seconds_count"), 1, "the first call is timed")
    T.eq(fams.buttress_retry_giveups_total.type, "counter")

    local lg = { budget = gname }
    T.eq(value(fams, "buttress_budget_deposits_total", lg), 0)
    T.ok(value(fams, "buttress_budget_available", lg))
end)

T.test("prometheus: empty latency is NaN; Unix timestamps when the time is given", function()
    local clock = T.clock(5 * S)
    local bname = name("prom-empty")
    local br = b.breaker { name = bname, clock = clock.fn }
    br:force_open() -- a transition, and no call: no latency
    local fams = parse_prometheus(b.metrics.prometheus { unix_time = 1000 })
    local lb = { breaker = bname }
    local q = value(fams, "buttress_breaker_latency_seconds", { breaker = bname, quantile = "0.5" })
    T.ok(q ~= q, "NaN quantile without timed calls")
    T.eq(value(fams, "buttress_breaker_latency_seconds", lb,
               "buttress_breaker_latency_seconds_count"), 0)
    local ts = value(fams, "buttress_breaker_last_transition_timestamp_seconds",
                     { breaker = bname, from = "closed", to = "forced_open" })
    -- opened at monotonic 5 s; the offset is taken against the real clock
    local want = 1000 - (b.now() - 5)
    T.near(ts, want, 0.5)
    T.raises(function() b.metrics.prometheus { unix_time = "now" } end, "unix_time")
end)

T.test("prometheus: the old name, and metrics() still lists breakers", function()
    T.eq(b.prometheus, b.metrics.prometheus)
    local bname = name("old")
    b.breaker { name = bname }
    T.eq(b.metrics()[bname].calls, 0)
    T.eq(b.metrics.snapshot().breakers[bname].state, "closed")
end)

T.test("registry: retries and budgets are held weakly, the newest one reported", function()
    local rname = name("weak")
    local r1 = b.retry { name = rname, attempts = 1 }
    r1:call(ok_fn)
    local r2 = b.retry { name = rname, attempts = 1 }
    T.eq(b.metrics.snapshot().retries[rname].calls, 0, "the newest")
    r2 = nil -- luacheck: ignore
    r1 = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    T.eq(b.metrics.snapshot().retries[rname], nil, "collected, out of the report")
    local g = b.budget { }
    b.metrics.register(g, name("registered"))
    local found = false
    for _ in pairs(b.metrics.snapshot().budgets) do
        found = true
    end
    T.ok(found)
    T.raises(function() b.metrics.register({}, "x") end, "register")
    T.raises(function() b.metrics.register(b.budget {}) end, "name")
end)

------------------------------------------------------------------ logs

T.test("logs: one line per state change: breaker, old, new; no error text", function()
    local clock = T.clock(0)
    local bname = name("log")
    local lines = logged(function()
        local br = b.breaker { name = bname, failure_threshold = 2, reset_timeout = 1,
                               clock = clock.fn }
        br:call(failing)
        br:call(failing, "card-4111") -- opens
        br:call(ok_fn)                -- rejected: no line
        clock.ns = 2 * S
        br:call(ok_fn)                -- half-open, then closed
        br:force_open()
        br:reset()
    end)
    local ch = of_event(lines, "state_change")
    local want = { { "closed", "open" }, { "open", "half_open" }, { "half_open", "closed" },
                   { "closed", "forced_open" }, { "forced_open", "closed" } }
    T.eq(#ch, #want)
    for i, w in ipairs(want) do
        local l = ch[i]
        T.eq(l.level, "warn")
        T.eq(l.fields.breaker, bname)
        T.eq(l.fields.old, w[1])
        T.eq(l.fields.new, w[2])
        T.eq(l.msg, 'buttress: event=state_change breaker="' .. bname .. '" old=' .. w[1]
             .. " new=" .. w[2])
    end
    for _, l in ipairs(lines) do
        T.ok(not l.msg:find("secret", 1, true) and not l.msg:find("4111", 1, true),
             "an error message or argument leaked: " .. l.msg)
    end
end)

T.test("logs: correlation ids, per coroutine", function()
    local bname = name("corr")
    local lines = logged(function()
        local br = b.breaker { name = bname, failure_threshold = 1 }
        T.eq(b.correlation_id(), nil)
        local res = b.correlation("req-42", function(x)
            T.eq(b.correlation_id(), "req-42")
            br:call(failing)
            return x
        end, "through")
        T.eq(res, "through")
        T.eq(b.correlation_id(), nil, "restored")
        -- another coroutine does not see it; errors pass through, id restored
        T.raises(function()
            b.correlation("req-43", function()
                local co = coroutine.wrap(function() return b.correlation_id() end)
                T.eq(co(), nil)
                error("boom")
            end)
        end, "boom")
        T.eq(b.correlation_id(), nil)
        br:reset()
    end)
    local ch = of_event(lines, "state_change")
    T.eq(#ch, 2)
    T.eq(ch[1].fields.correlation_id, "req-42")
    T.ok(ch[1].msg:find(' correlation_id="req-42"', 1, true), ch[1].msg)
    T.eq(ch[2].fields.correlation_id, nil)
    T.raises(function() b.correlation(42, ok_fn) end, "id")
    T.raises(function() b.correlation("x") end, "fn")
end)

T.test("logs: give-ups at notice with the reason, retries at debug", function()
    local clock = T.clock(0)
    local rname = name("glog")
    local lines = logged(function()
        local fused = b.breaker { name = name("glog-br"), failure_threshold = 100 }
        local r = b.retry { name = rname, attempts = 3, base = 0.5, jitter = "none",
                            clock = clock.fn, breaker = fused,
                            sleep = function(s) clock.ns = clock.ns + s * S end }
        b.correlation("corr-7", function()
            r:call(failing, "argument-secret")
        end)
    end)
    local g = of_event(lines, "giveup")
    T.eq(#g, 1)
    T.eq(g[1].level, "notice")
    T.eq(g[1].fields.retry, rname)
    T.eq(g[1].fields.reason, "attempts")
    T.eq(g[1].fields.attempts, 3)
    T.eq(g[1].fields.correlation_id, "corr-7")
    T.ok(g[1].fields.breaker, "the fused breaker is named")
    T.ok(g[1].msg:find('retry="' .. rname .. '" reason=attempts attempts=3', 1, true), g[1].msg)
    local rt = of_event(lines, "retry")
    T.eq(#rt, 2)
    T.eq(rt[1].level, "debug")
    T.eq(rt[1].fields.attempt, 1)
    T.near(rt[1].fields.delay, 0.5, 1e-9)
    T.eq(rt[2].fields.attempt, 2)
    for _, l in ipairs(lines) do
        T.ok(not l.msg:find("secret", 1, true), "leaked: " .. l.msg)
    end
end)

T.test("logs: names are quoted, so a name cannot forge a line", function()
    local bname = name('evil"\n[alert] fake')
    local lines = logged(function()
        local br = b.breaker { name = bname, failure_threshold = 1 }
        br:call(failing)
    end)
    local ch = of_event(lines, "state_change")
    T.eq(#ch, 1)
    T.ok(not ch[1].msg:find("\n", 1, true), "one line")
    T.ok(ch[1].msg:find('breaker="metrics-evil\\"\\n[alert] fake', 1, true), ch[1].msg)
    T.eq(ch[1].fields.breaker, bname, "fields carry the name as it is")
end)

T.test("logs: a failing logger breaks nothing; false silences; nil is stderr", function()
    local prev = b.set_logger(function() error("logger bug") end)
    local old_stderr = io.stderr
    local written = {}
    io.stderr = { write = function(_, ...) -- luacheck: ignore
        for _, s in ipairs { ... } do
            written[#written + 1] = s
        end
    end }
    local ok, err = pcall(function()
        local br = b.breaker { failure_threshold = 1 }
        T.eq(select(2, br:call(failing)), "secret-token-123", "fn's results come back")
        T.eq(br:state(), "open")
        T.ok(table.concat(written):find("logger failed", 1, true), "reported on stderr")
        written = {}
        b.set_logger(false)
        br:reset()
        T.eq(#written, 0, "logging off")
        b.set_logger(nil) -- the default: stderr outside nginx, warn and error only
        br:force_open()
        T.ok(table.concat(written):find('event=state_change breaker="breaker" old=closed '
                                        .. 'new=forced_open', 1, true), table.concat(written))
        written = {}
        b.retry { attempts = 1 }:call(failing) -- a give-up: notice, not on stderr
        T.eq(#written, 0, "notice lines stay off stderr by default")
    end)
    io.stderr = old_stderr -- luacheck: ignore
    b.set_logger(prev)
    assert(ok, err)
    T.raises(function() b.set_logger(42) end, "set_logger")
end)

T.test("logs: inside nginx through ngx.log with the request id", function()
    local saved = rawget(_G, "ngx")
    local got = {}
    local has_request = true
    local fake = {
        WARN = 5, NOTICE = 6, ERR = 4, INFO = 7, DEBUG = 8,
        log = function(level, msg) got[#got + 1] = { level = level, msg = msg } end,
        var = setmetatable({}, { __index = function(_, k)
            if not has_request then
                error("API disabled in the current context")
            end
            return k == "request_id" and "9f86d081884c7d65" or nil
        end }),
        sleep = function() end,
    }
    local prev = b.set_logger(nil)
    rawset(_G, "ngx", fake)
    local ok, err = pcall(function()
        local br = b.breaker { failure_threshold = 1 }
        br:call(failing)
        T.eq(#got, 1)
        T.eq(got[1].level, fake.WARN)
        T.ok(got[1].msg:find('old=closed new=open correlation_id="9f86d081884c7d65"', 1, true),
             got[1].msg)
        has_request = false -- a timer or init_worker: ngx.var raises
        br:reset()
        T.eq(#got, 2)
        T.ok(not got[2].msg:find("correlation_id", 1, true), got[2].msg)
        b.retry { attempts = 1 }:call(failing)
        T.eq(#got, 3)
        T.eq(got[3].level, fake.NOTICE, "give-ups at notice")
    end)
    rawset(_G, "ngx", saved)
    b.set_logger(prev)
    assert(ok, err)
end)
