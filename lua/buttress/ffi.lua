-- buttress.ffi: the LuaJIT / OpenResty path.  Calls libbuttress.so through
-- the FFI and offers the same primitives as the C module buttress.core
-- (bindings/lua/lbuttress.c), so lua/buttress.lua runs unchanged on both.
--
-- Nothing here sleeps or blocks: inside nginx the facade sleeps with
-- ngx.sleep.  Times are nanoseconds as Lua numbers (doubles stay exact up
-- to 2^53 ns, about 104 days of uptime; past that a few ns of rounding).

local ffi = require "ffi"
local bit = require "bit"

local ffi_cast = ffi.cast
local ffi_string = ffi.string
local ffi_typeof = ffi.typeof
local band = bit.band
local tonumber = tonumber
local setmetatable = setmetatable
local error = error
local type = type
local os_getenv = os.getenv
local ceil = math.ceil

-- The ABI this file was written for (the state layouts of the cdef).
local ABI = 2

-- C declarations live once per LuaJIT VM: a second load of this file (a
-- test clearing package.loaded, say) must not declare them again.
local function declared(ctype)
    return (pcall(ffi_typeof, ctype))
end

if not declared("buttress_ticket") then
    ffi.cdef(require "buttress.cdef")
end

-- Binding-side types: never passed to the core by value.
if not declared("buttress_lua_ticket") then
    ffi.cdef [[
typedef struct buttress_lua_ticket {
  buttress_ticket t;
  const void *owner;
  double start_ns;
  int32_t state;
} buttress_lua_ticket;
]]
end

pcall(ffi.cdef, [[
struct timespec { long tv_sec; long tv_nsec; };
int nanosleep(const struct timespec *req, struct timespec *rem);
]])

local _M = { kind = "ffi" }

-- Where is libbuttress.so?  $BUTTRESS_LIB, then package.cpath templates
-- (so a LuaRocks install or lua_package_cpath finds it), then the system
-- linker path.  buttress.config (below) names it explicitly.
local function find_lib()
    local env = os_getenv("BUTTRESS_LIB")
    if env and env ~= "" then
        return env
    end
    for tpl in package.cpath:gmatch("[^;]+") do
        local path = tpl:gsub("%?", "libbuttress")
        local f = io.open(path, "rb")
        if f then
            f:close()
            return path
        end
    end
    return "buttress"
end

local C

local function load(path)
    if C then
        return C
    end
    local lib = ffi.load(path or find_lib())
    local abi = lib.buttress_abi_version()
    if abi ~= ABI then
        error("buttress.ffi: libbuttress ABI " .. abi .. ", this cdef expects "
              .. ABI .. " (rebuild libbuttress.so or the Lua files)", 2)
    end
    C = lib
    _M.C = lib
    _M.abi = abi
    return lib
end

-- package.loaded["buttress.config"] = { lib = "/path/libbuttress.so" },
-- set before the first require, chooses the library without the env var.
do
    local cfg = package.loaded["buttress.config"]
    load(type(cfg) == "table" and cfg.lib or nil)
end

local NO_CLOCK = -1
local NONE = -1 -- BUTTRESS_STATE_NONE: no transition
local NEED_CLOCK = C.BUTTRESS_NEED_CLOCK
local TIMED = C.BUTTRESS_TICKET_TIMED
local ADMITTED, DONE = 1, 2

-- BUTTRESS_VERSION is a macro, outside the cdef: tests/lua checks this copy.
_M.version = "0.1.0"

local function now()
    return tonumber(C.buttress_monotonic_ns())
end
_M.now = now

local timespec_t = ffi_typeof("struct timespec")

-- Plain LuaJIT only (tests, scripts): blocks the thread.  The facade never
-- calls it inside nginx; it uses ngx.sleep there.
function _M.sleep(s)
    if not (s > 0) then
        return
    end
    local ts = timespec_t()
    ts.tv_sec = s - s % 1
    ts.tv_nsec = (s % 1) * 1e9
    local rem = timespec_t()
    while ffi.C.nanosleep(ts, rem) ~= 0 do
        if ffi.errno() ~= 4 then -- EINTR: sleep the rest
            break
        end
        ts.tv_sec, ts.tv_nsec = rem.tv_sec, rem.tv_nsec
    end
end

function _M.entropy_seed()
    return C.buttress_entropy_seed()
end

function _M.strerror(rc)
    return ffi_string(C.buttress_strerror(rc))
end

function _M.errname(rc)
    return ffi_string(C.buttress_errname(rc))
end

local state_names = {}
for i = -1, C.BUTTRESS_STATE_COUNT - 1 do
    state_names[i] = ffi_string(C.buttress_state_name(i))
