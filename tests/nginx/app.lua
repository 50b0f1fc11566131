-- The OpenResty side of tests/nginx/test_nginx.py: a breaker guarding an
-- upstream location that fails on command, the same through br:call, and a
-- retry that sleeps with ngx.sleep.  One worker, so the breaker's state is
-- the server's state.

local buttress = require "buttress"

local ngx = ngx
local format = string.format
local ceil = math.ceil
local dict = ngx.shared.upstream

local _M = {}

-- Guards proxy_pass in two steps: allow() in access_by_lua, record() in
-- log_by_lua (no sleeping, no yielding there).
local proxied = buttress.breaker {
    name = "proxied", failure_threshold = 3, reset_timeout = 1, half_open_calls = 2,
}

-- Guards a subrequest with br:call.
local guarded = buttress.breaker { name = "guarded", failure_threshold = 2, reset_timeout = 30 }

-- Sleeps 0.3 s then 0.6 s between three attempts: ngx.sleep by default.
local retry = buttress.retry { attempts = 3, base = 0.3, multiplier = 2, jitter = "none" }

local function reject(err)
    if err.retry_after then
        ngx.header["Retry-After"] = ceil(err.retry_after)
    end
    ngx.status = 503
    ngx.say("circuit open")
    return ngx.exit(503)
end

function _M.upstream()
    dict:incr("hits", 1, 0)
    local mode = dict:get("mode") or "ok"
    if mode == "slow_ok" then
        ngx.sleep(1.0)
    elseif mode == "fail" then
        ngx.status = 500
        ngx.say("upstream failed")
        return
    end
    ngx.say("upstream ok")
end

function _M.access()
    local ticket, err = proxied:allow()
    if not ticket then
        return reject(err)
    end
    ngx.ctx.ticket = ticket
end

function _M.log()
    local ticket = ngx.ctx.ticket
    if ticket then
        proxied:record(ticket, ngx.status < 500)
    end
end

function _M.guarded()
    local body, err = guarded:call(function()
        local res = ngx.location.capture("/upstream")
        if res.status >= 500 then
            return nil, "upstream status " .. res.status
        end
        return res.body
    end)
    if body then
        ngx.print(body)
        return
    end
    if type(err) == "table" and err.kind == "open" then
        return reject(err)
    end
    ngx.status = 502
    ngx.say(tostring(err))
end

function _M.retry()
    local t0 = buttress.now()
    local _, err = retry:call(function()
        return nil, "always fails"
    end)
    ngx.say(format("%s %.3f", err.kind, buttress.now() - t0))
end

function _M.control()
    local args = ngx.req.get_uri_args()
    if args.mode then
        dict:set("mode", args.mode)
    end
    ngx.say("ok")
end

function _M.stats()
    local m = proxied:metrics()
    local g = guarded:metrics()
    ngx.say(format("hits=%d state=%s rejected=%d guarded=%s backend=%s",
                   dict:get("hits") or 0, m.state, m.rejected, g.state, buttress.backend))
end

function _M.ping()
    ngx.say("pong")
end

return _M
