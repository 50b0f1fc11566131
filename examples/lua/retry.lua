-- Retry with exponential backoff, full jitter and an overall deadline.
--   lua5.4 examples/lua/retry.lua
local buttress = require "buttress"

local r = buttress.retry {
    attempts = 4,
    base = 0.01, cap = 0.05, jitter = "full",
    deadline = 1.0,
    -- a server's Retry-After wins over the backoff delay
    retry_after = function(err)
        return type(err) == "table" and err.retry_after or nil
    end,
    before_sleep = function(st)
        print(("attempt %d failed (%s), sleeping %.3f s"):format(
            st.attempt, tostring(st.error.msg or st.error), st.delay))
    end,
}

local calls = 0
local function flaky(x)
    calls = calls + 1
    -- inside fn: the time left, to pass on as a socket timeout
    local left = r:remaining()
    assert(left and left <= 1.0)
    if calls == 1 then
        return nil, { msg = "503", retry_after = 0.02 }
    elseif calls == 2 then
        error("connection reset")
    end
    return x * 2
end

local v, err = r:call(flaky, 21)
print("result:", v, err)
assert(v == 42)

-- giving up is an outcome, not an error
local v2, err2 = buttress.retry { attempts = 2, base = 0 }:call(function()
    return nil, "still down"
end)
print("gave up:", v2, err2.kind, tostring(err2))
assert(v2 == nil and err2.kind == "exhausted" and err2.cause == "still down")

print(buttress.backoff { base = 0.1, jitter = "none" }:delays(5)[5], "s: fifth delay")
