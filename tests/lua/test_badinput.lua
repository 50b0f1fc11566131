-- Misuse raises an error that names the argument; nothing is half-built,
-- and objects made before the misuse keep working (issue 9).
-- One row per case: what is called, and the text the error must contain.
-- Kinds covered: wrong types, NaN, infinities (both signs), negatives, huge
-- values (2^32, 2^63, 1e308), empty names and names with NUL bytes,
-- non-callables, bad verdicts and broken hooks inside a call; re-entrant
-- use (hooks and functions that call back into the same breaker or retry)
-- is legal and has tests of its own below the table.

local T = ...
local b = T.buttress

local NAN = 0 / 0
local INF = math.huge

local br = b.breaker { failure_threshold = 2 }
local other = b.breaker {}
local r = b.retry { attempts = 2, base = 0 }
-- made before every case, checked after every case
local keep_r = b.retry { attempts = 3, base = 0, deadline = 60 }
local region = b.region { size = 65536 }

-- The objects above still work: the breaker admits and counts, the retries
-- retry, and no retry frame (with its deadline) was left behind.
local function still_working(what)
    T.eq(b.remaining(), nil, what .. ": a retry frame was left behind")
    T.eq(br:state(), "closed", what)
    T.eq(br:call(function(x) return x end, 7), 7, what .. ": breaker")
    local n = 0
    local v = r:call(function()
        n = n + 1
        if n == 1 then
            return nil, "again"
        end
        return "ok"
    end)
    T.eq(v, "ok", what .. ": retry")
    T.eq(n, 2, what .. ": retry attempts")
    local left = keep_r:call(function() return keep_r:remaining() end)
    T.ok(left and left > 59 and left <= 60, what .. ": deadline " .. tostring(left))
end

-- A half-open breaker on a test clock whose single trial permit must come
-- back however its trial ends.
local function half_open(opts)
    local clock = T.clock(1e12)
    opts.failure_threshold, opts.reset_timeout, opts.clock = 1, 1, clock.fn
    opts.trial_timeout = opts.trial_timeout or 1000
    local x = b.breaker(opts)
    x:call(function() return nil, "down" end)
    clock.ns = clock.ns + 1e9
    return x, clock
end

local function recorded_ticket()
    local t = br:allow()
    br:record(t, true)
    return t
end

