-- Replays every tests/scenarios/*.txt (format: tests/scenarios/README.md)
-- through the public Lua API: br:allow / br:record for breakers, r:call
-- driven step by step from a coroutine for retries.  Time is explicit: the
-- objects get a `clock` that returns the step's T.

local T = ...
local buttress = T.buttress

local dir = os.getenv("BUTTRESS_SCENARIOS") or "tests/scenarios"
local MS = 1e6

local function ms_to_s(v)
    return v / 1000
end

local function num(s, where)
    local v = tonumber(s)
    if not v then
        error(where .. ": not a number: " .. tostring(s), 0)
    end
    return v
end

local function parse(path)
    local sc = { config = {}, steps = {}, path = path }
    local n = 0
    for line in io.lines(path) do
        n = n + 1
        line = line:gsub("#.*$", "")
        local f = {}
        for w in line:gmatch("%S+") do
            f[#f + 1] = w
        end
        local where = path:match("[^/]*$") .. ":" .. n
        if #f == 0 then
            -- blank
        elseif f[1] == "kind" then
            sc.kind = f[2]
        elseif f[1] == "config" then
            for i = 2, #f do
                local k, v = f[i]:match("^([%w_]+)=(.*)$")
                if not k then
                    error(where .. ": bad config " .. f[i], 0)
                end
                sc.config[k] = v
            end
        else
            if #f ~= 4 then
                error(where .. ": a step has four fields", 0)
            end
            sc.steps[#sc.steps + 1] = {
                t = num(f[1], where), op = f[2], arg = f[3], expect = f[4], where = where,
            }
        end
    end
    return sc
end

local breaker_ms = { reset_timeout = true, trial_timeout = true, slow_call = true }

local function breaker_of(cfg, clock)
    local opts = { clock = clock }
    local rb
    for k, v in pairs(cfg) do
        if k:match("^reset_backoff_") then
            rb = rb or { jitter = "none" }
            local sub = k:sub(#"reset_backoff_" + 1)
            if sub == "jitter" then
                rb.jitter = v
            elseif sub == "multiplier" then
                rb.multiplier = num(v, k)
            else
                rb[sub] = ms_to_s(num(v, k))
            end
        elseif k == "window_type" then
            opts.window_type = v
        elseif breaker_ms[k] then
            opts[k] = ms_to_s(num(v, k))
        else
            opts[k] = num(v, k)
        end
    end
    if opts.window and opts.window_type == "time" then
        opts.window = ms_to_s(opts.window)
    end
    if rb then
        opts.reset_backoff = buttress.backoff(rb)
    end
    return buttress.breaker(opts)
end

local outcome_of = { success = true, failure = false, excluded = "excluded",
                     cancelled = "cancelled" }

local function run_breaker(sc)
    local clock = T.clock(0)
    local br = breaker_of(sc.config, clock.fn)
    local tickets = {}
    for _, s in ipairs(sc.steps) do
        clock.ns = s.t * MS
        local got
        if s.op == "allow" then
            local t, err = br:allow()
            if t then
                tickets[s.arg] = t
                got = "admit"
            else
                T.eq(err.kind, "open", s.where)
                got = "reject"
                if s.expect:match("^reject:") then
                    local ms = err.retry_after and math.floor(err.retry_after * 1000 + 0.5)
                    got = "reject:" .. tostring(ms)
                end
            end
        elseif outcome_of[s.op] ~= nil then
            local name, dur = s.arg:match("^([^/]+)/(%d+)$")
            name = name or s.arg
            local t = tickets[name]
            if not t then
                error(s.where .. ": no admitted ticket named " .. name, 0)
            end
            tickets[name] = nil
            local ok, err = br:record(t, outcome_of[s.op], dur and ms_to_s(tonumber(dur)))
            if ok then
                got = "ok"
            else
                got = err.kind
            end
        elseif s.op == "state" then
            got = br:state()
        elseif s.op == "force_open" or s.op == "disable" or s.op == "reset" then
            got = br[s.op](br) and "ok" or "failed"
        elseif s.op == "metric" then
            local m = br:metrics()
            local v
            if s.arg:find(">", 1, true) then
                v = m.transitions[s.arg]
            else
                v = m[s.arg]
            end
            if v == nil then
                error(s.where .. ": unknown metric " .. s.arg, 0)
            end
            got = string.format("%d", v)
        else
            error(s.where .. ": unknown breaker op " .. s.op, 0)
        end
        T.eq(got, s.expect, s.where .. " " .. s.op .. " " .. s.arg)
    end
end

local giveup_name = { exhausted = "attempts", deadline = "deadline", budget = "budget" }

local function retry_of(cfg, clock, sleep)
    local opts = {
        clock = clock, sleep = sleep, jitter = "none", seed = 1,
        retry_after = function(err)
            return type(err) == "table" and err.retry_after or nil
        end,
    }
    local budget
    for k, v in pairs(cfg) do
        if k == "jitter" then
            opts.jitter = v
        elseif k == "attempts" or k == "multiplier" then
            opts[k] = num(v, k)
        elseif k == "base" or k == "cap" or k == "deadline" then
            opts[k] = ms_to_s(num(v, k))
        elseif k:match("^budget_") then
            budget = budget or {}
            local sub = k:sub(#"budget_" + 1)
            budget[sub] = sub == "window" and ms_to_s(num(v, k)) or num(v, k)
        else
            error("unknown retry config " .. k, 0)
        end
    end
    if budget then
        budget.clock = clock
        opts.budget = buttress.budget(budget)
    end
    return buttress.retry(opts)
end

local function run_retry(sc)
    local clock = T.clock(0)
    local slept -- sleeps (seconds) made since the last step
    local function sleep(s)
        slept[#slept + 1] = s
        coroutine.yield("sleep")
    end
    local r = retry_of(sc.config, clock.fn, sleep)
    local co

    -- Resume the call until it waits in an attempt or returns.
    local function drive(...)
        slept = {}
        local res = { coroutine.resume(co, ...) }
        while true do
            if not res[1] then
                error("retry call raised: " .. tostring(res[2]), 0)
            end
            if coroutine.status(co) == "dead" then
                return "done", res[2], res[3]
            end
            if res[2] == "attempt" then
                return "attempt"
            end
            res = { coroutine.resume(co) } -- after a sleep
        end
    end

    local function fn()
        local cmd, ra = coroutine.yield("attempt")
        if cmd == "success" then
            return true
        end
        return nil, { retry_after = ra }
    end

    for _, s in ipairs(sc.steps) do
        clock.ns = s.t * MS
        local got
        if s.op == "begin" then
            local outer_ms = s.arg:match("^outer_deadline=(%d+)$")
            if outer_ms then
                -- An enclosing call whose deadline is outer_ms: a retry
                -- begun at time 0 with that deadline, that never retries.
                local outer = buttress.retry {
                    attempts = 1, deadline = ms_to_s(tonumber(outer_ms)), clock = clock.fn,
                    is_failure = function() return false end,
                }
                local t = clock.ns
                clock.ns = 0
                co = coroutine.create(function()
                    return outer:call(function()
                        clock.ns = t
                        return r:call(fn)
                    end)
                end)
            elseif s.arg == "-" then
                co = coroutine.create(function()
                    return r:call(fn)
                end)
            else
                error(s.where .. ": bad begin argument " .. s.arg, 0)
            end
            local st, _, err = drive()
            if st == "attempt" then
                got = "ok"
            else
                got = "giveup:" .. (giveup_name[err.kind] or err.kind)
            end
        elseif s.op == "fail" or s.op == "success" then
            if not co or coroutine.status(co) ~= "suspended" then
                error(s.where .. ": no call in progress", 0)
            end
            local ra
            if s.arg ~= "-" then
                local v = s.arg:match("^retry_after=(%d+)$")
                if not v then
                    error(s.where .. ": bad fail argument " .. s.arg, 0)
                end
                ra = ms_to_s(tonumber(v))
            end
            local st, res, err = drive(s.op, ra)
            if s.op == "success" then
                got = (st == "done" and res == true) and "ok" or "not done"
            elseif st == "attempt" then
                local total = 0
                for _, d in ipairs(slept) do
                    if not (d > 0) then
                        error(s.where .. ": slept for a zero delay", 0)
                    end
                    total = total + d
                end
                got = "retry:" .. string.format("%d", math.floor(total * 1000 + 0.5))
            else
                got = "giveup:" .. (giveup_name[err.kind] or tostring(err.kind))
            end
        elseif s.op == "metric" then
            local v = r:metrics()[s.arg]
            if v == nil then
                error(s.where .. ": unknown metric " .. s.arg, 0)
            end
            got = string.format("%d", v)
        else
            error(s.where .. ": unknown retry op " .. s.op, 0)
        end
        T.eq(got, s.expect, s.where .. " " .. s.op .. " " .. s.arg)
    end
end

local files = T.ls(dir, ".txt")
T.test("scenario files present in " .. dir, function()
    -- zero is allowed while the shared scenarios are being written
    T.ok(io.open(dir .. "/README.md") ~= nil, "no scenario directory")
end)

for _, f in ipairs(files) do
    T.test("scenario " .. f, function()
        local sc = parse(dir .. "/" .. f)
        if sc.kind == "breaker" then
            run_breaker(sc)
        elseif sc.kind == "retry" then
            run_retry(sc)
        else
            error(f .. ": unknown kind " .. tostring(sc.kind), 0)
        end
    end)
end

-- The replayer itself, on scripts kept here (the shared ones may change).
T.test("replayer: breaker script", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write([[
kind breaker
config failure_threshold=2 reset_timeout=1000
0 allow a admit
0 failure a ok
1 allow b admit
1 failure b ok
1 state - open
500 allow c reject:501
1001 allow d admit
1001 state - half_open
1001 allow e reject
1002 success d ok
1002 state - closed
1002 metric closed>open 1
1002 metric rejected 2
]])
    fh:close()
    run_breaker(parse(path))
    os.remove(path)
end)

T.test("replayer: retry script", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write([[
kind retry
config attempts=3 base=100 multiplier=2
0 begin - ok
0 fail - retry:100
100 fail retry_after=0 retry:0
100 fail - giveup:attempts
200 begin - ok
200 success - ok
200 metric calls 2
200 metric retries 2
]])
    fh:close()
    run_retry(parse(path))
    os.remove(path)
end)
