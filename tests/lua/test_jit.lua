-- LuaJIT: the br:allow() / br:record() hot path compiles to a looping
-- trace, and no trace on the way aborts on something NYI (not yet
-- implemented in the JIT, which would leave the path interpreted).  Trace events come from
-- jit.attach, the hook -jv and -jdump are built on.

local T = ...
local b = T.buttress

if not T.jit or b.backend ~= "ffi" then
    T.skip("jit: allow/record compiles", "needs LuaJIT on the FFI path")
    return
end

local jutil = require "jit.util"
local vmdef = require "jit.vmdef"

local function where(func, pc)
    local fi = jutil.funcinfo(func, pc)
    if fi.loc then
        return fi.loc
    end
    return tostring(func)
end

local function errtext(code, info)
    if type(code) ~= "number" then
        return tostring(code)
    end
    if type(info) == "function" then
        info = where(info, 0)
    end
    return string.format(vmdef.traceerr[code] or ("error " .. code), info)
end

-- Run f() with trace events recorded: the traces that compiled (start
-- function, link type) and every abort with its reason.
local function traced(f)
    local stops, aborts = {}, {}
    local function on_trace(what, tr, func, pc, otr, oex)
        if what == "stop" then
            local info = jutil.traceinfo(tr)
            stops[#stops + 1] = { func = func, link = info and info.linktype }
        elseif what == "abort" then
            aborts[#aborts + 1] = errtext(otr, oex) .. " at " .. where(func, pc)
        end
    end
    jit.flush()
    jit.on()
    jit.attach(on_trace, "trace")
    local ok, err = pcall(f)
    jit.attach(on_trace)
    assert(ok, err)
    return stops, aborts
end

local function check(name, hot, br)
    local stops, aborts = traced(function()
        hot(br, 5000)
    end)
    -- NYI means the path cannot compile.  Other aborts are the recorder's
    -- heuristics during warm-up ("leaving loop in root trace", "loop unroll
    -- limit reached" when a function trace meets the caller's loop) and
    -- come and go with hot-counter timing; the loop trace below is what
    -- counts.
    local nyi = {}
    for _, a in ipairs(aborts) do
        if a:find("NYI", 1, true) then
            nyi[#nyi + 1] = a
        end
    end
    T.eq(#nyi, 0, name .. ": NYI aborts: " .. table.concat(nyi, "; "))
    local looped = false
    for _, s in ipairs(stops) do
        if s.func == hot and s.link == "loop" then
            looped = true
        end
    end
    T.ok(looped, name .. ": no looping trace in the hot loop (" .. #stops .. " traces)")
end

-- Kept as plain functions so the trace starts in them.
local function allow_record(br, n)
    for _ = 1, n do
        local t = br:allow()
        br:record(t, true)
    end
end

local function allow_record_failures(br, n)
    for i = 1, n do
        local t = br:allow()
        br:record(t, i % 3 ~= 0)
    end
end

local function allow_record_duration(br, n)
    for _ = 1, n do
        local t = br:allow()
        br:record(t, true, 0.001)
    end
end

T.test("jit: closed success path compiles, no aborts", function()
    check("success", allow_record, b.breaker {})
end)

T.test("jit: failures (clock read on demand) compile, no aborts", function()
    check("failures", allow_record_failures, b.breaker { failure_threshold = 0 })
end)

T.test("jit: timed records (slow-call rule) compile, no aborts", function()
    check("timed", allow_record_duration, b.breaker { slow_call = 1 })
end)

-- br:call: every call compiles, the sampled ones (latency sampling, about
-- one in 16, see docs/lua.md) included.  A sampled call that fell out of
-- the compiled code would leave it through a trace exit each time, so
-- once warm the loop may take hardly any exits (a linked side trace takes
-- none).  The loops differ in how many results fn gives: br:call passes
-- them on with `...`, which the JIT cannot record in a side trace that
-- starts below the vararg frame.
local function fn1(x) return x end
local function fn3(x) return x, 2, 3 end
local function fn0() end

local function call1(br, n)
    for i = 1, n do
        br:call(fn1, i)
    end
end

local function call3(br, n)
    for i = 1, n do
        local _, _, c = br:call(fn3, i)
        if c ~= 3 then error("lost a result") end
    end
end

local function call0(br, n)
    for _ = 1, n do
        br:call(fn0)
    end
end

local wraps = setmetatable({}, { __mode = "k" })
local function wrapped(br, n)
    local w = wraps[br] or br:wrap(fn3) -- one wrapper, as a program keeps it
    wraps[br] = w
    for i = 1, n do
        w(i)
    end
end

-- Trace exits taken while f() runs on warm traces.
local function exits(f)
    local count = 0
    local function on_exit()
        count = count + 1
    end
    jit.attach(on_exit, "texit")
    local ok, err = pcall(f)
    jit.attach(on_exit)
    assert(ok, err)
    return count
end

T.test("jit: br:call compiles, sampled calls included, no aborts", function()
    -- one after the other in one flush, as a program's warm-up would meet
    -- them: the later loops find traces of the earlier ones
    local br = b.breaker {}
    local stops, aborts = traced(function()
        call1(br, 5000)
        call3(br, 5000)
        call0(br, 5000)
        wrapped(br, 5000)
    end)
    -- NYI in buttress's own code (the abort's "at" names where): fn1
    -- alone may abort its own function trace (return to an interpreted
    -- frame), which is the test's code, not the path under test
    local nyi = {}
    for _, a in ipairs(aborts) do
        if a:find("NYI", 1, true) and a:match(" at (.*)$"):find("buttress", 1, true) then
            nyi[#nyi + 1] = a
        end
    end
    T.eq(#nyi, 0, "NYI aborts: " .. table.concat(nyi, "; "))
    for name, hot in pairs { call1 = call1, call3 = call3, call0 = call0, wrapped = wrapped } do
        local looped = false
        for _, s in ipairs(stops) do
            if s.func == hot and s.link == "loop" then
                looped = true
            end
        end
        T.ok(looped, name .. ": no looping trace")
        -- 3200 calls: about 200 sampled
        local n = exits(function() hot(br, 3200) end)
        T.ok(n < 20, name .. ": " .. n .. " trace exits in 3200 warm calls")
    end
    T.ok(br:metrics().latency.count > 0, "calls were sampled")
end)

-- The detector itself: a loop calling something the JIT cannot compile
-- must be reported, or the checks above would prove nothing.
local function not_compilable(_, n)
    local x = 0
    for i = 1, n do
        local f = function() return i end -- FNEW: a closure per iteration is NYI
        x = x + f()
    end
    return x
end

T.test("jit: the detector reports an NYI abort", function()
    local _, aborts = traced(function()
        not_compilable(nil, 5000)
    end)
    local seen = false
    for _, a in ipairs(aborts) do
        if a:find("NYI", 1, true) then
            seen = true
        end
    end
    T.ok(seen, "no NYI abort seen: " .. table.concat(aborts, "; "))
end)