local cases = {
    -- breaker construction
    { "breaker: options not a table", function() b.breaker("x") end, "'options'" },
    { "breaker: unknown option", function() b.breaker { failure_treshold = 3 } end,
      "'failure_treshold'" },
    { "breaker: threshold a string", function() b.breaker { failure_threshold = "5" } end,
      "'failure_threshold'" },
    { "breaker: threshold fractional", function() b.breaker { failure_threshold = 2.5 } end,
      "'failure_threshold'" },
    { "breaker: threshold negative", function() b.breaker { failure_threshold = -1 } end,
      "'failure_threshold'" },
    { "breaker: threshold over the core's limit",
      function() b.breaker { failure_threshold = 70000 } end, "'failure_threshold'" },
    { "breaker: threshold infinite", function() b.breaker { failure_threshold = math.huge } end,
      "'failure_threshold'" },
    { "breaker: reset_timeout zero", function() b.breaker { reset_timeout = 0 } end,
      "'reset_timeout'" },
    { "breaker: reset_timeout negative", function() b.breaker { reset_timeout = -1 } end,
      "'reset_timeout'" },
    { "breaker: reset_timeout NaN", function() b.breaker { reset_timeout = 0 / 0 } end,
      "'reset_timeout'" },
    { "breaker: reset_timeout absurd", function() b.breaker { reset_timeout = 1e300 } end,
      "'reset_timeout'" },
    { "breaker: half_open_calls zero", function() b.breaker { half_open_calls = 0 } end,
      "'half_open_calls'" },
    { "breaker: half_open_calls too many", function() b.breaker { half_open_calls = 5000 } end,
      "'half_open_calls'" },
    { "breaker: success_threshold zero", function() b.breaker { success_threshold = 0 } end,
      "'success_threshold'" },
    { "breaker: failure_rate above 1", function() b.breaker { failure_rate = 1.5 } end,
      "'failure_rate'" },
    { "breaker: failure_rate negative", function() b.breaker { failure_rate = -0.1 } end,
      "'failure_rate'" },
    { "breaker: slow_rate without slow_call", function() b.breaker { slow_rate = 0.5 } end,
      "'slow_rate'" },
    { "breaker: window_type unknown", function() b.breaker { window_type = "sliding" } end,
      "'window_type'" },
    { "breaker: count window zero", function() b.breaker { window = 0 } end, "'window'" },
    { "breaker: min_calls zero", function() b.breaker { min_calls = 0 } end, "'min_calls'" },
    { "breaker: is_failure not callable", function() b.breaker { is_failure = 1 } end,
      "'is_failure'" },
    { "breaker: fallback not callable", function() b.breaker { fallback = "x" } end,
      "'fallback'" },
    { "breaker: on_state_change not callable",
      function() b.breaker { on_state_change = {} } end, "'on_state_change'" },
    { "breaker: name not a string", function() b.breaker { name = 42 } end, "'name'" },
    { "breaker: reset_backoff not a backoff", function() b.breaker { reset_backoff = {} } end,
      "'reset_backoff'" },
    { "breaker: same name, other settings", function()
        b.breaker { name = "badinput-dup", failure_threshold = 3 }
        b.breaker { name = "badinput-dup", failure_threshold = 4 }
    end, "'name'" },

    -- breaker use
    { "call: fn not callable", function() br:call(nil) end, "'fn'" },
    { "call: fn a table", function() br:call({}) end, "'fn'" },
    { "wrap: fn not callable", function() br:wrap(5) end, "'fn'" },
    { "record: ok not a verdict", function() br:record(br:allow(), "yes") end, "'ok'" },
    { "record: ok nil", function() br:record(br:allow(), nil) end, "'ok'" },
    { "record: duration negative", function() br:record(br:allow(), true, -1) end,
      "'duration'" },
    { "record: duration NaN", function() br:record(br:allow(), true, 0 / 0) end,
      "'duration'" },
    { "record: duration a string", function() br:record(br:allow(), true, "1") end,
      "'duration'" },
    { "record: ticket missing", function() br:record(nil, true) end, "'ticket'" },
    { "record: ticket a table", function() br:record({}, true) end, "'ticket'" },
    { "record: ticket twice", function() br:record(recorded_ticket(), true) end,
      "already recorded" },
    { "record: ticket of another breaker", function() other:record(br:allow(), true) end,
      "another breaker" },

    -- retry construction and use
    { "retry: options not a table", function() b.retry(3) end, "'options'" },
    { "retry: attempts zero", function() b.retry { attempts = 0 } end, "'attempts'" },
    { "retry: attempts fractional", function() b.retry { attempts = 1.5 } end, "'attempts'" },
    { "retry: base negative", function() b.retry { base = -0.1 } end, "'base'" },
    { "retry: cap below base", function() b.retry { base = 5, cap = 1 } end, "'cap'" },
    { "retry: multiplier below 1", function() b.retry { multiplier = 0.5 } end,
      "'multiplier'" },
    { "retry: multiplier infinite", function() b.retry { multiplier = math.huge } end,
      "'multiplier'" },
    { "retry: jitter unknown", function() b.retry { jitter = "random" } end, "'jitter'" },
    { "retry: jitter not a string", function() b.retry { jitter = 1 } end, "'jitter'" },
    { "retry: deadline negative", function() b.retry { deadline = -1 } end, "'deadline'" },
    { "retry: sleep not callable", function() b.retry { sleep = true } end, "'sleep'" },
    { "retry: retry_after not callable", function() b.retry { retry_after = 1 } end,
      "'retry_after'" },
    { "retry: budget not a budget", function() b.retry { budget = {} } end, "'budget'" },
    { "retry: breaker not a breaker", function() b.retry { breaker = {} } end, "'breaker'" },
    { "retry: backoff and base", function()
        b.retry { backoff = b.backoff {}, base = 1 }
    end, "'base'" },
    { "retry: unknown option", function() b.retry { attemps = 3 } end, "'attemps'" },
    { "retry call: fn missing", function() r:call() end, "'fn'" },

    -- backoff and budget
    { "backoff: cap below base", function() b.backoff { base = 2, cap = 1 } end, "'cap'" },
    { "backoff: seed fractional", function() b.backoff { seed = 0.5 } end, "'seed'" },
    { "backoff: delays(n) negative", function() b.backoff {}:delays(-1) end, "'n'" },
    { "backoff: delays(n) a string", function() b.backoff {}:delays("3") end, "'n'" },
    { "backoff: delay(retry) past 2^32", function() b.backoff {}:delay(2 ^ 32) end,
      "'retry'" },
    { "backoff: delay(retry, prev) prev negative", function() b.backoff {}:delay(1, -1) end,
      "'prev'" },
    { "budget: ratio negative", function() b.budget { ratio = -1 } end, "'ratio'" },
    { "budget: window zero", function() b.budget { window = 0 } end, "'window'" },
    { "budget: min_per_second NaN", function() b.budget { min_per_second = 0 / 0 } end,
      "'min_per_second'" },

    -- NaN
    { "breaker: failure_threshold NaN", function() b.breaker { failure_threshold = NAN } end,
      "'failure_threshold'" },
    { "breaker: failure_rate NaN", function() b.breaker { failure_rate = NAN } end,
      "'failure_rate'" },
    { "breaker: slow_call NaN", function() b.breaker { slow_call = NAN } end, "'slow_call'" },
    { "breaker: trial_timeout NaN", function() b.breaker { trial_timeout = NAN } end,
      "'trial_timeout'" },
    { "breaker: time window NaN", function() b.breaker { window_type = "time", window = NAN } end,
      "'window'" },
    { "retry: attempts NaN", function() b.retry { attempts = NAN } end, "'attempts'" },
    { "retry: deadline NaN", function() b.retry { deadline = NAN } end, "'deadline'" },
    { "retry: base NaN", function() b.retry { base = NAN } end, "'base'" },
    { "retry: multiplier NaN", function() b.retry { multiplier = NAN } end, "'multiplier'" },
    { "backoff: seed NaN", function() b.backoff { seed = NAN } end, "'seed'" },
    { "backoff: delays(NaN)", function() b.backoff {}:delays(NAN) end, "'n'" },
    { "backoff: delay(NaN)", function() b.backoff {}:delay(NAN) end, "'retry'" },
    { "backoff: delay(1, NaN)", function() b.backoff {}:delay(1, NAN) end, "'prev'" },
    { "budget: ratio NaN", function() b.budget { ratio = NAN } end, "'ratio'" },

    -- infinities, both signs
    { "breaker: failure_threshold -inf", function() b.breaker { failure_threshold = -INF } end,
      "'failure_threshold'" },
    { "breaker: reset_timeout inf", function() b.breaker { reset_timeout = INF } end,
      "'reset_timeout'" },
    { "breaker: reset_timeout -inf", function() b.breaker { reset_timeout = -INF } end,
      "'reset_timeout'" },
    { "breaker: slow_call inf", function() b.breaker { slow_call = INF } end, "'slow_call'" },
    { "breaker: failure_rate inf", function() b.breaker { failure_rate = INF } end,
      "'failure_rate'" },
    { "breaker: slow_rate -inf", function() b.breaker { slow_call = 1, slow_rate = -INF } end,
      "'slow_rate'" },
    { "breaker: half_open_calls inf", function() b.breaker { half_open_calls = INF } end,
      "'half_open_calls'" },
    { "retry: attempts inf", function() b.retry { attempts = INF } end, "'attempts'" },
    { "retry: deadline inf", function() b.retry { deadline = INF } end, "'deadline'" },
    { "retry: cap inf", function() b.retry { cap = INF } end, "'cap'" },
    { "retry: base -inf", function() b.retry { base = -INF } end, "'base'" },
    { "retry: multiplier -inf", function() b.retry { multiplier = -INF } end, "'multiplier'" },
    { "budget: ratio inf", function() b.budget { ratio = INF } end, "'ratio'" },
    { "budget: min_per_second -inf", function() b.budget { min_per_second = -INF } end,
      "'min_per_second'" },
    { "budget: window inf", function() b.budget { window = INF } end, "'window'" },
    { "record: duration inf", function() br:record(br:allow(), true, INF) end, "'duration'" },
    { "record: duration -inf", function() br:record(br:allow(), true, -INF) end, "'duration'" },
    { "backoff: delays(inf)", function() b.backoff {}:delays(INF) end, "'n'" },
    { "backoff: delay(-inf)", function() b.backoff {}:delay(-INF) end, "'retry'" },
    { "backoff: delay(1, inf)", function() b.backoff {}:delay(1, INF) end, "'prev'" },

    -- huge values: past 2^32, 2^63, 1e308
    { "breaker: failure_threshold 2^63", function() b.breaker { failure_threshold = 2 ^ 63 } end,
      "'failure_threshold'" },
    { "breaker: count window 2^63", function() b.breaker { window = 2 ^ 63 } end, "'window'" },
    { "breaker: time window 1e308",
      function() b.breaker { window_type = "time", window = 1e308 } end, "'window'" },
    { "breaker: slow_call 1e308", function() b.breaker { slow_call = 1e308 } end, "'slow_call'" },
    { "breaker: trial_timeout 2^63", function() b.breaker { trial_timeout = 2 ^ 63 } end,
      "'trial_timeout'" },
    { "breaker: min_calls 2^32", function() b.breaker { min_calls = 2 ^ 32 } end, "'min_calls'" },
    { "retry: attempts 2^32", function() b.retry { attempts = 2 ^ 32 } end, "'attempts'" },
    { "retry: attempts 2^63", function() b.retry { attempts = 2 ^ 63 } end, "'attempts'" },
    { "retry: deadline 1e308", function() b.retry { deadline = 1e308 } end, "'deadline'" },
    { "retry: cap 1e308", function() b.retry { cap = 1e308 } end, "'cap'" },
    { "retry: seed 2^63", function() b.retry { seed = 2 ^ 63 } end, "'seed'" },
    { "budget: window 1e308", function() b.budget { window = 1e308 } end, "'window'" },
    { "record: duration 1e308", function() br:record(br:allow(), true, 1e308) end,
      "'duration'" },
    { "record: duration 2^63 s", function() br:record(br:allow(), true, 2 ^ 63) end,
      "'duration'" },
    { "backoff: delays(1e308)", function() b.backoff {}:delays(1e308) end, "'n'" },
    { "backoff: delay(2^63)", function() b.backoff {}:delay(2 ^ 63) end, "'retry'" },
    { "backoff: delay(1, 1e308)", function() b.backoff {}:delay(1, 1e308) end, "'prev'" },
    { "region: size 2^63", function() b.region { size = 2 ^ 63 } end, "'size'" },

    -- negatives
    { "breaker: slow_call negative", function() b.breaker { slow_call = -1 } end, "'slow_call'" },
    { "breaker: trial_timeout negative", function() b.breaker { trial_timeout = -1 } end,
      "'trial_timeout'" },
    { "breaker: min_calls negative", function() b.breaker { min_calls = -1 } end, "'min_calls'" },
    { "breaker: count window negative", function() b.breaker { window = -5 } end, "'window'" },
    { "retry: attempts negative", function() b.retry { attempts = -1 } end, "'attempts'" },
    { "retry: cap negative", function() b.retry { cap = -1 } end, "'cap'" },
    { "budget: min_per_second negative", function() b.budget { min_per_second = -1 } end,
      "'min_per_second'" },
    { "budget: window negative", function() b.budget { window = -1 } end, "'window'" },
    { "backoff: seed negative", function() b.backoff { seed = -1 } end, "'seed'" },
    { "region: size negative", function() b.region { size = -1 } end, "'size'" },

    -- empty names, names C would cut at a NUL, empty strings
    { "region: name empty", function() b.region { name = "", size = 65536 } end, "'name'" },
    { "region: name without the slash", function() b.region { name = "x", size = 65536 } end,
      "'name'" },
    { "region: name with a NUL", function() b.region { name = "/bt\0x", size = 65536 } end,
      "'name'" },
    { "unlink_region: name with a NUL", function() b.unlink_region("/bt\0x") end, "'name'" },
    { "shared breaker: name empty",
      function() b.breaker { name = "", shared = region } end, "'name'" },
    { "shared breaker: name with a NUL",
      function() b.breaker { name = "badinput\0nul", shared = region } end, "'name'" },
    { "shared budget: name empty", function() b.budget { name = "", shared = region } end,
      "'name'" },
    { "shared budget: name too long",
      function() b.budget { name = string.rep("n", 64), shared = region } end, "'name'" },
    { "retry: jitter empty", function() b.retry { jitter = "" } end, "'jitter'" },
    { "breaker: name empty", function() b.breaker { name = "" } end, "'name'" },
    { "retry: name empty", function() b.retry { name = "" } end, "'name'" },
    { "budget: name empty", function() b.budget { name = "" } end, "'name'" },
    { "breaker: window_type empty", function() b.breaker { window_type = "" } end,
      "'window_type'" },

    -- non-callables
    { "retry: is_failure a string", function() b.retry { is_failure = "x" } end, "'is_failure'" },
    { "retry: retry_on a table", function() b.retry { retry_on = {} } end, "'retry_on'" },
    { "retry: before_sleep a number", function() b.retry { before_sleep = 1 } end,
      "'before_sleep'" },
    { "retry: clock a number", function() b.retry { clock = 5 } end, "'clock'" },
    { "breaker: clock a string", function() b.breaker { clock = "x" } end, "'clock'" },
    { "budget: clock a number", function() b.budget { clock = 1 } end, "'clock'" },
    { "call: fn a string", function() br:call("print") end, "'fn'" },
    { "call: __call not a function",
      function() br:call(setmetatable({}, { __call = 1 })) end, "'fn'" },
    { "retry call: fn a table", function() r:call({}) end, "'fn'" },
    { "retry wrap: fn nil", function() r:wrap(nil) end, "'fn'" },

    -- wrong types
    { "breaker: options missing", function() b.breaker() end, "'options'" },
    { "breaker: option names not strings", function() b.breaker { 5 } end, "'options'" },
    { "breaker: half_open_calls a boolean", function() b.breaker { half_open_calls = true } end,
      "'half_open_calls'" },
    { "breaker: shared not a region",
      function() b.breaker { name = "badinput-s", shared = {} } end, "'shared'" },
    { "breaker: shared without a name", function() b.breaker { shared = region } end, "'name'" },
    { "retry: deadline a string", function() b.retry { deadline = "5" } end, "'deadline'" },
    { "retry: name a number", function() b.retry { name = 5 } end, "'name'" },
    { "budget: options a string", function() b.budget("x") end, "'options'" },
    { "budget: shared not a region",
      function() b.budget { name = "badinput-s", shared = "region" } end, "'shared'" },
    { "region: options missing", function() b.region() end, "'options'" },
    { "region: size a string", function() b.region { size = "65536" } end, "'size'" },
    { "region: unknown option", function() b.region { size = 65536, sise = 1 } end, "'sise'" },
    { "unlink_region: name nil", function() b.unlink_region(nil) end, "'name'" },
    { "record: ok a number", function() br:record(br:allow(), 1) end, "'ok'" },
    { "record: ticket a number", function() br:record(12345, true) end, "'ticket'" },
    { "record: the breaker as its own ticket", function() br:record(br, true) end, "'ticket'" },

    -- broken hooks inside a call: the error names the hook, nothing leaks
    { "breaker: is_failure returns a bad verdict", function()
        local x = half_open { is_failure = function() return 42 end }
        local ok, err = pcall(x.call, x, function() return 1 end)
        T.ok(not ok)
        T.eq(x:call(function() return "trial" end), nil, "a rejection: the predicate is bad")
        T.eq(x:metrics().cancelled, 1, "the bad verdict's trial was given back")
        error(err, 0)
    end, "is_failure" },
    { "retry: is_failure returns a bad verdict", function()
        b.retry { deadline = 0.5, is_failure = function() return "maybe" end }
         :call(function() return 1 end)
    end, "is_failure" },
    { "retry: clock raises between attempts", function()
        local n = 0
        b.retry { attempts = 3, base = 0, deadline = 5, clock = function()
            n = n + 1
            if n > 1 then error("clock: broken", 0) end
            return 1e12
        end }:call(function() return nil, "again" end)
    end, "clock: broken" },
    { "retry: sleep raises", function()
        b.retry { attempts = 3, base = 0.01, jitter = "none", deadline = 5,
                  sleep = function() error("sleep: not in this phase", 0) end }
         :call(function() return nil, "again" end)
    end, "sleep: not in this phase" },
    { "retry: is_failure raises", function()
        b.retry { deadline = 5, is_failure = function() error("predicate: broken", 0) end }
         :call(function() return 1 end)
    end, "predicate: broken" },
    { "breaker: is_failure raises in a half-open trial", function()
        local x = half_open { is_failure = function() error("predicate: broken", 0) end }
        local ok, err = pcall(x.call, x, function() return 1 end)
        T.eq(x:metrics().cancelled, 1, "the trial permit came back")
        error(err, 0)
    end, "predicate: broken" },
}

