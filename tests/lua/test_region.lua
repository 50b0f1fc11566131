-- Regions: breaker and budget state in shared memory.  Across processes
-- this is tested in tests/nginx (two workers); here, two views of one slot
-- in one process, through the public API and the backend.

local T = ...
local b = T.buttress
local core = b.core

local function failing()
    return nil, "down"
end

local uniq = tostring(os.time()) .. tostring(math.random(1e9))

T.test("region: an anonymous region holds a named breaker", function()
    local region = b.region { size = 1048576 }
    local br = b.breaker { name = "region-anon-" .. uniq, shared = region, failure_threshold = 2 }
    T.eq(br:state(), "closed")
    br:call(failing)
    br:call(failing)
    T.eq(br:state(), "open")
    local info = region:info()
    T.ok(info.slots_used >= 1 and info.used > 0 and info.size >= 1048576)
end)

T.test("region: a second view of the same slot sees the same state", function()
    local region = b.region { size = 1048576 }
    local name = "region-view-" .. uniq
    local br = b.breaker { name = name, shared = region, failure_threshold = 3 }
    -- a second handle on the slot, as another worker would get it
    local cfg = core.breaker_defaults()
    cfg.failure_threshold = 3
    local other, created = region._h:breaker(name, cfg)
    T.ok(other, "attached")
    T.eq(created, false, "attaching never re-creates")
    for _ = 1, 3 do
        local _, t = other:allow()
        other:record(t, 1, -1)
    end
    T.eq(br:state(), "open", "failures through the other view opened it")
    -- a different config for the same slot is refused
    cfg.failure_threshold = 4
    local none, rc = region._h:breaker(name, cfg)
    T.eq(none, nil)
    T.eq(rc, -4) -- BUTTRESS_ECONFIG
end)

T.test("region: a named region is found again by name", function()
    local rname = "/buttress-lua-test-" .. uniq
    local r1 = b.region { name = rname, size = 1048576 }
    local br = b.breaker { name = "region-named-" .. uniq, shared = r1, failure_threshold = 1 }
    br:call(failing)
    local r2 = b.region { name = rname, create = false }
    local cfg = core.breaker_defaults()
    cfg.failure_threshold = 1
    local view = r2._h:breaker("region-named-" .. uniq, cfg)
    T.eq(core.state_name(view:state()), "open")
    T.ok(b.unlink_region(rname))
    T.raises(function() b.region { name = rname, create = false } end, "'name'")
end)

T.test("region: a shared budget", function()
    local region = b.region { size = 1048576 }
    local budget = b.budget { name = "region-budget-" .. uniq, shared = region, ratio = 0.5 }
    local r = b.retry { attempts = 2, base = 0, budget = budget }
    r:call(failing)
    T.eq(budget:metrics().deposits, 1)
end)

T.test("region: misuse names the argument", function()
    T.raises(function() b.region {} end, "'size'")
    T.raises(function() b.region { size = 10 } end, "'size'")
    T.raises(function() b.region { name = "no-slash", size = 1048576 } end, "'name'")
    T.raises(function() b.region { size = 1048576, color = 1 } end, "'color'")
    T.raises(function() b.breaker { shared = {} , name = "x" } end, "'shared'")
    local region = b.region { size = 1048576 }
    T.raises(function() b.breaker { shared = region } end, "'name'")
    T.raises(function() b.budget { shared = region } end, "'name'")
end)
