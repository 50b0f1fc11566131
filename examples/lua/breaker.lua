-- A circuit breaker around a flaky dependency.
--   lua5.4 examples/lua/breaker.lua      (or luajit: the same API)
local buttress = require "buttress"

local br = buttress.breaker {
    name = "example-inventory",
    failure_threshold = 3, -- three failures in a row open it
    reset_timeout = 0.2,   -- then 200 ms before a trial call
    on_state_change = function(_, old, new)
        print(("breaker: %s -> %s"):format(old, new))
    end,
}

local healthy = false
local function fetch_stock(item)
    if not healthy then
        return nil, "inventory service unavailable"
    end
    return 42, item
end

for i = 1, 5 do
    local n, err = br:call(fetch_stock, "widget")
    if n then
        print(i, "in stock:", n)
    elseif type(err) == "table" and err.kind == "open" then
        print(i, "rejected fast:", tostring(err))
    else
        print(i, "failed:", err)
    end
end

healthy = true
buttress.sleep(0.25)                     -- past reset_timeout: one trial goes
print("trial:", br:call(fetch_stock, "widget"))
print("state:", br:state())

local m = br:metrics()
print(("calls=%d failures=%d rejected=%d closed>open=%d"):format(
    m.calls, m.failures, m.rejected, m.transitions["closed>open"]))
assert(br:state() == "closed")
