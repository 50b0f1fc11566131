-- The breakers of examples/lua/openresty/nginx.conf, made once in
-- init_by_lua (before nginx forks its workers).

local buttress = require "buttress"

local ngx = ngx
local ceil = math.ceil

local region = buttress.region { size = 1048576 }

local payments = buttress.breaker {
    name = "payments", shared = region,
    failure_threshold = 5, reset_timeout = 10,
}

local quotes = buttress.breaker { name = "quotes", shared = region, failure_threshold = 3 }
local retry = buttress.retry { attempts = 3, base = 0.05, cap = 0.5, deadline = 2 }

local _M = {}

-- access_by_lua: admit or answer 503 at once.
function _M.access()
    local ticket, err = payments:allow()
    if not ticket then
        ngx.header["Retry-After"] = ceil(err.retry_after or 1)
        return ngx.exit(503)
    end
    ngx.ctx.ticket = ticket
end

-- log_by_lua: runs for every request, aborted ones too.
function _M.log()
    local ticket = ngx.ctx.ticket
    if ticket then
        payments:record(ticket, ngx.status < 500)
    end
end

-- A retried, guarded subrequest; each attempt is told the time left.
function _M.quote()
    local body, err = retry:call(function()
        return quotes:call(function()
            local res = ngx.location.capture("/upstream")
            if res.status >= 500 then
                return nil, "upstream status " .. res.status
            end
            return res.body
        end)
    end)
    if body then
        ngx.print(body)
        return
    end
    ngx.status = 503
    ngx.say(tostring(err))
end

function _M.upstream()
    if ngx.shared.demo:get("fail") then
        ngx.status = 500
        ngx.say("upstream failed")
        return
    end
    ngx.say("upstream ok")
end

return _M
