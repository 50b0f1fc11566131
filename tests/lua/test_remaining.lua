-- r:remaining() / buttress.remaining(): the time left before the innermost
-- deadline, inside fn, for cosocket and HTTP timeouts (issue 6).  The same
-- on the C module (Lua 5.4, or LuaJIT through the compat header) and on the
-- FFI path.  Time comes from a test clock except where the point is the
-- core's own monotonic clock.

local T = ...
local b = T.buttress

local S = 1e9

-- A test clock and a sleep that moves it, recording what was slept.
local function fake()
    local c = T.clock(0)
    c.slept = {}
    c.sleep = function(s)
        c.slept[#c.slept + 1] = s
        c.ns = c.ns + math.floor(s * S + 0.5)
    end
    c.advance = function(s)
        c.ns = c.ns + math.floor(s * S + 0.5)
    end
    return c
end

local function retry(c, opts)
    opts.clock = c.fn
    opts.sleep = opts.sleep or c.sleep
    return b.retry(opts)
end

T.test("remaining: nil outside a call and inside a call without a deadline", function()
    local c = fake()
    local r = retry(c, { attempts = 1 })
    T.eq(r:remaining(), nil)
    T.eq(b.remaining(), nil)
    local seen = "unset"
    r:call(function() seen = r:remaining() end)
    T.eq(seen, nil)
end)

T.test("remaining: counts down inside fn and never goes negative", function()
    local c = fake()
    local r = retry(c, { attempts = 1, deadline = 5 })
    local seen = {}
    local v = r:call(function()
        seen[1] = r:remaining()
        c.advance(1.5)
        seen[2] = r:remaining()
        seen[3] = b.remaining() -- the module function reads the same frame
        c.advance(10)
        seen[4] = r:remaining()
        return "done"
    end)
    T.eq(v, "done")
    T.near(seen[1], 5, 1e-9)
    T.near(seen[2], 3.5, 1e-9)
    T.near(seen[3], 3.5, 1e-9, "buttress.remaining() uses the call's clock")
    T.eq(seen[4], 0, "passed: 0, not negative")
    T.eq(r:remaining(), nil, "popped after the call")
end)

T.test("remaining: each attempt sees what the sleeps left", function()
    local c = fake()
    local r = retry(c, { attempts = 3, deadline = 10, base = 1, jitter = "none" })
    local seen = {}
    r:call(function()
        seen[#seen + 1] = r:remaining()
        return nil, "down"
    end)
    T.eq(#seen, 3)
    T.near(seen[1], 10, 1e-9)
    T.near(seen[2], 9, 1e-9)
    T.near(seen[3], 7, 1e-9)
end)

T.test("remaining: nested calls take the earlier deadline and restore the outer", function()
    local c = fake()
    local outer = retry(c, { attempts = 1, deadline = 10 })
    local short = retry(c, { attempts = 1, deadline = 2 })
    local long = retry(c, { attempts = 1, deadline = 100 })
    local seen = {}
    outer:call(function()
        c.advance(1)
        short:call(function() seen.short = short:remaining() end)
        seen.after_short = outer:remaining()
        long:call(function()
            seen.long = long:remaining()
            seen.long_outer = outer:remaining() -- any retry object: the innermost deadline
        end)
        seen.after_long = outer:remaining()
        return true
    end)
    T.near(seen.short, 2, 1e-9, "inner earlier: its own")
    T.near(seen.after_short, 9, 1e-9)
    T.near(seen.long, 9, 1e-9, "inner later: bounded by the outer")
    T.near(seen.long_outer, 9, 1e-9)
    T.near(seen.after_long, 9, 1e-9)
    T.eq(b.remaining(), nil)
end)

T.test("remaining: inner retries stop at the outer deadline", function()
    local c = fake()
    local outer = retry(c, { attempts = 1, deadline = 3.5 })
    local inner = retry(c, { attempts = 10, base = 1, jitter = "none" })
    local n = 0
    local _, err = outer:call(function()
        return inner:call(function()
            n = n + 1
            return nil, "down " .. n
        end)
    end)
    -- inner: t=0, t=1, t=3; a 4 s sleep would end past 3.5
    T.eq(n, 3)
    T.eq(#c.slept, 2)
    T.near(c.slept[1], 1, 1e-9)
    T.near(c.slept[2], 2, 1e-9)
    T.eq(inner:metrics().giveups_deadline, 1)
    -- the outer call got the inner's give-up as its failure
    T.eq(err.kind, "exhausted")
    T.eq(err.cause.kind, "deadline")
    T.eq(err.cause.cause, "down 3", "the last error")
end)

T.test("remaining: no attempt starts once the outer deadline has passed", function()
    local c = fake()
    local outer = retry(c, { attempts = 1, deadline = 1 })
    local inner = retry(c, { attempts = 3 })
    local called = false
    local v, err
    outer:call(function()
        c.advance(2)
        v, err = inner:call(function() called = true end)
        return true
    end)
    T.eq(called, false)
    T.eq(v, nil)
    T.eq(err.kind, "deadline")
    T.eq(err.attempts, 0)
    T.eq(inner:metrics().giveups_deadline, 1)
end)

T.test("remaining: no time left gives up with the last error, no more attempts", function()
    local c = fake()
    local r = retry(c, { attempts = 5, deadline = 1, base = 0 })
    local n = 0
    local v, err = r:call(function()
        n = n + 1
        c.advance(0.6)
        return nil, "slow failure " .. n
    end)
    T.eq(v, nil)
    T.eq(n, 2)
    T.eq(err.kind, "deadline")
    T.eq(err.cause, "slow failure 2")
    T.eq(#c.slept, 0)
    local m = r:metrics()
    T.eq(m.attempts, 2)
    T.eq(m.giveups_deadline, 1)
end)

T.test("remaining: the last sleep never ends past the deadline", function()
    local c = fake()
    local r = retry(c, { attempts = 10, deadline = 5, base = 0.5, jitter = "none" })
    r:call(function() return nil, "down" end)
    local total = 0
    for _, s in ipairs(c.slept) do total = total + s end
    T.eq(#c.slept, 3, "0.5 + 1 + 2; a 4 s sleep would end at 7.5")
    T.ok(total < 5, "slept " .. total)
    -- a server's Retry-After that ends past the deadline: give up at once
    local c2 = fake()
    local r2 = retry(c2, {
        attempts = 3, deadline = 5, retry_after = function() return 60 end,
    })
    local _, err = r2:call(function() return nil, "busy" end)
    T.eq(#c2.slept, 0)
    T.eq(err.kind, "deadline")
    T.eq(err.cause, "busy")
end)

T.test("remaining: a sleep that overruns the deadline ends the call, no attempt after it", function()
    local c = fake()
    local late = function(s) c.sleep(s); c.advance(2) end -- wakes up 2 s late
    local r = retry(c, { attempts = 5, deadline = 1, base = 0.1, jitter = "none", sleep = late })
    local n = 0
    local v, err = r:call(function()
        n = n + 1
        return nil, "down " .. n
    end)
    T.eq(v, nil)
    T.eq(n, 1)
    T.eq(err.kind, "deadline")
    T.eq(err.cause, "down 1")
    local m = r:metrics()
    T.eq(m.attempts, 1)
    T.eq(m.retries, 1)
    T.eq(m.giveups_deadline, 1)
    T.eq(b.remaining(), nil) -- the frame is gone
    -- on time, the same policy retries until the deadline cuts it
    local r2 = retry(c, { attempts = 5, deadline = 1, base = 0.1, jitter = "none" })
    n = 0
    r2:call(function() n = n + 1; return nil, "down" end)
    T.eq(n, 4, "0.1 + 0.2 + 0.4 s of sleep; 0.8 more would pass 1 s")
end)

T.test("remaining: the frame is popped however the call ends", function()
    local c = fake()
    local outer = retry(c, { attempts = 1, deadline = 10 })
    local inner = retry(c, { attempts = 2, deadline = 2, base = 0,
                             retry_on = function(e) return e ~= "fatal" end })
    outer:call(function()
        -- raised and not retried
        local ok = pcall(inner.call, inner, function() error("fatal", 0) end)
        T.eq(ok, false)
        T.near(b.remaining(), 10, 1e-9, "after a raised error")
        -- given up
        inner:call(function() return nil, "down" end)
        T.near(b.remaining(), 10, 1e-9, "after a give-up")
        -- returned nil, err that retry_on refuses
        inner:call(function() return nil, "fatal" end)
        T.near(b.remaining(), 10, 1e-9, "after a refused failure")
        -- a sleep that raises
        local boom = retry(c, { attempts = 2, deadline = 2, base = 0.1, jitter = "none",
                                sleep = function() error("no sleeping here", 0) end })
        T.eq(pcall(boom.call, boom, function() return nil, "down" end), false)
        T.near(b.remaining(), 10, 1e-9, "after a sleep that raised")
        return true
    end)
    T.eq(b.remaining(), nil)
end)

T.test("remaining: with a fused breaker", function()
    local c = fake()
    local br = b.breaker { failure_threshold = 5, clock = c.fn }
    local r = retry(c, { attempts = 2, deadline = 4, base = 1, jitter = "none", breaker = br })
    local seen = {}
    r:call(function()
        seen[#seen + 1] = r:remaining()
        return nil, "down"
    end)
    T.near(seen[1], 4, 1e-9)
    T.near(seen[2], 3, 1e-9)
    T.eq(br:metrics().failures, 2)
end)

------------------------------------------------------------ coroutines

T.test("remaining: interleaved coroutines each see their own deadline", function()
    local c = fake()
    local seen = {}
    local function worker(name, deadline)
        -- the retry's sleep yields: the two calls interleave
        local r = b.retry { attempts = 3, deadline = deadline, base = 1, jitter = "none",
                            clock = c.fn, sleep = coroutine.yield }
        return coroutine.create(function()
            return r:call(function()
                seen[#seen + 1] = { name, r:remaining() }
                return nil, "down"
            end)
        end)
    end
    local a, z = worker("a", 10), worker("z", 50)
    T.ok(coroutine.resume(a)) -- a: attempt 1, then yields in its sleep
    T.ok(coroutine.resume(z)) -- z: attempt 1
    T.eq(b.remaining(), nil, "the main thread has no deadline")
    c.advance(1)
    T.ok(coroutine.resume(a)) -- a: attempt 2
    T.ok(coroutine.resume(z)) -- z: attempt 2
    c.advance(2)
    local _, _, ea = coroutine.resume(a) -- a: attempt 3, gives up
    local _, _, ez = coroutine.resume(z)
    T.eq(coroutine.status(a), "dead")
    T.eq(coroutine.status(z), "dead")
    T.eq(ea.kind, "exhausted")
    T.eq(ez.kind, "exhausted")
    local want = { { "a", 10 }, { "z", 50 }, { "a", 9 }, { "z", 49 }, { "a", 7 }, { "z", 47 } }
    T.eq(#seen, #want)
    for i, w in ipairs(want) do
        T.eq(seen[i][1], w[1], "order")
        T.near(seen[i][2], w[2], 1e-9, w[1] .. " attempt")
    end
end)

T.test("remaining: a coroutine started inside fn has no deadline of its own", function()
    -- Deadlines are kept per coroutine: work handed to another coroutine
    -- (ngx.thread.spawn, coroutine.wrap) must be given the time left.
    local c = fake()
    local r = retry(c, { attempts = 1, deadline = 5 })
    local inside, handed
    r:call(function()
        inside = coroutine.wrap(function() return b.remaining() end)()
        local left = r:remaining()
        handed = coroutine.wrap(function(t) return t end)(left)
        return true
    end)
    T.eq(inside, nil)
    T.near(handed, 5, 1e-9)
end)

T.test("remaining: a coroutine abandoned mid-call leaves nothing behind", function()
    local c = fake()
    local r = b.retry { attempts = 3, deadline = 5, base = 1, jitter = "none",
                        clock = c.fn, sleep = coroutine.yield }
    local co = coroutine.create(function()
        return r:call(function() return nil, "down" end)
    end)
    T.ok(coroutine.resume(co)) -- suspended in the retry's sleep, never resumed
    T.eq(coroutine.status(co), "suspended")
    T.eq(b.remaining(), nil)
    co = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    T.eq(b.remaining(), nil)
    local seen
    r:call(function() seen = r:remaining() return true end)
    T.near(seen, 5, 1e-9)
end)

---------------------------------------------------- the core's clock

T.test("remaining: real deadlines use the core's monotonic clock", function()
    local r = b.retry { attempts = 1, deadline = 30 }
    local t0 = b.now()
    local first, second, elapsed
    r:call(function()
        first = r:remaining()
        local x = 0
        for i = 1, 1e5 do x = x + i end -- time passes: nanosecond resolution
        second = b.remaining()
        elapsed = b.now() - t0
        return x
    end)
    T.ok(first <= 30 and first > 20, "first " .. tostring(first))
    T.ok(second < first, "strictly decreasing: " .. first .. " then " .. second)
    T.ok(30 - second <= elapsed + 1e-6, "no more time gone than buttress.now() saw")
end)

T.test("remaining: a real deadline bounds a real sleep", function()
    -- plain Lua sleeps in C (nanosleep); 0.05 s of backoff, 0.3 s deadline
    local r = b.retry { attempts = 50, deadline = 0.3, base = 0.05, jitter = "none",
                        multiplier = 1 }
    local t0 = b.now()
    local n = 0
    local _, err = r:call(function()
        n = n + 1
        return nil, "down"
    end)
    local took = b.now() - t0
    T.eq(err.kind, "deadline")
    T.ok(took < 0.3 + 2, "took " .. took) -- generous: a loaded machine, valgrind
    T.ok(n >= 1 and n <= 7, "attempts " .. n) -- at most 1 + 0.3 / 0.05 fit
end)
