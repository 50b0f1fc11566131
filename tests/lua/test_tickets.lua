-- Tickets: each admitted call gets its own, a ticket records once, and a
-- ticket may wait across "phases" (ngx.ctx) while other calls come and go.
-- On the FFI path tickets are pooled (no allocation per call): these cases
-- check that recycling a ticket never lets a stale one touch another call.

local T = ...
local b = T.buttress

local BIG = { failure_threshold = 60000 }

local function counts(br)
    local m = br:metrics()
    return m.calls, m.successes, m.failures
end

T.test("tickets: a second record raises, even after the ticket's slot is reused", function()
    local br = b.breaker(BIG)
    local t1 = br:allow()
    T.eq(br:record(t1, true), true)
    local t2 = br:allow() -- on the FFI path: the slot t1 used
    T.raises(function() br:record(t1, false) end, "already recorded")
    T.raises(function() br:record(t1, false) end, "'ticket'")
    T.eq(br:record(t2, true), true, "t2 untouched by the stale record")
    T.raises(function() br:record(t2, true) end, "already recorded")
    local calls, ok, bad = counts(br)
    T.eq(calls, 2)
    T.eq(ok, 2)
    T.eq(bad, 0)
end)

T.test("tickets: a ticket recycled by another breaker is still refused", function()
    local br, other = b.breaker(BIG), b.breaker(BIG)
    local t1 = br:allow()
    br:record(t1, true)
    local t2 = other:allow()
    T.raises(function() br:record(t1, true) end, "already recorded")
    T.raises(function() other:record(t1, true) end, "'ticket'")
    T.raises(function() br:record(t2, true) end, "another breaker")
    T.eq(other:record(t2, false), true)
    T.eq(select(3, counts(other)), 1)
    T.eq(select(1, counts(br)), 1)
end)

T.test("tickets: concurrent calls never share a ticket", function()
    local br = b.breaker(BIG)
    local live, seen = {}, {}
    for i = 1, 200 do
        local t = T.ok(br:allow())
        T.ok(not seen[t], "ticket " .. i .. " handed out twice")
        seen[t] = true
        live[i] = t
        if i % 3 == 0 then -- some finish early and free their slot
            br:record(live[i - 1], false)
            live[i - 1] = false
        end
    end
    for i = 200, 1, -1 do -- the rest finish in another order
        if live[i] then
            T.eq(br:record(live[i], true), true)
        end
    end
    local calls, ok, bad = counts(br)
    T.eq(calls, 200)
    T.eq(bad, 66)
    T.eq(ok, 134)
end)

T.test("tickets: kept across phases, interleaved with other requests", function()
    local a, c = b.breaker(BIG), b.breaker(BIG)
    -- "access" phase of 50 requests, each ctx holding its ticket...
    local ctxs = {}
    for i = 1, 50 do
        local br = (i % 2 == 0) and a or c
        ctxs[i] = { br = br, ticket = br:allow(), ok = (i % 5 ~= 0) }
        -- ...while short calls run in between and recycle tickets
        T.eq(a:call(function() return i end), i)
        T.eq(c:call(function() return nil, "down" end), nil)
    end
    -- "log" phase, in reverse
    for i = 50, 1, -1 do
        local ctx = ctxs[i]
        T.eq(ctx.br:record(ctx.ticket, ctx.ok), true, "request " .. i)
    end
    local calls, ok, bad = counts(a)
    T.eq(calls, 75)
    T.eq(ok, 50 + 20)
    T.eq(bad, 5)
    calls, ok, bad = counts(c)
    T.eq(calls, 75)
    T.eq(ok, 20)
    T.eq(bad, 50 + 5)
end)

T.test("tickets: a broken is_failure leaves no ticket behind", function()
    local br = b.breaker { is_failure = function() error("boom") end }
    T.raises(function() br:call(function() return 1 end) end, "boom")
    local t = br:allow()
    T.eq(br:record(t, true), true)
    T.eq(br:metrics().cancelled, 1)
end)

if b.backend ~= "ffi" then
    T.skip("tickets: the pool does not grow in steady state", "FFI path only")
    T.skip("tickets: past the pool's size tickets still work", "FFI path only")
    return
end

local pool = b.core.ticket_pool

T.test("tickets: the pool does not grow in steady state", function()
    local br = b.breaker(BIG)
    for _ = 1, 1000 do
        br:record(br:allow(), true)
        br:call(function() end)
    end
    local _, _, busy0 = pool()
    local n1 = pool()
    for _ = 1, 10000 do
        br:record(br:allow(), true)
        br:call(function() end)
    end
    local n2, _, busy = pool()
    T.eq(n2, n1, "slots allocated")
    T.eq(busy, busy0, "live tickets")
    -- a rejected call gives its slot back
    local open = b.breaker { failure_threshold = 1, reset_timeout = 3600 }
    open:call(function() return nil, "down" end)
    for _ = 1, 100 do
        T.eq(open:allow(), nil)
    end
    T.eq(select(3, pool()), busy0)
end)

T.test("tickets: past the pool's size tickets still work", function()
    local br = b.breaker(BIG)
    local busy0 = select(3, pool()) -- tickets other tests dropped unrecorded
    local live = {}
    local n = 70000 -- more than the pool's 65535 slots
    for i = 1, n do
        live[i] = br:allow()
    end
    T.eq(type(live[n]), "cdata", "overflow tickets are plain cdata")
    for i = n, 1, -1 do
        T.eq(br:record(live[i], true), true)
    end
    T.raises(function() br:record(live[n], true) end, "already recorded")
    T.raises(function() br:record(live[1], true) end, "already recorded")
    T.eq(br:metrics().calls, n)
    T.eq(select(3, pool()), busy0)
end)
