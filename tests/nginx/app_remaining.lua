-- The OpenResty side of tests/nginx/test_remaining.py: r:remaining() inside
-- a request, nested deadlines, per-request deadlines, and the cosocket
-- example (examples/lua/openresty/deadline.lua) against a slow upstream in
-- the same server.

local buttress = require "buttress"
local deadline = require "deadline"

local ngx = ngx
local format = string.format
local tonumber = tonumber

local _M = {}

local function arg(name, default)
    return tonumber(ngx.var["arg_" .. name]) or default
end

local function num(v)
    return v == nil and "nil" or format("%.6f", v)
end

-- The upstream: answers after ?ms= milliseconds, or fails with ?fail=1.
function _M.slow()
    local ms = arg("ms", 0)
    if ms > 0 then
        ngx.sleep(ms / 1000)
    end
    if arg("fail", 0) == 1 then
        return ngx.exit(503)
    end
    ngx.say("slow ok")
end

-- remaining() twice inside fn, with work between: the core's monotonic
-- clock (nanoseconds), not ngx.now() (cached: two reads in one handler
-- without a yield would be equal).
function _M.remaining()
    local r = buttress.retry { attempts = 1, deadline = arg("d", 2) }
    local outside = r:remaining()
    local first, second, ngx_first, ngx_second
    r:call(function()
        first = r:remaining()
        ngx_first = ngx.now()
        local x = 0
        for i = 1, 2e5 do x = x + i end
        second = buttress.remaining()
        ngx_second = ngx.now()
        return x
    end)
    ngx.say(format("outside=%s first=%s second=%s after=%s ngx_same=%s backend=%s",
                   num(outside), num(first), num(second), num(r:remaining()),
                   tostring(ngx_first == ngx_second), buttress.backend))
end

-- An outer deadline of 1 s; inner retries with 30 s and 0.25 s.
function _M.nested()
    local outer = buttress.retry { attempts = 1, deadline = 1 }
    local long = buttress.retry { attempts = 1, deadline = 30 }
    local short = buttress.retry { attempts = 1, deadline = 0.25 }
    local stubborn = buttress.retry { attempts = 10, base = 0.05, jitter = "none",
                                      multiplier = 1, deadline = 30 }
    local seen = {}
    outer:call(function()
        long:call(function() seen.long = long:remaining() end)
        short:call(function() seen.short = short:remaining() end)
        seen.after = outer:remaining()
        -- an inner retry that keeps failing stops at the outer deadline
        local t0 = buttress.now()
        local _, err = stubborn:call(function()
            -- ngx.sleep yields: the worker serves others meanwhile; never
            -- past the time left (Lua has no per-attempt timeout of its own)
            ngx.sleep(math.min(0.3, stubborn:remaining()))
            return nil, "down"
        end)
        seen.kind = err and err.kind
        seen.took = buttress.now() - t0
        return true
    end)
    ngx.say(format("long=%s short=%s after=%s kind=%s took=%s",
                   num(seen.long), num(seen.short), num(seen.after), tostring(seen.kind),
                   num(seen.took)))
end

-- Each request has its own deadline (?d=), and ngx.sleep(?s=) inside fn
-- lets the other requests run meanwhile.
function _M.own()
    local r = buttress.retry { attempts = 1, deadline = arg("d", 1) }
    local seen
    r:call(function()
        ngx.sleep(arg("s", 0.2))
        seen = r:remaining()
        return true
    end)
    ngx.say(format("left=%s", num(seen)))
end

-- The cosocket example: GET /slow?ms=... under a deadline of ?d= seconds.
function _M.cosocket()
    local r = buttress.retry {
        attempts = arg("attempts", 3), base = 0.02, cap = 0.05, deadline = arg("d", 0.5),
    }
    local path = "/slow?ms=" .. arg("ms", 0) .. "&fail=" .. arg("fail", 0)
    local t0 = buttress.now()
    local body, err = deadline.get("127.0.0.1", tonumber(ngx.var.server_port), path, r)
    local took = buttress.now() - t0
    local m = r:metrics()
    if body then
        ngx.say(format("ok %s took=%s attempts=%d", body:gsub("%s+$", ""), num(took),
                       m.attempts))
    else
        ngx.say(format("err kind=%s cause=%s took=%s attempts=%d", tostring(err.kind),
                       tostring(err.cause):gsub(" ", "_"), num(took), m.attempts))
    end
end

return _M