end

function _M.state_name(s)
    return state_names[s] or ffi_string(C.buttress_state_name(s))
end

function _M.jitter_parse(name)
    local j = C.buttress_jitter_parse(name)
    if j < 0 then
        return nil
    end
    return j
end

function _M.jitter_name(j)
    return ffi_string(C.buttress_jitter_name(j))
end

-- Lua number to an int64 field, saturating like lbt_toint64 in the C
-- module: a huge value stays invalid instead of wrapping into a valid one.
local function i64(v)
    if v ~= v then
        return -0x7fffffffffffffffLL - 1
    end
    if v >= 9.2233720368547758e18 then
        return 0x7fffffffffffffffLL
    end
    if v <= -9.2233720368547758e18 then
        return -0x7fffffffffffffffLL - 1
    end
    return v
end

local function checknum(v, k)
    if type(v) ~= "number" then
        error("buttress: config field '" .. k .. "' must be a number", 3)
    end
    return v
end

local function u32(v, k)
    checknum(v, k)
    if v < 0 or v > 4294967295 or v ~= v then
        error("buttress: config field '" .. k .. "' out of range", 3)
    end
    return v
end

local function i32(v, k)
    checknum(v, k)
    if v < -2147483648 or v > 2147483647 or v ~= v then
        error("buttress: config field '" .. k .. "' out of range", 3)
    end
    return v
end

local backoff_cfg_t = ffi_typeof("buttress_backoff_config")
local breaker_cfg_t = ffi_typeof("buttress_breaker_config")
local retry_cfg_t = ffi_typeof("buttress_retry_config")
local budget_cfg_t = ffi_typeof("buttress_budget_config")

local function backoff_from(t, c)
    if t.base_ns ~= nil then c.base_ns = i64(checknum(t.base_ns, "base_ns")) end
    if t.cap_ns ~= nil then c.cap_ns = i64(checknum(t.cap_ns, "cap_ns")) end
    if t.multiplier ~= nil then c.multiplier = checknum(t.multiplier, "multiplier") end
    if t.jitter ~= nil then c.jitter = i32(t.jitter, "jitter") end
end

local function backoff_to(c)
    return {
        base_ns = tonumber(c.base_ns),
        cap_ns = tonumber(c.cap_ns),
        multiplier = tonumber(c.multiplier),
        jitter = tonumber(c.jitter),
    }
end

local function breaker_from(t)
    if type(t) ~= "table" then
        error("buttress: config table expected", 3)
    end
    local c = breaker_cfg_t()
    C.buttress_breaker_config_init(c)
    for _, k in ipairs { "failure_threshold", "half_open_calls",
                         "success_threshold", "window_size", "min_calls" } do
        if t[k] ~= nil then c[k] = u32(t[k], k) end
    end
    if t.window_type ~= nil then c.window_type = i32(t.window_type, "window_type") end
    if t.use_reset_backoff ~= nil then
        c.use_reset_backoff = i32(t.use_reset_backoff, "use_reset_backoff")
    end
    for _, k in ipairs { "window_ns", "reset_timeout_ns", "trial_timeout_ns",
                         "slow_call_ns" } do
        if t[k] ~= nil then c[k] = i64(checknum(t[k], k)) end
    end
    for _, k in ipairs { "failure_rate", "slow_rate" } do
        if t[k] ~= nil then c[k] = checknum(t[k], k) end
    end
    if type(t.reset_backoff) == "table" then
        backoff_from(t.reset_backoff, c.reset_backoff)
    end
    return c
end

local function breaker_to(c)
    return {
        failure_threshold = tonumber(c.failure_threshold),
        half_open_calls = tonumber(c.half_open_calls),
        success_threshold = tonumber(c.success_threshold),
        window_size = tonumber(c.window_size),
        min_calls = tonumber(c.min_calls),
        window_type = tonumber(c.window_type),
        window_ns = tonumber(c.window_ns),
        reset_timeout_ns = tonumber(c.reset_timeout_ns),
        trial_timeout_ns = tonumber(c.trial_timeout_ns),
        slow_call_ns = tonumber(c.slow_call_ns),
        failure_rate = tonumber(c.failure_rate),
        slow_rate = tonumber(c.slow_rate),
        use_reset_backoff = tonumber(c.use_reset_backoff),
        reset_backoff = backoff_to(c.reset_backoff),
    }
end

