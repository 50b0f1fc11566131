-- Micro-benchmarks of the Lua binding: run under lua5.4 (C module) and
-- luajit (FFI).  Numbers, never a test: bench/lua/run.sh prints them.
--
--   lua5.4 bench/lua/bench.lua     luajit bench/lua/bench.lua
-- (LUA_PATH with lua/?.lua and bench/lua/?.lua; see run.sh)
--
-- Side by side: every case runs once per round, the order rotating from
-- round to round, so that a busy moment of the machine lands on all cases
-- alike; each case reports the median and the best of its rounds.
--   BENCH_N=...       iterations per case and round (20M LuaJIT, 2M Lua 5.4)
--   BENCH_ROUNDS=...  rounds (7)

local buttress = require "buttress"
local simple = require "simple_breaker"
buttress.set_logger(false) -- the breakers opened here would log between the rows

local now = buttress.now
local jit = rawget(_G, "jit")
local N = tonumber(os.getenv("BENCH_N")) or (jit and 20000000 or 2000000)
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 7

local function fn(x)
    return x
end

local cases = {}
local function case(name, f)
    cases[#cases + 1] = { name = name, f = f, ns = {} }
end

case("loop baseline (empty)", function(n)
    for _ = 1, n do end
end)

case("bare pcall(fn, 1)", function(n)
    for i = 1, n do
        pcall(fn, i)
    end
end)

local br = buttress.breaker {}
case("br:call(fn, 1)", function(n)
    for i = 1, n do
        br:call(fn, i)
    end
end)

-- The same without latency sampling (about one call in 16 is timed: two
-- clock reads and a histogram entry), to show what sampling costs.  Pokes
-- the facade's countdown: a benchmark's liberty, not an API.
local unsampled = buttress.breaker {}
case("br:call(fn, 1), latency sampling off", function(n)
    unsampled._countdown = math.huge
    for i = 1, n do
        unsampled:call(fn, i)
    end
end)

local two = buttress.breaker {}
case("br:allow() + br:record(t, true)", function(n)
    for _ = 1, n do
        local t = two:allow()
        two:record(t, true)
    end
end)

-- With another ticket of the same breaker outstanding (a request waiting
-- for its log phase, say): on the FFI path the breaker's own ticket entry
-- is taken, and tickets go through the module's ring of live tickets.
local busy = buttress.breaker {}
local held = busy:allow()
case("br:allow() + br:record(t, true), another ticket outstanding", function(n)
    for _ = 1, n do
        local t = busy:allow()
        busy:record(t, true)
    end
end)

local sb = simple.new(5, 30, now)
case("pure-Lua breaker: sb:call(fn, 1)", function(n)
    for i = 1, n do
        sb:call(fn, i)
    end
end)

case("pure-Lua breaker: allow() + record(true)", function(n)
    for _ = 1, n do
        if sb:allow() then
            sb:record(true)
        end
    end
end)

if buttress.backend == "ffi" then
    -- The floor: the core's own allow + record, called through the FFI with
    -- one preallocated ticket (no binding code at all).
    local ffi = require "ffi"
    local C = buttress.core.C
    local core_br = buttress.breaker {} -- held by the closure: p stays valid
    local t = ffi.new("buttress_ticket")
    case("core only: C allow + record via FFI", function(n)
        local p = core_br._h.p
        for _ = 1, n do
            C.buttress_breaker_allow(p, -1, t)
            C.buttress_breaker_record(p, t, 0, -1, -1)
        end
    end)
end

local open = buttress.breaker { failure_threshold = 1, reset_timeout = 3600 }
open:call(function() return nil, "down" end)
case("open breaker: rejected br:call", function(n)
    for i = 1, n do
        open:call(fn, i)
    end
end)

for _, c in ipairs(cases) do
    c.f(1000) -- warm up (and let the JIT compile)
end
for r = 1, ROUNDS do
    for k = 0, #cases - 1 do
        local c = cases[(k + r) % #cases + 1]
        local t0 = now()
        c.f(N)
        c.ns[#c.ns + 1] = (now() - t0) * 1e9 / N
    end
end
busy:record(held, true)

local label = (jit and jit.version or _VERSION) .. " (" .. buttress.backend .. ")"
for _, c in ipairs(cases) do
    table.sort(c.ns)
    local k = #c.ns
    local median = k % 2 == 1 and c.ns[(k + 1) / 2] or (c.ns[k / 2] + c.ns[k / 2 + 1]) / 2
    print(string.format("| %s | %s | %.1f | %.1f |", c.name, label, median, c.ns[1]))
end
