-- PITFALLS.md items that a Lua binding could reintroduce on its own.

local T = ...
local b = T.buttress

local function failing()
    return nil, "down"
end

local function slurp(path)
    local f = assert(io.open(path))
    local s = f:read("*a")
    f:close()
    return (s:gsub("%-%-[^\n]*", "")) -- code only, not comments
end

T.test("pitfall 13: retries are bounded by default", function()
    local n = 0
    local v, e = b.retry { sleep = function() end }:call(function() n = n + 1; return nil, "x" end)
    T.eq(v, nil)
    T.eq(e.kind, "exhausted")
    T.eq(n, b.defaults().retry.attempts)
end)

T.test("pitfall 15 / 20: no wall clock and no ngx.now in the binding", function()
    for _, f in ipairs { "lua/buttress.lua", "lua/buttress/ffi.lua" } do
        local src = slurp(f)
        T.ok(not src:find("ngx.now", 1, true), f .. " reads ngx.now")
        T.ok(not src:find("os.time", 1, true), f .. " reads os.time")
        T.ok(not src:find("os.clock", 1, true), f .. " reads os.clock")
        T.ok(not src:find("gettimeofday", 1, true), f .. " reads gettimeofday")
    end
    local c = assert(io.open("bindings/lua/lbuttress.c")):read("*a")
    T.ok(not c:find("CLOCK_REALTIME", 1, true) and not c:find("gettimeofday", 1, true))
end)

T.test("pitfall 20: inside nginx the default sleep is ngx.sleep, never a blocking one", function()
    local slept = {}
    local saved = rawget(_G, "ngx")
    rawset(_G, "ngx", { sleep = function(s) slept[#slept + 1] = s end })
    local ok, err = pcall(function()
        b.retry { attempts = 2, base = 0.05, jitter = "none" }:call(failing)
    end)
    rawset(_G, "ngx", saved)
    assert(ok, err)
    T.eq(#slept, 1)
    T.near(slept[1], 0.05, 1e-9)
end)

T.test("pitfall 16: overlapping calls keep their own attempts and deadlines", function()
    local clock = T.clock(0)
    local r = b.retry { attempts = 3, base = 1, jitter = "none", deadline = 10, clock = clock.fn,
                        sleep = function() coroutine.yield("sleep") end }
    local seen = {}
    local function job(name)
        return coroutine.create(function()
            return r:call(function()
                seen[#seen + 1] = name .. ":" .. string.format("%.0f", r:remaining())
                return nil, name
            end)
        end)
    end
    local a, c = job("a"), job("c")
    coroutine.resume(a)                  -- a: attempt 1 at t=0, deadline 10
    clock.ns = 4e9
    coroutine.resume(c)                  -- c: attempt 1 at t=4, deadline 14
    clock.ns = 5e9
    coroutine.resume(a)                  -- a: attempt 2 at t=5
    coroutine.resume(c)                  -- c: attempt 2 at t=5
    T.eq(table.concat(seen, " "), "a:10 c:10 a:5 c:9")
end)

T.test("pitfall 6: the two-step form rejects exactly like br:call", function()
    local br = b.breaker { failure_threshold = 1 }
    br:call(failing)
    local t, e1 = br:allow()
    T.eq(t, nil)
    local _, e2 = br:call(failing)
    T.eq(e1.kind, e2.kind)
    T.eq(br:metrics().rejected, 2)
end)

T.test("pitfall 7: a rejection is a new error object, cheap to make", function()
    local br = b.breaker { failure_threshold = 1 }
    br:call(failing)
    local seen = {}
    for _ = 1, 100 do
        local _, e = br:allow()
        T.ok(not seen[e], "an error object came back twice")
        seen[e] = true
    end
end)
