-- Loaded by init_by_lua, in the master before it forks: the region (an
-- anonymous shared mapping) and the breaker in it are inherited by every
-- worker, so all workers see one breaker (PITFALLS #10).

local buttress = require "buttress"

local ngx = ngx

local region = buttress.region { size = 1048576 }

local br = buttress.breaker {
    name = "shared-upstream", shared = region,
    failure_threshold = 4, reset_timeout = 1, half_open_calls = 1,
}

local _M = {}

function _M.access()
    local ticket, err = br:allow()
    if not ticket then
        ngx.status = 503
        ngx.say("circuit open")
        return ngx.exit(503)
    end
    ngx.ctx.ticket = ticket
end

function _M.log()
    local ticket = ngx.ctx.ticket
    if ticket then
        br:record(ticket, ngx.status < 500)
    end
end

function _M.stats()
    local m = br:metrics()
    ngx.say(string.format("hits=%d state=%s rejected=%d failures=%d pid=%d",
                          ngx.shared.upstream:get("hits") or 0, m.state, m.rejected,
                          m.failures, ngx.worker.pid()))
end

return _M
