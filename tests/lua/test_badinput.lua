-- Misuse raises an error that names the argument; nothing is half-built.
-- One row per case: what is called, and the text the error must contain.

local T = ...
local b = T.buttress

local br = b.breaker { failure_threshold = 2 }
local other = b.breaker {}
local r = b.retry { attempts = 2, base = 0 }

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
}

for _, c in ipairs(cases) do
    T.test("bad input: " .. c[1], function()
        T.raises(c[2], c[3])
    end)
end

T.test("bad input: at least 30 cases", function()
    T.ok(#cases >= 30, "only " .. #cases .. " cases")
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
