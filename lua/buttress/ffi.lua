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
    return setmetatable({ p = ffi_cast(breaker_ptr_t, mem), mem = mem }, breaker_mt)
end

-- Tickets are pooled: no allocation per call.  A ticket handed out is a
-- number, a handle = gen * SLOTS + slot: slot indexes a buttress_lua_ticket
-- cdata allocated once and reused (free list, module-wide), and gen is the
-- slot's issue count, so a handle recorded twice (even after its slot went
-- to another call) no longer matches live[slot] and raises instead of
-- touching that other call.  A handle dropped without record() keeps its
-- slot; past MAX_SLOTS live handles allow() falls back to one cdata per
-- ticket (the pre-pool behaviour, collected by the GC).
local SLOTS = 65536          -- handle = gen * SLOTS + slot, slot in 1..MAX_SLOTS
local MAX_SLOTS = SLOTS - 1
local GEN_WRAP = 2 ^ 34      -- handles stay below 2^50: exact, and band() reads the slot
local slots = {}             -- slot -> buttress_lua_ticket cdata
local live = {}              -- slot -> the handle issued on it, 0 when free
local free = {}              -- stack of free slots
local nfree, nslots = 0, 0
local gen = 0                -- module-wide issue counter

local function new_slot()
    if nslots >= MAX_SLOTS then
        return nil
    end
    nslots = nslots + 1
    slots[nslots] = ticket_t()
    live[nslots] = 0
    return nslots
end

local function release(slot)
    live[slot] = 0
    nfree = nfree + 1
    free[nfree] = slot
end

-- The hot path: no clock read unless the core asks for it (NEED_CLOCK),
-- no allocation while the pool has a free slot.  sample: time this call
-- although the core does not need it (latency sampling, see the facade).
function Breaker:allow(clock, sample)
    local p = self.p
    local slot, tk
    local n = nfree
    if n > 0 then
        slot = free[n]
        nfree = n - 1
        tk = slots[slot]
    else
        slot = new_slot()
        if slot then
            tk = slots[slot]
        else
            tk = ticket_t() -- pool exhausted: a collected ticket
        end
    end
    local t = tk.t
    local nowv = NO_CLOCK
    local rc = C.buttress_breaker_allow(p, NO_CLOCK, t)
    if rc == NEED_CLOCK then
        nowv = clock and clock() or now()
        rc = C.buttress_breaker_allow(p, nowv, t)
    end
    if rc == 0 then
        tk.owner = p
        tk.state = ADMITTED
        tk.start_ns = NO_CLOCK
        if sample or band(t.flags, TIMED) ~= 0 then
            if nowv < 0 then
                nowv = clock and clock() or now()
            end
            tk.start_ns = nowv
        end
        if not slot then
            return 0, tk, t.from, t.to
        end
        local g = gen + 1
        if g >= GEN_WRAP then
            g = 1
        end
        gen = g
        local h = g * SLOTS + slot
        live[slot] = h
        return 0, h, t.from, t.to
    end
    if slot then
        nfree = nfree + 1
        free[nfree] = slot
    end
    if rc < 0 then
        fail("allow", rc)
    end
    return rc, tonumber(t.retry_after_ns), t.from, t.to
end

local function badticket(what)
    error("bad argument 'ticket' to 'record' (" .. what .. ")", 4)
end

function Breaker:record(h, outcome, dur, clock)
    local p = self.p
    local tk, slot
    if type(h) == "number" then
        slot = band(h, MAX_SLOTS)
        local lh = live[slot]
        if lh == nil or h < SLOTS then
            badticket("ticket expected, got number")
        end
        if lh ~= h then
            badticket("ticket already recorded")
        end
        tk = slots[slot]
    elseif type(h) == "cdata" and ffi.istype(ticket_t, h) then
        tk = h
        if tk.state ~= ADMITTED then
            badticket("ticket already recorded")
        end
    else
        badticket("ticket expected, got " .. type(h))
    end
    if tk.owner ~= p then
        badticket("ticket of another breaker")
    end
    local t = tk.t
    local nowv = NO_CLOCK
    if dur == nil then
        dur = NO_CLOCK
    end
    -- a start was taken for timed tickets and sampled calls only
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
    local from, to = t.from, t.to
    if slot then
        release(slot)
    end
    return rc, from, to
end

-- For tests and bench: pooled slots, free ones, live handles.
function _M.ticket_pool()
    return nslots, nfree, nslots - nfree
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
    return setmetatable({ p = out[0], mem = self }, breaker_mt), created[0] ~= 0
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
