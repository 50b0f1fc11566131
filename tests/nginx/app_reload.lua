-- The OpenResty side of tests/nginx/test_reload.py: what a breaker in a
-- region does when nginx reloads (SIGHUP).  init_by_lua runs init(name) in
-- the master at start and again, in a fresh Lua VM, at every reload; the
-- workers forked afterwards inherit what it made.  name = "": an anonymous
-- region; otherwise a named one.

local buttress = require "buttress"

local ngx = ngx
local format = string.format
local dict = ngx.shared.upstream -- lua_shared_dict zones survive a reload

local _M = {}

local region, br

function _M.init(name)
    dict:incr("inits", 1, 0) -- counts the runs of init_by_lua
    if name ~= "" then
        region = buttress.region { name = name, size = 1048576 }
    else
        region = buttress.region { size = 1048576 }
    end
    br = buttress.breaker {
        name = "reload-upstream", shared = region,
        failure_threshold = 3, reset_timeout = 600,
    }
end

function _M.access()
    local ticket = br:allow()
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
    ngx.say(format("state=%s calls=%d failures=%d rejected=%d inits=%d pid=%d",
                   m.state, m.calls, m.failures, m.rejected, dict:get("inits") or 0,
                   ngx.worker.pid()))
end

return _M
