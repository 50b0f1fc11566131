-- nginx side of bench/lua/wrk.py: the same response with and without a
-- breaker in front of it.

local buttress = require "buttress"
local simple = require "simple_breaker"

local ngx = ngx

local br = buttress.breaker { name = "bench" }
local guard = buttress.breaker { name = "bench-proxy" }
local sb = simple.new(5, 30, buttress.now) -- the pure-Lua baseline

local function answer()
    return "ok"
end

local _M = {}

function _M.plain()
    ngx.say(answer())
end

function _M.call()
    ngx.say((br:call(answer)))
end

function _M.call_simple()
    ngx.say((sb:call(answer)))
end

function _M.access()
    local ticket = guard:allow()
    if not ticket then
        return ngx.exit(503)
    end
    ngx.ctx.ticket = ticket
end

function _M.noop()
end

-- The two-step pattern's plumbing without the breaker.
function _M.ctx_access()
    ngx.ctx.ticket = true
end

function _M.ctx_log()
    local ticket = ngx.ctx.ticket
    if ticket then
        return ngx.status < 500
    end
end

function _M.log()
    local ticket = ngx.ctx.ticket
    if ticket then
        guard:record(ticket, ngx.status < 500)
    end
end

return _M
