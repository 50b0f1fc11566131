-- A retried HTTP GET over an OpenResty cosocket, bounded by one deadline:
-- every socket operation waits at most the time the retry has left.
--
--   location = /quote {
--       content_by_lua_block {
--           local body, err = require("deadline").get("127.0.0.1", 8081, "/quote")
--           if not body then ngx.status = 504 ngx.say(tostring(err)) return end
--           ngx.print(body)
--       }
--   }
--
-- docs/timeouts.md explains it; tests/nginx/test_remaining.py runs it.

local buttress = require "buttress"

local ngx = ngx
local ceil = math.ceil
local tonumber = tonumber

local _M = {}

-- 4 attempts, 50 ms then 100 ms then 200 ms of backoff (jittered), and
-- never more than 1 s in all, sleeps included.
_M.retry = buttress.retry { name = "quote", attempts = 4, base = 0.05, cap = 0.2, deadline = 1 }

-- Give the socket the time left before its next operation.  settimeout()
-- takes whole milliseconds, and 0 does not mean "now": it means the
-- lua_socket_*_timeout of nginx.conf (60 s by default).  So round up, and
-- when nothing is left, fail instead of waiting.
local function bound(sock, r)
    local left = r:remaining()
    if left == nil then
        sock:settimeout(5000) -- no deadline: a timeout of our own all the same
        return true
    end
    if left <= 0 then
        return false
    end
    sock:settimeout(ceil(left * 1000))
    return true
end

-- One attempt: nil, err on a failure the retry may try again.
local function attempt(r, host, port, path)
    local sock = ngx.socket.tcp()
    if not bound(sock, r) then
        return nil, "deadline reached"
    end
    local ok, err = sock:connect(host, port)
    if not ok then
        return nil, "connect: " .. err
    end
    if not bound(sock, r) then -- connecting took some of the time
        sock:close()
        return nil, "deadline reached"
    end
    ok, err = sock:send("GET " .. path .. " HTTP/1.0\r\nHost: " .. host .. "\r\n\r\n")
    if not ok then
        sock:close()
        return nil, "send: " .. err
    end
    local line
    line, err = sock:receive("*l")
    if not line then
        sock:close()
        return nil, "receive: " .. err -- "receive: timeout" when the time ran out
    end
    local status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
    local body = sock:receive("*a") or ""
    sock:close()
    if not status or status >= 500 then
        return nil, "status " .. tostring(status)
    end
    return body:match("\r\n\r\n(.*)$") or body
end

-- GET http://host:port/path: the body, or nil, err (err.kind "deadline",
-- "exhausted" or "budget"; err.cause the last failure).
function _M.get(host, port, path, r)
    r = r or _M.retry
    return r:call(attempt, r, host, port, path)
end

return _M
