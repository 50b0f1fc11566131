-- Resource checks (issue 9): ten million rejections and a million retries
-- leave memory flat, on whichever path runs this file (Lua 5.4 C module,
-- LuaJIT FFI, LuaJIT C module).
--
-- "Flat": the Lua heap after a full collection (collectgarbage("count"))
-- and the process's resident set (/proc/self/statm) are measured after a
-- warm-up run and again after the full run; the full run may not add more
-- than a small tolerance.  A leak of even one byte per operation would
-- show as 10 MB here.
--
-- BUTTRESS_RESOURCE_SCALE scales the counts (valgrind runs 0.001: ten
-- thousand rejections, a thousand retries).  Each run prints its figures.
-- Under valgrind the resident set is valgrind's (shadow memory, translated
-- code): it is printed but not checked there, memcheck checks leaks itself.

local T = ...
local b = T.buttress

local SCALE = tonumber(os.getenv("BUTTRESS_RESOURCE_SCALE") or "") or 1
local REJECTIONS = math.max(1000, math.floor(1e7 * SCALE))
local RETRIES = math.max(1000, math.floor(1e6 * SCALE))
local HEAP_SLACK_KB = 64
local RSS_SLACK_KB = 4096
local UNDER_VALGRIND = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil

local page_kb
local function rss_kb()
    local f = io.open("/proc/self/statm")
    if not f then
        return nil
    end
    local _, resident = f:read("*a"):match("^(%d+)%s+(%d+)")
    f:close()
    if not page_kb then
        local p = io.popen("getconf PAGESIZE 2>/dev/null")
        page_kb = (p and tonumber(p:read("*a")) or 4096) / 1024
        if p then p:close() end
    end
    return tonumber(resident) * page_kb
end

local function heap_kb()
    collectgarbage("collect")
    collectgarbage("collect")
    return collectgarbage("count")
end

-- Run `step(n)` once as a warm-up (a tenth of n) and once in full; memory
-- after the full run must match memory after the warm-up.
local function flat(what, n, step)
    -- the runner keeps the last 1,000 log lines: a memory of its own, so
    -- give-up lines go nowhere while memory is measured
    local saved = b.set_logger and b.set_logger(false)
    step(math.max(1000, math.floor(n / 10)))
    local h0, r0 = heap_kb(), rss_kb()
    local t0 = b.now()
    step(n)
    local secs = b.now() - t0
    local h1, r1 = heap_kb(), rss_kb()
    print(("  resources: %d %s in %.2f s on %s: heap %+.1f KB, rss %s"):format(
        n, what, secs, b.backend .. (T.jit and "/luajit" or "/" .. _VERSION), h1 - h0,
        r0 and ("%+d KB"):format(math.floor(r1 - r0)) or "n/a"))
    if b.set_logger then b.set_logger(saved) end
    T.ok(h1 - h0 < HEAP_SLACK_KB, ("%s: the Lua heap grew by %.1f KB"):format(what, h1 - h0))
    if r0 and not UNDER_VALGRIND then
        T.ok(r1 - r0 < RSS_SLACK_KB, ("%s: the resident set grew by %d KB"):format(what, r1 - r0))
    end
end

local function never()
    error("a rejected call ran")
end

T.test("resources: ten million rejections leave memory flat", function()
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1e6 }
    br:call(function() return nil, "down" end)
    T.eq(br:state(), "open")
    local done = 0
    flat("rejections (br:call)", REJECTIONS, function(n)
        local call = br.call
        for i = 1, n do
            local res, err = call(br, never)
            if res ~= nil or (i % 4096 == 0 and err.kind ~= "open") then
                error("not rejected")
            end
        end
        done = done + n
    end)
    T.eq(br:metrics().rejected, done)
end)

T.test("resources: two-step rejections (allow) leave memory flat", function()
    local br = b.breaker { failure_threshold = 1, reset_timeout = 1e6 }
    br:call(function() return nil, "down" end)
    local n = math.max(1000, math.floor(REJECTIONS / 10))
    flat("rejections (br:allow)", n, function(k)
        for _ = 1, k do
            local t = br:allow()
            if t ~= nil then
                error("admitted while open")
            end
        end
    end)
end)

T.test("resources: admitted calls and their tickets leave memory flat", function()
    local br = b.breaker { failure_threshold = 5 }
    local ok = function(x) return x end
    local n = RETRIES
    flat("admitted calls (call + allow/record)", n, function(k)
        for i = 1, k do
            if i % 2 == 0 then
                br:call(ok, i)
            else
                br:record(br:allow(), true)
            end
        end
    end)
    T.eq(br:state(), "closed")
end)

T.test("resources: a million retries (no-op sleep) leave memory flat", function()
    local slept = 0
    local noop = function() slept = slept + 1 end
    local failing = function() return nil, "down" end
    local plain = b.retry { attempts = 3, base = 0.001, jitter = "none", sleep = noop }
    -- budget and breaker on the path too; neither refuses anything here
    local budget = b.budget { ratio = 3, min_per_second = 10, window = 10 }
    local br = b.breaker { failure_threshold = 0 }
    local fused = b.retry { attempts = 3, base = 0.001, jitter = "full", sleep = noop,
                            budget = budget, breaker = br, deadline = 3600 }
    local retries = 0
    flat("retries", RETRIES, function(n)
        local calls = math.floor(n / 4) -- two retries per call, two policies
        for _ = 1, calls do
            local res, err = plain:call(failing)
            if res ~= nil or err.kind ~= "exhausted" then
                error("expected a give-up")
            end
            res, err = fused:call(failing)
            if res ~= nil or err.kind ~= "exhausted" then
                error("expected a give-up: " .. tostring(err))
            end
        end
        retries = retries + 4 * calls
    end)
    T.eq(plain:metrics().retries + fused:metrics().retries, retries)
    T.ok(slept <= retries and slept >= plain:metrics().retries,
         "the no-op sleep replaced every non-zero sleep")
    T.eq(br:state(), "closed")
    T.eq(b.remaining(), nil)
end)
