-- The two-step form: allow() before the call, record() after it, as in
-- OpenResty's access_by_lua / log_by_lua phases where no function wraps
-- the request.
--   lua5.4 examples/lua/two_step.lua
local buttress = require "buttress"

local br = buttress.breaker { name = "example-upstream", failure_threshold = 2,
                              slow_call = 0.5 }

local function handle(status)
    local ticket, err = br:allow()
    if not ticket then
        return 503, err.retry_after
    end
    -- ... the request runs; then its outcome, timed by the core:
    br:record(ticket, status < 500)
    return status
end

print(handle(200), handle(502), handle(502))
local status, retry_after = handle(200)
print("after two 502s:", status, ("retry after %.1f s"):format(retry_after))
assert(status == 503)

-- an operator closes it by hand; a business error (a 404, say) is
-- neither a success nor a failure and leaves the streak alone
br:reset()
br:record(br:allow(), false)
br:record(br:allow(), "excluded")
print("after a failure and an excluded call:", br:state(),
      br:metrics().consecutive_failures)
assert(br:state() == "closed" and br:metrics().consecutive_failures == 1)