local function retry_from(t)
    if type(t) ~= "table" then
        error("buttress: config table expected", 3)
    end
    local c = retry_cfg_t()
    C.buttress_retry_config_init(c)
    if t.attempts ~= nil then c.attempts = u32(t.attempts, "attempts") end
    if t.deadline_ns ~= nil then c.deadline_ns = i64(checknum(t.deadline_ns, "deadline_ns")) end
    if type(t.backoff) == "table" then
        backoff_from(t.backoff, c.backoff)
    end
    return c
end

local function retry_to(c)
    return {
        attempts = tonumber(c.attempts),
        deadline_ns = tonumber(c.deadline_ns),
        backoff = backoff_to(c.backoff),
    }
end

local function budget_from(t)
    if type(t) ~= "table" then
        error("buttress: config table expected", 3)
    end
    local c = budget_cfg_t()
    C.buttress_budget_config_init(c)
    if t.ratio ~= nil then c.ratio = checknum(t.ratio, "ratio") end
    if t.min_per_second ~= nil then c.min_per_second = checknum(t.min_per_second, "min_per_second") end
    if t.window_ns ~= nil then c.window_ns = i64(checknum(t.window_ns, "window_ns")) end
    return c
end

local function budget_to(c)
    return {
        ratio = tonumber(c.ratio),
        min_per_second = tonumber(c.min_per_second),
        window_ns = tonumber(c.window_ns),
    }
end

local function backoff_cfg_from(t)
    if type(t) ~= "table" then
        error("buttress: config table expected", 3)
    end
    local c = backoff_cfg_t()
    C.buttress_backoff_config_init(c)
    backoff_from(t, c)
    return c
end

function _M.breaker_defaults()
    local c = breaker_cfg_t()
    C.buttress_breaker_config_init(c)
    return breaker_to(c)
end

function _M.breaker_check(t)
    return C.buttress_breaker_config_check(breaker_from(t))
end

function _M.retry_defaults()
    local c = retry_cfg_t()
    C.buttress_retry_config_init(c)
    return retry_to(c)
end

function _M.retry_check(t)
    return C.buttress_retry_config_check(retry_from(t))
end

function _M.budget_defaults()
    local c = budget_cfg_t()
    C.buttress_budget_config_init(c)
    return budget_to(c)
end

function _M.budget_check(t)
    return C.buttress_budget_config_check(budget_from(t))
end

function _M.backoff_defaults()
    local c = backoff_cfg_t()
    C.buttress_backoff_config_init(c)
    return backoff_to(c)
end

function _M.backoff_check(t)
    return C.buttress_backoff_config_check(backoff_cfg_from(t))
end

local function fail(what, rc)
    error("buttress: " .. what .. ": " .. ffi_string(C.buttress_strerror(rc)), 3)
end

-- A state block the core places itself in: uint64_t words keep it aligned
-- to 8; the Lua object holds the block so the GC keeps it alive.
local words_t = ffi_typeof("uint64_t[?]")

local function block(size)
    return words_t(ceil(tonumber(size) / 8))
end

local function seed_of(seed)
    if seed == nil then
        return C.buttress_entropy_seed()
    end
    return seed
end

------------------------------------------------------------------ breaker

local breaker_ptr_t = ffi_typeof("buttress_breaker *")
local ticket_t = ffi_typeof("buttress_lua_ticket")
local plain_ticket_t = ffi_typeof("buttress_ticket")
local bmetrics_t = ffi_typeof("buttress_breaker_metrics")

local Breaker = {}
local breaker_mt = { __index = Breaker, __metatable = "buttress: metatable is locked" }