for _, c in ipairs(cases) do
    T.test("bad input: " .. c[1], function()
        T.raises(c[2], c[3])
        still_working(c[1])
    end)
end

T.test("bad input: at least 40 cases", function()
    T.ok(#cases >= 40, "only " .. #cases .. " cases")
end)

T.test("bad input: the broken-hook cases give the trial permit back", function()
    -- the case above leaves its breaker half-open with its permit free:
    -- the next trial is admitted at once (no wait for trial_timeout)
    local x = half_open { is_failure = function(ok, v) if v == "bad" then return {} end end }
    pcall(x.call, x, function() return "bad" end)
    T.eq(x:call(function() return "good" end), "good")
    T.eq(x:state(), "closed")
    still_working("bad verdict, then a good trial")
end)

---------------------------------------------------------------- re-entrant use
-- Nothing is locked while user code runs, so calling back into the same
-- object from inside a call or a hook is legal: it must neither deadlock
-- nor corrupt the outer call.

T.test("re-entrant: is_failure calls back into its own breaker", function()
    local x
    local inner, nested = {}, false
    x = b.breaker { failure_threshold = 3, is_failure = function(ok, v)
        if not nested then -- one level down: the inner call's verdict comes back here
            nested = true
            inner[#inner + 1] = x:call(function() return "inner" end)
            nested = false
        end
        return not ok or v == "bad"
    end }
    T.eq(x:call(function() return "outer" end), "outer")
    local _, err = pcall(x.call, x, function() error("raised", 0) end)
    T.eq(err, "raised")
    x:call(function() return "bad" end)
    T.eq(#inner, 3, "each outer verdict made an inner call")
    T.eq(inner[1], "inner")
    local m = x:metrics()
    T.eq(m.calls, 6)
    T.eq(m.failures, 2)
    T.eq(x:state(), "closed")
    still_working("re-entrant is_failure")
end)

T.test("re-entrant: fn calls its own breaker during the half-open trial", function()
    local x = half_open {}
    local inner_res, inner_err
    local v = x:call(function()
        inner_res, inner_err = x:call(function() return "inner" end)
        return "trial"
    end)
    T.eq(v, "trial")
    T.eq(inner_res, nil, "the only trial permit was taken by the outer call")
    T.eq(inner_err.kind, "open")
    T.eq(x:state(), "closed")
    still_working("re-entrant trial")
end)

T.test("re-entrant: on_state_change calls back into the breaker", function()
    local seen = {}
    local x
    x = b.breaker { failure_threshold = 1, on_state_change = function(self, old, new)
        local res, err = self:call(function() return "from listener" end)
        seen[#seen + 1] = old .. ">" .. new .. ":" .. self:state() .. ":"
                          .. tostring(res or err.kind)
        self:metrics()
    end }
    x:call(function() return nil, "down" end)
    T.eq(seen[1], "closed>open:open:open")
    x:reset()
    T.eq(seen[2], "open>closed:closed:from listener")
    T.eq(x:state(), "closed")
    still_working("re-entrant listener")
end)

T.test("re-entrant: fn calls its own retry, which inherits the deadline", function()
    local clock = T.clock(1e12)
    local rr
    local depth, max_depth = 0, 0
    local function work()
        depth = depth + 1
        max_depth = math.max(max_depth, depth)
        T.near(rr:remaining(), 10 - (clock.ns - 1e12) / 1e9, 1e-9)
        clock.ns = clock.ns + 1e9
        local res, err
        if depth < 4 then
            res, err = rr:call(work)
        else
            res, err = nil, "deep"
        end
        depth = depth - 1
        return res, err
    end
    rr = b.retry { attempts = 2, base = 0, deadline = 10, clock = clock.fn }
    local res, err = rr:call(work)
    T.eq(res, nil)
    T.eq(max_depth, 4)
    T.ok(clock.ns - 1e12 <= 10e9, "ran past the outermost deadline")
    T.ok(err.kind == "deadline" or err.kind == "exhausted", err.kind)
    T.eq(b.remaining(), nil)
    still_working("re-entrant retry")
end)

T.test("re-entrant: retry hooks call back into the same retry", function()
    local rr
    local hooks = 0
    rr = b.retry { attempts = 3, base = 0.001, jitter = "none", sleep = function() end,
                   retry_on = function(e)
                       hooks = hooks + 1
                       if e == "outer" then
                           T.eq(rr:call(function() return "x" end), "x")
                       end
                       return true
                   end,
                   before_sleep = function(st)
                       if st.error == "outer" then
                           rr:call(function() return nil, "inner" end)
                       end
                   end,
                   retry_after = function(e)
                       return e == "outer" and 0.002 or nil
                   end }
    local n = 0
    local res, err = rr:call(function()
        n = n + 1
        return nil, "outer"
    end)
    T.eq(res, nil)
    T.eq(err.kind, "exhausted")
    T.eq(n, 3, "the outer call kept its own attempts")
    T.ok(hooks >= 3)
    T.eq(b.remaining(), nil)
    still_working("re-entrant retry hooks")
end)

T.test("re-entrant: a ticket recorded from inside another call", function()
    local x = b.breaker { failure_threshold = 2 }
    local t = x:allow()
    T.eq(x:call(function() return x:record(t, false) end), true)
    T.eq(x:metrics().failures, 1)
    T.raises(function() x:record(t, true) end, "'ticket'")
    still_working("ticket inside a call")
end)

T.test("re-entrant: a coroutine abandoned inside a call leaves the others working", function()
    local x, clock = half_open { trial_timeout = 2 }
    local rr = b.retry { attempts = 2, base = 0, deadline = 1, clock = clock.fn }
    local co = coroutine.create(function()
        return rr:call(function()
            return x:call(function() coroutine.yield("suspended") end)
        end)
    end)
    T.eq(select(2, coroutine.resume(co)), "suspended")
    co = nil
    collectgarbage()
    collectgarbage()
    -- the main thread has no frame of the abandoned call
    T.eq(b.remaining(), nil)
    -- its trial permit is still out: rejected until trial_timeout
    local _, err = x:call(function() return 1 end)
    T.eq(err.kind, "open")
    clock.ns = clock.ns + 1.5e9
    T.eq(x:call(function() return 1 end), nil, "the permit has not expired yet")
    clock.ns = clock.ns + 0.6e9
    T.eq(x:call(function() return "after" end), "after")
    T.eq(x:state(), "closed")
    T.eq(rr:call(function() return rr:remaining() end), 1)
    still_working("abandoned coroutine")
end)

T.test("bad input: a rejected config builds nothing", function()
    local before = b.breakers["badinput-half"]
    pcall(b.breaker, { name = "badinput-half", failure_threshold = -3 })
    T.eq(b.breakers["badinput-half"], before)
end)

T.test("bad input: outcomes are not errors", function()
    -- an open circuit is an outcome: nil, err, never a raised error
    local x = b.breaker { failure_threshold = 1 }
    x:call(function() return nil, "down" end)
    local res, err = x:call(function() return 1 end)
    T.eq(res, nil)
    T.eq(err.kind, "open")
end)
