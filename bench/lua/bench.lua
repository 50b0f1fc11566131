-- Micro-benchmarks of the Lua binding: run under lua5.4 (C module) and
-- luajit (FFI).  Numbers, never a test: bench/lua/run.sh prints them.
--
--   lua5.4 bench/lua/bench.lua     luajit bench/lua/bench.lua
-- (LUA_PATH with lua/?.lua and bench/lua/?.lua; see run.sh)

local buttress = require "buttress"
local simple = require "simple_breaker"
buttress.set_logger(false) -- the breakers opened here would log between the rows

local now = buttress.now
local jit = rawget(_G, "jit")
local N = tonumber(os.getenv("BENCH_N")) or (jit and 20000000 or 2000000)

local function fn(x)
    return x
end

-- Best of three runs of f(n): ns per iteration.
local function measure(f)
    f(1000) -- warm up (and let the JIT compile)
    local best = math.huge
    for _ = 1, 3 do
        local t0 = now()
        f(N)
        local dt = now() - t0
        if dt < best then
            best = dt
        end
    end
    return best * 1e9 / N
end

local rows = {}
local function row(name, ns)
    rows[#rows + 1] = { name, ns }
end

row("loop baseline (empty)", measure(function(n)
    for _ = 1, n do end
end))

row("bare pcall(fn, 1)", measure(function(n)
    for i = 1, n do
        pcall(fn, i)
    end
end))

local br = buttress.breaker {}
row("br:call(fn, 1)", measure(function(n)
    for i = 1, n do
        br:call(fn, i)
    end
end))

row("br:allow() + br:record(t, true)", measure(function(n)
    for _ = 1, n do
        local t = br:allow()
        br:record(t, true)
    end
end))

local sb = simple.new(5, 30, now)
row("pure-Lua breaker: sb:call(fn, 1)", measure(function(n)
    for i = 1, n do
        sb:call(fn, i)
    end
end))

row("pure-Lua breaker: allow() + record(true)", measure(function(n)
    for _ = 1, n do
        if sb:allow() then
            sb:record(true)
        end
    end
end))

if buttress.backend == "ffi" then
    -- The floor: the core's own allow + record, called through the FFI with
    -- one preallocated ticket (no binding code at all).
    local ffi = require "ffi"
    local C = buttress.core.C
    local p = buttress.breaker {}._h.p
    local t = ffi.new("buttress_ticket")
    row("core only: C allow + record via FFI", measure(function(n)
        for _ = 1, n do
            C.buttress_breaker_allow(p, -1, t)
            C.buttress_breaker_record(p, t, 0, -1, -1)
        end
    end))
end

local open = buttress.breaker { failure_threshold = 1, reset_timeout = 3600 }
open:call(function() return nil, "down" end)
row("open breaker: rejected br:call", measure(function(n)
    for i = 1, n do
        open:call(fn, i)
    end
end))

local label = (jit and jit.version or _VERSION) .. " (" .. buttress.backend .. ")"
for _, r in ipairs(rows) do
    print(string.format("| %s | %s | %.1f |", r[1], label, r[2]))
end