-- Tickets.  No allocation per call, and a ticket recorded twice, or on
-- another breaker, is refused.
--
-- A ticket handed out is a number, a handle = base + seq: base = id * SEQ
-- names the breaker object (ids are given out in turn), seq (1..SEQ-1) is
-- a module-wide issue counter; handles stay below 2^53 (exact doubles) and
-- live ones are unique.  A live handle is kept in one of two places, each
-- beside what record() needs of the core's ticket:
--
--  * the breaker's own entry, self.h1 (0 when free) and self.w1: one
--    common ticket at a time, the usual allow-then-record.  It costs two
--    fields of the breaker object, no index to compute.  A sampled call
--    (allow_sampled) keeps its start there too, in self.s1.
--  * the ring: ring[2k + 1] with k = band(seq, rmask) holds the handle, 0
--    once recorded, and ring[2k + 2] what record() needs.
--
-- A handle recorded twice no longer matches its entry, even after the
-- entry went to another call, and raises.  What record() needs:
--
--  * a common ticket (admitted while closed or disabled, no half-open
--    permit, not timed): the ticket's state word, as a number
--    (exact below 2^53, that is for generations below 2^34; a larger word
--    takes the other branch).  record() writes it back into one reused
--    scratch buttress_ticket: the core's record reads nothing else of such
--    a ticket but its permit and flags, which stay -1 and 0 there.
--  * any other ticket (a half-open permit, timed, or sampled but not in
--    the breaker's own entry; ring only):
--    -slot, the index of a pooled buttress_lua_ticket cdata holding it
--    whole, taken from a free list and given back at record().
--
-- A ring entry held by a ticket that was never recorded is skipped (seq
-- moves on); when PROBES entries in a row are taken the ring doubles, up to
-- RING_MAX entries.  Past that, or with every pooled slot taken
-- (MAX_SLOTS), allow() hands out one collected cdata per ticket.
local SEQ = 2 ^ 32
local ID_MAX = 2 ^ 21 - 1    -- base + seq < 2^53
local EXACT = 2 ^ 53
local RING_MAX = 65536
local PROBES = 8
local rsize = 1024           -- entries; the ring array holds two numbers each
local rmask = rsize - 1
local ring = {}
for j = 1, 2 * rsize do
    ring[j] = 0
end
local seq = 0
local last_id = 0

local MAX_SLOTS = 65535
local slots = {}             -- slot -> buttress_lua_ticket cdata
local free = {}              -- stack of free slots
local nfree, nslots = 0, 0

-- The scratch ticket: filled by the core's allow, and by record() for
-- common tickets, and read back at once (no Lua code runs in between that
-- could use it).  Between calls its permit is -1 and its flags 0.
local sc = plain_ticket_t()

local function next_base()
    last_id = last_id + 1
    if last_id > ID_MAX then
        -- two breakers made 2^21 breakers apart share an id: a ticket of
        -- one recorded on the other is then not told apart (a double
        -- record still is)
        last_id = 1
    end
    return last_id * SEQ
end

local breakers = setmetatable({}, { __mode = "k" }) -- for ticket_pool()

local function new_breaker(p, mem)
    local self = setmetatable({ p = p, mem = mem, base = next_base(),
                                h1 = 0, w1 = 0, s1 = 0 },
                              breaker_mt)
    breakers[self] = true
    return self
end

function _M.breaker_new(t)
    local c = breaker_from(t)
    local size = C.buttress_breaker_sizeof(c)
    if size == 0 then
        fail("breaker", C.BUTTRESS_EINVAL)
    end
    local mem = block(size)
    local rc = C.buttress_breaker_init(mem, size, c)
    if rc ~= 0 then
        fail("breaker", rc)
    end
    return new_breaker(ffi_cast(breaker_ptr_t, mem), mem)
end

-- Doubles the ring; a live handle moves to its entry in the larger ring
-- (the same, or the one rsize entries further).
local function grow()
    local old = rsize
    rsize = old * 2
    rmask = rsize - 1
    for j = 2 * old + 1, 2 * rsize do
        ring[j] = 0
    end
    for k = 0, old - 1 do
        local j = 2 * k + 1
        local h = ring[j]
        if h ~= 0 then
            local nj = 2 * band(h % SEQ, rmask) + 1 -- h % SEQ: the seq
            if nj ~= j then
                ring[nj], ring[nj + 1] = h, ring[j + 1]
                ring[j], ring[j + 1] = 0, 0
            end
        end
    end
end

-- A free entry for a new handle of this breaker: the handle and the index
-- of its entry, or nil when the ring is full.
local function claim(self)
    for _ = 1, 2 do
        local s = seq
        for _ = 1, PROBES do
            s = s + 1
            if s >= SEQ then
                s = 1
            end
            local j = 2 * band(s, rmask) + 1
            if ring[j] == 0 then
                seq = s
                return self.base + s, j
            end
        end
        if rsize >= RING_MAX then
            return nil
        end
        grow()
    end
    return nil
end

-- Everything allow() does but the common case.
local function allow_other(self, p, rc, clock, sample)
    local nowv = NO_CLOCK
    if rc == NEED_CLOCK then
        nowv = clock and clock() or now()
        rc = C.buttress_breaker_allow(p, nowv, sc) -- sc anew: clock() may have used it
    end
    if rc ~= 0 then
        if rc < 0 then
            fail("allow", rc)
        end
        return rc, tonumber(sc.retry_after_ns), sc.from, sc.to
    end
    local from, to = sc.from, sc.to
    local timed = sample or band(sc.flags, TIMED) ~= 0
    local wd = tonumber(sc.word)
    local h, j = claim(self)
    if h and sc.flags == 0 and sc.permit < 0 and not timed and wd < EXACT then
        -- a common ticket whose entry was taken, or after a clock read
        ring[j], ring[j + 1] = h, wd
        return 0, h, from, to
    end
    local tk, slot
    if h then
        local n = nfree
        if n > 0 then
            slot = free[n]
            nfree = n - 1
        elseif nslots < MAX_SLOTS then
            nslots = nslots + 1
            slot = nslots
            slots[slot] = ticket_t()
        end
    end
    if slot then
        tk = slots[slot]
    else
        tk = ticket_t() -- the ring or the pool is full: a collected ticket
    end
    tk.t = sc
    sc.permit, sc.flags = -1, 0 -- the scratch ticket's invariant
    tk.owner = p
    tk.state = ADMITTED
    tk.start_ns = NO_CLOCK
    if timed then
        if nowv < 0 then
            nowv = clock and clock() or now()
        end
        tk.start_ns = nowv
    end
    if not slot then
        return 0, tk, from, to
    end
    ring[j], ring[j + 1] = h, -slot
    return 0, h, from, to
end

-- The hot path: no clock read unless the core asks for it (NEED_CLOCK),
-- no allocation.  sample: time this call although the core does not need
-- it (latency sampling, see the facade).
function Breaker:allow(clock, sample)
    local p = self.p
    local rc = C.buttress_breaker_allow(p, NO_CLOCK, sc)
    if rc == 0 and not sample and sc.flags == 0 and sc.permit < 0 then
        local wd = tonumber(sc.word)
        local s = seq + 1
        if self.h1 == 0 and s < SEQ and wd < EXACT then
            seq = s
            local h = self.base + s
            self.h1, self.w1 = h, wd
            -- admitted while closed or disabled: allow made no transition
            return 0, h, NONE, NONE
        end
    end
    return allow_other(self, p, rc, clock, sample)
end

-- A sampled call (the facade's latency sampling): like allow(), but timed
-- from admission; in the breaker's own entry its start goes in s1.
function Breaker:allow_sampled(clock)
    local p = self.p
    local rc = C.buttress_breaker_allow(p, NO_CLOCK, sc)
    if rc == 0 and sc.flags == 0 and sc.permit < 0 then
        local wd = tonumber(sc.word)
        local s = seq + 1
        if self.h1 == 0 and s < SEQ and wd < EXACT then
            seq = s
            local h = self.base + s
            self.h1, self.w1 = h, wd
            self.s1 = clock and clock() or now()
            return 0, h, NONE, NONE
        end
    end
    return allow_other(self, p, rc, clock, true)
end
_M.breaker_allow_sampled = Breaker.allow_sampled

local function badticket(what)
    error("bad argument 'ticket' to 'record' (" .. what .. ")", 4)
end

-- A common ticket: its word back into the scratch cdata, recorded, its
-- entry freed.  The clock is read only when the core asks (a failure, say);
-- the word is written again after that read, since clock() may use sc.
local function record_common(p, j, wd, outcome, dur, clock)
    sc.word = wd
    local rc = C.buttress_breaker_record(p, sc, outcome, dur, NO_CLOCK)
    if rc == NEED_CLOCK then
        local nowv = clock and clock() or now()
        sc.word = wd
        rc = C.buttress_breaker_record(p, sc, outcome, dur, nowv)
    end
    if rc < 0 then
        fail("record", rc)
    end
    ring[j] = 0
    return rc, sc.from, sc.to
end

-- A pooled or collected ticket.  start: when the call was admitted (timed
-- tickets and sampled calls), else NO_CLOCK.
local function record_ticket(p, tk, outcome, dur, clock)
    local t = tk.t
    local nowv = NO_CLOCK
    if dur < 0 and tk.start_ns >= 0 then
        nowv = clock and clock() or now()
        dur = nowv - tk.start_ns
        if dur < 0 then
            dur = 0
        end
    end
    local rc = C.buttress_breaker_record(p, t, outcome, dur, nowv)
    if rc == NEED_CLOCK then
        nowv = clock and clock() or now()
        rc = C.buttress_breaker_record(p, t, outcome, dur, nowv)
    end
    if rc < 0 then
        fail("record", rc)
    end
    tk.state = DONE
    return rc, t.from, t.to
end

-- Everything record() does but the common case.
local function record_other(self, p, h, outcome, dur, clock)
    if type(h) == "number" then
        local s = h - self.base
        local j = 2 * band(s, rmask) + 1
        if ring[j] ~= h or not (s >= 1 and s < SEQ) then
            if h ~= h or h < SEQ or h >= EXACT or h % 1 ~= 0 then
                badticket("ticket expected, got number")
            elseif s >= 1 and s < SEQ then
                badticket("ticket already recorded")
            end
            badticket("ticket of another breaker")
        end
        local v = ring[j + 1]
        if v >= 0 then
            return record_common(p, j, v, outcome, dur, clock)
        end
        local slot = -v
        local rc, from, to = record_ticket(p, slots[slot], outcome, dur, clock)
        ring[j] = 0
        nfree = nfree + 1
        free[nfree] = slot
        return rc, from, to
    end
    if type(h) ~= "cdata" or not ffi.istype(ticket_t, h) then
        badticket("ticket expected, got " .. type(h))
    end
    if h.state ~= ADMITTED then
        badticket("ticket already recorded")
    end
    if h.owner ~= p then
        badticket("ticket of another breaker")
    end
    return record_ticket(p, h, outcome, dur, clock)
end

function Breaker:record(h, outcome, dur, clock)
    local p = self.p
    if dur == nil then
        dur = NO_CLOCK
    end
    if h == self.h1 and h ~= 0 then -- h1 == 0: the entry is free
        local wd = self.w1
        sc.word = wd
        local rc = C.buttress_breaker_record(p, sc, outcome, dur, NO_CLOCK)
        if rc == NEED_CLOCK then
            local nowv = clock and clock() or now()
            sc.word = wd -- clock() may have used sc
            rc = C.buttress_breaker_record(p, sc, outcome, dur, nowv)
        end
        if rc < 0 then
            fail("record", rc)
        end
        self.h1 = 0
        return rc, sc.from, sc.to
    end
    return record_other(self, p, h, outcome, dur, clock)
end

-- The outcome of a call admitted by allow_sampled(): timed to now.
function Breaker:record_sampled(h, outcome, clock)
    local p = self.p
    if h == self.h1 and h ~= 0 then
        local nowv = clock and clock() or now()
        local dur = nowv - self.s1
        if dur < 0 then
            dur = 0
        end
        sc.word = self.w1 -- after the clock read, which may use sc
        local rc = C.buttress_breaker_record(p, sc, outcome, dur, nowv)
        if rc < 0 then
            fail("record", rc)
        end
        self.h1 = 0
        return rc, sc.from, sc.to
    end
    return record_other(self, p, h, outcome, NO_CLOCK, clock)
end
_M.breaker_record_sampled = Breaker.record_sampled

-- For tests and bench: pooled slots, free ones, live tickets (in the ring
-- and in the breakers' own entries).
function _M.ticket_pool()
    local busy = 0
    for j = 1, 2 * rsize, 2 do
        if ring[j] ~= 0 then
            busy = busy + 1
        end
    end
    for br in pairs(breakers) do
        if br.h1 ~= 0 then
            busy = busy + 1
        end
    end
    return nslots, nfree, busy
end

function Breaker:state()
    return C.buttress_breaker_state(self.p)
end

local function manual(fn, what)
    return function(self, clock)
        local t = plain_ticket_t()
        t.from, t.to = -1, -1
        local rc = fn(self.p, clock and clock() or now(), t)
        if rc < 0 then
            fail(what, rc)
        end
        return rc, t.from, t.to
    end
end
Breaker.force_open = manual(C.buttress_breaker_force_open, "force_open")
Breaker.disable = manual(C.buttress_breaker_disable, "disable")
Breaker.reset = manual(C.buttress_breaker_reset, "reset")

local ncount = tonumber(C.BUTTRESS_STATE_COUNT)

local function latency_table(l)
    return {
        count = tonumber(l.count),
        p50_ns = tonumber(l.p50_ns),
        p95_ns = tonumber(l.p95_ns),
        p99_ns = tonumber(l.p99_ns),
        max_ns = tonumber(l.max_ns),
        mean_ns = tonumber(l.mean_ns),
    }
end

function Breaker:metrics(nowv)
    local m = bmetrics_t()
    local rc = C.buttress_breaker_metrics_get(self.p, nowv or NO_CLOCK, m)
    if rc ~= 0 then
        fail("metrics", rc)
    end
    local tr, last = {}, {}
    for i = 0, ncount - 1 do
        for j = 0, ncount - 1 do
            if i ~= j then
                local k = state_names[i] .. ">" .. state_names[j]
                tr[k] = tonumber(m.transitions[i][j])
                last[k] = tonumber(m.last_transition_ns[i][j])
            end
        end
    end
    return {
        calls = tonumber(m.calls),
        successes = tonumber(m.successes),
        failures = tonumber(m.failures),
        excluded = tonumber(m.excluded),
        cancelled = tonumber(m.cancelled),
        stale = tonumber(m.stale),
        rejected = tonumber(m.rejected),
        slow = tonumber(m.slow),
        state = tonumber(m.state),
        consecutive_failures = tonumber(m.consecutive_failures),
        half_open_successes = tonumber(m.half_open_successes),
        trips = tonumber(m.trips),
        window_calls = tonumber(m.window_calls),
        window_failures = tonumber(m.window_failures),
        window_slow = tonumber(m.window_slow),
        failure_rate = tonumber(m.failure_rate),
        slow_rate = tonumber(m.slow_rate),
        open_until_ns = tonumber(m.open_until_ns),
        calls_per_second = tonumber(m.calls_per_second),
        latency = latency_table(m.latency),
        transitions = tr,
        last_transition_ns = last,
    }
end

function Breaker:config()
    local c = breaker_cfg_t()
    local rc = C.buttress_breaker_get_config(self.p, c)
    if rc ~= 0 then
        fail("config", rc)
    end
    return breaker_to(c)
end

------------------------------------------------------------------- budget

local budget_ptr_t = ffi_typeof("buttress_budget *")
local budget_metrics_t = ffi_typeof("buttress_budget_metrics")

local Budget = {}
local budget_mt = { __index = Budget, __metatable = "buttress: metatable is locked" }

function _M.budget_new(t)
    local c = budget_from(t)
    local size = C.buttress_budget_sizeof()
    local mem = block(size)
    local rc = C.buttress_budget_init(mem, size, c)
    if rc ~= 0 then
        fail("budget", rc)
    end
    return setmetatable({ p = ffi_cast(budget_ptr_t, mem), mem = mem }, budget_mt)
end

function Budget:metrics(nowv)
    local m = budget_metrics_t()
    local rc = C.buttress_budget_metrics_get(self.p, nowv, m)
    if rc ~= 0 then
        fail("metrics", rc)
    end
    return {
        deposits = tonumber(m.deposits),
        withdrawals = tonumber(m.withdrawals),
        rejections = tonumber(m.rejections),
        available = tonumber(m.available),
        window_calls = tonumber(m.window_calls),
        window_retries = tonumber(m.window_retries),
    }
end

-------------------------------------------------------------------- retry

local retry_ptr_t = ffi_typeof("buttress_retry *")
local call_t = ffi_typeof("buttress_retry_call")
local rmetrics_t = ffi_typeof("buttress_retry_metrics")
local i64_box_t = ffi_typeof("int64_t[1]")

local Retry = {}
local retry_mt = { __index = Retry, __metatable = "buttress: metatable is locked" }

local Call = {}
local call_mt = { __index = Call }

function _M.retry_new(t, seed)
    local c = retry_from(t)
    local size = C.buttress_retry_sizeof()
    local mem = block(size)
    local rc = C.buttress_retry_init(mem, size, c, seed_of(seed))
    if rc ~= 0 then
        fail("retry", rc)
    end
    return setmetatable({ p = ffi_cast(retry_ptr_t, mem), mem = mem }, retry_mt)
end

local function budget_ptr(b)
    if b == nil then
        return nil
    end
    return b.p
end

function Retry:begin(budget, outer, nowv)
    local call = call_t()
    local rc = C.buttress_retry_begin(self.p, call, budget_ptr(budget),
                                      outer or NO_CLOCK, nowv)
    if rc < 0 then
        fail("begin", rc)
    end
    return rc, setmetatable({ c = call }, call_mt)
end

function Retry:next(call, budget, override, nowv)
    local c = call.c
    local rc = C.buttress_retry_next(self.p, c, budget_ptr(budget),
                                     override or NO_CLOCK, nowv)
    if rc < 0 then
        fail("next", rc)
    end
    return rc, tonumber(c.delay_ns)
end

-- After the sleep: 0, or DEADLINE when it overran the deadline.
function Retry:resume(call, nowv)
    local rc = C.buttress_retry_resume(self.p, call.c, nowv or NO_CLOCK)
    if rc < 0 then
        fail("resume", rc)
    end
    return rc
end

function Retry:finish(call, outcome)
    local rc = C.buttress_retry_end(self.p, call.c, outcome)
    if rc < 0 then
        fail("end", rc)
    end
    return rc
end

-- A whole call's time (NO_CLOCK when untimed), for the metrics.
function Retry:observe(duration_ns, nowv)
    local rc = C.buttress_retry_observe(self.p, duration_ns, nowv or NO_CLOCK)
    if rc ~= 0 then
        fail("observe", rc)
    end
end

function Retry:metrics(nowv)
    local m = rmetrics_t()
    local rc = C.buttress_retry_metrics_get(self.p, nowv or NO_CLOCK, m)
    if rc ~= 0 then
        fail("metrics", rc)
    end
    return {
        calls = tonumber(m.calls),
        attempts = tonumber(m.attempts),
        retries = tonumber(m.retries),
        successes = tonumber(m.successes),
        failures = tonumber(m.failures),
        giveups_attempts = tonumber(m.giveups_attempts),
        giveups_deadline = tonumber(m.giveups_deadline),
        giveups_budget = tonumber(m.giveups_budget),
        calls_per_second = tonumber(m.calls_per_second),
        latency = latency_table(m.latency),
    }
end

function Retry:config()
    local c = retry_cfg_t()
    local rc = C.buttress_retry_get_config(self.p, c)
    if rc ~= 0 then
        fail("config", rc)
    end
    return retry_to(c)
end

function Call:remaining(nowv)
    local out = i64_box_t()
    local rc = C.buttress_retry_remaining(self.c, nowv, out)
    if rc < 0 then
        fail("remaining", rc)
    end
    return tonumber(out[0])
end

function Call:deadline()
    return tonumber(self.c.deadline_ns)
end

function Call:attempt()
    return tonumber(self.c.attempt)
end

------------------------------------------------------------------ region

local region_pp_t = ffi_typeof("buttress_region *[1]")
local breaker_pp_t = ffi_typeof("buttress_breaker *[1]")
local budget_pp_t = ffi_typeof("buttress_budget *[1]")
local int_box_t = ffi_typeof("int[1]")
local u64_box_t = ffi_typeof("uint64_t[1]")
local u32_box_t = ffi_typeof("uint32_t[1]")

local Region = {}
local region_mt = { __index = Region, __metatable = "buttress: metatable is locked" }

-- The mapping is closed when the region object is collected; breakers and
-- budgets in it hold the region object, so it outlives them.
local function region_of(out)
    return setmetatable({ p = ffi.gc(out[0], C.buttress_region_close) }, region_mt)
end

function _M.region_open(name, size, create, mode)
    local out = region_pp_t()
    local rc = C.buttress_region_open(name, size, create and 1 or 0, mode or 384, out)
    if rc ~= 0 then
        return nil, rc
    end
    return region_of(out)
end

function _M.region_anonymous(size)
    local out = region_pp_t()
    local rc = C.buttress_region_anonymous(size, out)
    if rc ~= 0 then
        return nil, rc
    end
    return region_of(out)
end

function _M.region_unlink(name)
    return C.buttress_region_unlink(name)
end

function Region:breaker(name, t)
    local c = breaker_from(t)
    local out, created = breaker_pp_t(), int_box_t()
    local rc = C.buttress_region_breaker(self.p, name, c, out, created)
    if rc ~= 0 then
        return nil, rc
    end
    return new_breaker(out[0], self), created[0] ~= 0
end

function Region:budget(name, t)
    local c = budget_from(t)
    local out, created = budget_pp_t(), int_box_t()
    local rc = C.buttress_region_budget(self.p, name, c, out, created)
    if rc ~= 0 then
        return nil, rc
    end
    return setmetatable({ p = out[0], mem = self }, budget_mt), created[0] ~= 0
end

function Region:info()
    local size, used, slots = u64_box_t(), u64_box_t(), u32_box_t()
    local rc = C.buttress_region_info(self.p, size, used, slots)
    if rc ~= 0 then
        fail("region", rc)
    end
    return { size = tonumber(size[0]), used = tonumber(used[0]), slots_used = tonumber(slots[0]) }
end

------------------------------------------------------------------ backoff

local backoff_ptr_t = ffi_typeof("buttress_backoff *")

local Backoff = {}
local backoff_mt = { __index = Backoff, __metatable = "buttress: metatable is locked" }

function _M.backoff_new(t, seed)
    local c = backoff_cfg_from(t)
    local size = C.buttress_backoff_sizeof()
    local mem = block(size)
    local rc = C.buttress_backoff_init(mem, size, c, seed_of(seed))
    if rc ~= 0 then
        fail("backoff", rc)
    end
    return setmetatable({ p = ffi_cast(backoff_ptr_t, mem), mem = mem }, backoff_mt)
end

function Backoff:next(retry, prev)
    if type(retry) ~= "number" or retry < 0 or retry > 4294967295 then
        error("bad argument #1 to 'next' (retry number out of range)", 2)
    end
    local out = i64_box_t()
    local rc = C.buttress_backoff_next(self.p, retry, prev or NO_CLOCK, out)
    if rc ~= 0 then
        fail("backoff", rc)
    end
    return tonumber(out[0])
end

function Backoff:config()
    local c = backoff_cfg_t()
    local rc = C.buttress_backoff_get_config(self.p, c)
    if rc ~= 0 then
        fail("config", rc)
    end
    return backoff_to(c)
end

return _M
