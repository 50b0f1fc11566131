-- buttress: retry with backoff, circuit breakers, retry budgets, deadlines.
--
-- The facade.  Under LuaJIT (OpenResty) it drives libbuttress.so through
-- the FFI (buttress.ffi); under Lua 5.4 the C module buttress.core.  Both
-- offer the same primitives, so everything below runs unchanged on either,
-- and every decision is the core's: this file owns only call loops, errors,
-- callbacks and sleeping.
--
-- Misuse raises an error naming the argument; policy outcomes (an open
-- circuit, retries given up) return nil, err.

local type = type
local error = error
local pcall = pcall
local select = select
local setmetatable = setmetatable
local getmetatable = getmetatable
local tostring = tostring
local pairs = pairs
local ipairs = ipairs
local rawget = rawget
local rawset = rawset
local floor = math.floor
local huge = math.huge
local format = string.format
local concat = table.concat
local sort = table.sort
local co_running = coroutine.running
local unpack = table.unpack or unpack

-- Which path?  package.loaded["buttress.config"] = { backend = "c" | "ffi" }
-- or $BUTTRESS_BACKEND overrides the choice (the C module also builds
-- against LuaJIT).
local B
do
    local cfg = package.loaded["buttress.config"]
    local want = type(cfg) == "table" and cfg.backend or nil
    if want == nil then
        local env = os.getenv("BUTTRESS_BACKEND")
        want = env ~= "" and env or nil
    end
    if want == nil then
        want = rawget(_G, "jit") and "ffi" or "c"
    end
    if want == "ffi" then
        B = require "buttress.ffi"
    elseif want == "c" then
        B = require "buttress.core"
    else
        error("buttress: unknown backend '" .. tostring(want) .. "'")
    end
end

local _M = {
    _VERSION = B.version,
    backend = B.kind,
}

-- Codes and outcomes are the core's ABI (enum buttress_error / _outcome):
-- the ABI check at load guards them.
local EXHAUSTED, DEADLINE, BUDGET = 2, 3, 4
local SUCCESS, FAILURE, EXCLUDED, CANCELLED = 0, 1, 2, 3
local NONE = -1
local NS = 1e9

local now_ns = B.now

local function ns_to_s(ns)
    if ns == nil or ns < 0 then
        return nil
    end
    return ns / NS
end

--------------------------------------------------------------- errors

-- Policy outcomes: a fresh table each time (never a shared object), with a
-- readable message through tostring().
local Error = {}
_M.Error = Error

-- A rejection must stay cheap: its message is formatted only when read.
local function open_message(e)
    if e.retry_after then
        return format("circuit '%s' open: call rejected, retry after %.3f s",
                      e.breaker, e.retry_after)
    end
    return format("circuit '%s' open: call rejected", e.breaker)
end

Error.__index = function(e, k)
    if k == "message" and rawget(e, "kind") == "open" then
        local m = open_message(e)
        rawset(e, "message", m)
        return m
    end
    return Error[k]
end
Error.__tostring = function(e)
    return e.message
end

local function new_error(kind, message, e)
    e = e or {}
    e.kind = kind
    e.message = message
    return setmetatable(e, Error)
end

function _M.is_error(v)
    return getmetatable(v) == Error
end

-- Misuse.  Hot methods raise at once (level 2: the caller's line).
-- Constructors validate deep inside helpers: they raise an ArgError that
-- public() re-raises as a string at the user's call site.
local ArgError = {}

local function argerror(fname, arg, msg, level)
    local text = format("bad argument '%s' to '%s' (%s)", arg, fname, msg)
    if level == nil then
        error(setmetatable({ msg = text }, ArgError))
    end
    error(text, level + 1)
end

local function public(fn)
    return function(...)
        local ok, res = pcall(fn, ...)
        if ok then
            return res
        end
        if getmetatable(res) == ArgError then
            error(res.msg, 2)
        end
        error(res, 0)
    end
end

local function typename(v)
    local t = type(v)
    if t == "number" and v ~= v then
        return "nan"
    end
    return t
end

local function callable(v)
    if type(v) == "function" then
        return true
    end
    local mt = getmetatable(v)
    return type(mt) == "table" and type(rawget(mt, "__call")) == "function"
end

----------------------------------------------------- option checking

local attach -- defined with regions below

-- Option readers: types and signs are checked here, naming the option;
-- ranges are the core's (config_check), blamed on an option below.
local MAXDUR = 2 ^ 62 + 2 ^ 61 -- past BUTTRESS_MAX_DURATION_NS: rejected

local function opt_seconds(fname, k, v)
    if type(v) ~= "number" or v ~= v then
        argerror(fname, k, "number of seconds expected, got " .. typename(v))
    end
    if v < 0 then
        argerror(fname, k, "must not be negative, got " .. tostring(v))
    end
    local ns = v * NS
    if ns >= MAXDUR then
        return MAXDUR
    end
    return floor(ns + 0.5)
end

-- An optional duration argument of a method call, in ns (NONE when nil);
-- errors point at the method's caller.
local function call_seconds_ns(fname, k, v)
    if v == nil then
        return NONE
    end
    if type(v) ~= "number" or not (v >= 0) or v == huge then
        argerror(fname, k, "non-negative number of seconds expected, got "
                 .. tostring(v), 3)
    end
    return floor(v * NS + 0.5)
end

local function opt_count(fname, k, v)
    if type(v) ~= "number" or v ~= floor(v) or v == huge then
        argerror(fname, k, "integer expected, got " .. (type(v) == "number"
                 and tostring(v) or typename(v)))
    end
    if v < 0 or v > 4294967295 then
        argerror(fname, k, "out of range: " .. tostring(v))
    end
    return v
end

local function opt_ratio(fname, k, v)
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
        argerror(fname, k, "finite number expected, got " .. (type(v) == "number"
                 and tostring(v) or typename(v)))
    end
    return v
end

local function opt_func(fname, k, v)
    if v ~= nil and not callable(v) then
        argerror(fname, k, "function expected, got " .. typename(v))
    end
    return v
end

local function opt_jitter(fname, k, v)
    if type(v) ~= "string" then
        argerror(fname, k, "string expected, got " .. typename(v))
    end
    local j = B.jitter_parse(v)
    if not j then
        argerror(fname, k, "\"none\", \"full\", \"equal\" or \"decorrelated\" expected, got \""
                 .. v .. "\"")
    end
    return j
end

local function deep_copy(t)
    local c = {}
    for k, v in pairs(t) do
        c[k] = type(v) == "table" and deep_copy(v) or v
    end
    return c
end

-- Build a core config from the defaults and the user's options, each
-- applied by `setters[key]`.  When the core rejects the whole, find the
-- option to blame: the first one that the core rejects on its own.
local function build(fname, opts, setters, defaults, check, skip)
    if type(opts) ~= "table" then
        argerror(fname, "options", "table expected, got " .. typename(opts))
    end
    local given = {}
    for k in pairs(opts) do
        if type(k) ~= "string" then
            argerror(fname, "options", "option names must be strings")
        end
        if not setters[k] and not skip[k] then
            argerror(fname, k, "unknown option")
        end
        if setters[k] then
            given[#given + 1] = k
        end
    end
    sort(given)
    local cfg = deep_copy(defaults)
    for _, k in ipairs(given) do
        setters[k](cfg, opts[k], opts)
    end
    if check(cfg) == 0 then
        return cfg
    end
    for _, k in ipairs(given) do
        local one = deep_copy(defaults)
        setters[k](one, opts[k], opts)
        if check(one) ~= 0 then
            argerror(fname, k, "invalid value " .. tostring(opts[k]))
        end
    end
    local last = given[#given]
    local others = {}
    for _, k in ipairs(given) do
        if k ~= last then
            others[#others + 1] = k .. "=" .. tostring(opts[k])
        end
    end
    argerror(fname, last, "invalid value " .. tostring(opts[last]) .. " together with "
             .. concat(others, ", "))
end

local function backoff_setters(fname, sub)
    local function at(cfg)
        if sub then
            return cfg[sub]
        end
        return cfg
    end
    return {
        base = function(cfg, v) at(cfg).base_ns = opt_seconds(fname, "base", v) end,
        cap = function(cfg, v) at(cfg).cap_ns = opt_seconds(fname, "cap", v) end,
        multiplier = function(cfg, v)
            at(cfg).multiplier = opt_ratio(fname, "multiplier", v)
        end,
        jitter = function(cfg, v) at(cfg).jitter = opt_jitter(fname, "jitter", v) end,
    }
end

--------------------------------------------------------------- backoff

local Backoff = {}
Backoff.__index = Backoff
Backoff.__tostring = function(b)
    return "buttress.backoff"
end

local backoff_setters_top = backoff_setters("backoff")
local backoff_skip = { seed = true }

-- buttress.backoff{ base = 0.1, multiplier = 2, cap = 10, jitter = "full", seed = n }
local function new_backoff(opts)
    local cfg = build("backoff", opts or {}, backoff_setters_top, B.backoff_defaults(),
                      B.backoff_check, backoff_skip)
    local seed = opts and opts.seed
    if seed ~= nil then
        opt_count("backoff", "seed", seed)
    end
    return setmetatable({ _h = B.backoff_new(cfg, seed), _cfg = cfg }, Backoff)
end

_M.backoff = public(new_backoff)

-- The first n retry delays, in seconds.
function Backoff:delays(n)
    if type(n) ~= "number" or n ~= floor(n) or n < 0 or n > 1e7 then
        argerror("delays", "n", "integer in [0, 1e7] expected, got " .. tostring(n), 2)
    end
    local out, prev = {}, NONE
    local h = self._h
    for i = 0, n - 1 do
        local d = h:next(i, prev)
        out[i + 1] = d / NS
        prev = d
    end
    return out
end

-- The delay of retry number `retry` (0 = the first retry), in seconds.
function Backoff:delay(retry, prev)
    if type(retry) ~= "number" or retry ~= floor(retry) or retry < 0
       or retry > 4294967295 then
        argerror("delay", "retry", "integer in [0, 2^32) expected, got "
                 .. tostring(retry), 2)
    end
    return self._h:next(retry, call_seconds_ns("delay", "prev", prev)) / NS
end

function Backoff:config()
    local c = self._cfg
    return {
        base = c.base_ns / NS,
        cap = c.cap_ns / NS,
        multiplier = c.multiplier,
        jitter = B.jitter_name(c.jitter),
    }
end

---------------------------------------------------------------- region

-- A region: breakers and budgets whose state lives in memory shared by
-- processes.  In OpenResty, make it in init_by_lua (before nginx forks its
-- workers): every worker then sees the same breaker, instead of N workers
-- each needing the threshold's failures and each letting trials through.
local Region = {}
Region.__index = Region
Region.__tostring = function(r)
    return "buttress.region " .. (r.name or "(anonymous)")
end

local ECONFIG, ENOSPC, EBUSY, ENAMETOOLONG, EINVAL = -4, -3, -8, -6, -1

local region_opts = { name = true, size = true, create = true, mode = true }

-- buttress.region{ name = "/myapp", size = 1048576 }: a named POSIX shared
-- memory object (create = false: attach only); without a name, an anonymous
-- mapping inherited by processes forked afterwards.
local function new_region(opts)
    if type(opts) ~= "table" then
        argerror("region", "options", "table expected, got " .. typename(opts))
    end
    for k in pairs(opts) do
        if not region_opts[k] then
            argerror("region", tostring(k), "unknown option")
        end
    end
    local name = opts.name
    if name ~= nil and type(name) ~= "string" then
        argerror("region", "name", "string expected, got " .. typename(name))
    end
    local size = opts.size
    if size == nil and (name == nil or opts.create ~= false) then
        argerror("region", "size", "size in bytes expected")
    end
    size = size == nil and 0 or opt_count("region", "size", size)
    local mode = opts.mode
    if mode ~= nil then
        opt_count("region", "mode", mode)
    end
    local h, rc
    if name then
        h, rc = B.region_open(name, size, opts.create ~= false, mode or 384) -- 0600
    else
        h, rc = B.region_anonymous(size)
    end
    if not h then
        local what = "name"
        if rc == EINVAL and not (name and not name:match("^/[^/]+$")) then
            what = "size"
        end
        if rc == ENAMETOOLONG then
            what = "name"
        end
        argerror("region", what, B.strerror(rc))
    end
    return setmetatable({ name = name, _h = h }, Region)
end
_M.region = public(new_region)

function Region:info()
    return self._h:info()
end

function _M.unlink_region(name)
    if type(name) ~= "string" then
        argerror("unlink_region", "name", "string expected, got " .. typename(name), 2)
    end
    return B.region_unlink(name) == 0
end

-- Find or create `name` in the region.  EBUSY: another process is creating
-- it right now; its slot is ready within moments.
attach = function(region, kind, name, cfg)
    for _ = 1, 100000 do
        local h, rc = region._h[kind](region._h, name, cfg)
        if h then
            return h
        end
        if rc == ECONFIG then
            argerror(kind, "name", kind .. " '" .. name
                     .. "' exists in the region with different settings")
        elseif rc == ENOSPC then
            argerror(kind, "shared", "the region is full")
        elseif rc ~= EBUSY then
            argerror(kind, "name", B.strerror(rc))
        end
    end
    argerror(kind, "shared", "slot '" .. name .. "' stayed busy")
end

---------------------------------------------------------------- budget

local Budget = {}
Budget.__index = Budget

local budget_setters = {
    ratio = function(cfg, v) cfg.ratio = opt_ratio("budget", "ratio", v) end,
    min_per_second = function(cfg, v)
        cfg.min_per_second = opt_ratio("budget", "min_per_second", v)
    end,
    window = function(cfg, v) cfg.window_ns = opt_seconds("budget", "window", v) end,
}
local budget_skip = { clock = true, name = true, shared = true }

-- buttress.budget{ ratio = 0.2, min_per_second = 10, window = 10 }: shared
-- by every retry policy given it.
local function new_budget(opts)
    opts = opts or {}
    local cfg = build("budget", opts, budget_setters, B.budget_defaults(),
                      B.budget_check, budget_skip)
    local shared, name = opts.shared, opts.name
    if name ~= nil and type(name) ~= "string" then
        argerror("budget", "name", "string expected, got " .. typename(name))
    end
    local h
    if shared ~= nil then
        if getmetatable(shared) ~= Region then
            argerror("budget", "shared", "buttress.region expected, got " .. typename(shared))
        end
        if name == nil then
            argerror("budget", "name", "a shared budget needs a name")
        end
        h = attach(shared, "budget", name, cfg)
    else
        h = B.budget_new(cfg)
    end
    return setmetatable({
        name = name,
        _h = h,
        _clock = opt_func("budget", "clock", opts.clock),
    }, Budget)
end

_M.budget = public(new_budget)

function Budget:metrics()
    local clock = self._clock or now_ns
    return self._h:metrics(clock())
end

--------------------------------------------------------------- breaker

local Breaker = {}
Breaker.__index = Breaker
Breaker.__tostring = function(br)
    return "buttress.breaker " .. br.name
end

local registry = {}
_M.breakers = registry

local state_name = {}
for i = -1, 4 do
    state_name[i] = B.state_name(i)
end

local function log_error(msg)
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and ngx.log then
        ngx.log(ngx.ERR, msg)
    else
        io.stderr:write(msg, "\n")
    end
end

-- Listeners run after the core committed the transition; one that raises
-- is logged and cannot break the breaker or the caller.
local function transition(self, from, to)
    local cb = self.on_state_change
    if cb then
        local ok, err = pcall(cb, self, state_name[from], state_name[to])
        if not ok then
            log_error("buttress: on_state_change of '" .. self.name
                      .. "' failed: " .. tostring(err))
        end
    end
end

local function open_error(self, retry_after_ns)
    local ra
    if retry_after_ns >= 0 then
        ra = retry_after_ns / NS
    end
    return setmetatable({ kind = "open", breaker = self.name, retry_after = ra }, Error)
end

local function window_setter(cfg, v, opts)
    if opts.window_type == "time" then
        cfg.window_ns = opt_seconds("breaker", "window", v)
    else
        cfg.window_size = opt_count("breaker", "window", v)
    end
end

-- Options that map straight onto one config field: option = {field, parser}.
local breaker_fields = {
    failure_threshold = {"failure_threshold", opt_count},
    reset_timeout = {"reset_timeout_ns", opt_seconds},
    half_open_calls = {"half_open_calls", opt_count},
    success_threshold = {"success_threshold", opt_count},
    trial_timeout = {"trial_timeout_ns", opt_seconds},
    failure_rate = {"failure_rate", opt_ratio},
    slow_call = {"slow_call_ns", opt_seconds},
    slow_rate = {"slow_rate", opt_ratio},
    min_calls = {"min_calls", opt_count},
}

local breaker_setters = {
    window = window_setter,
    window_type = function(cfg, v, opts)
        if v == "count" then
            cfg.window_type = 0
        elseif v == "time" then
            cfg.window_type = 1
        else
            argerror("breaker", "window_type", "\"count\" or \"time\" expected, got "
                     .. (type(v) == "string" and '"' .. v .. '"' or typename(v)))
        end
        -- the window's unit follows its type
        if opts.window ~= nil then
            window_setter(cfg, opts.window, opts)
        end
    end,
    reset_backoff = function(cfg, v)
        if getmetatable(v) ~= Backoff then
            argerror("breaker", "reset_backoff", "buttress.backoff expected, got "
                     .. typename(v))
        end
        cfg.use_reset_backoff = 1
        cfg.reset_backoff = deep_copy(v._cfg)
    end,
}
for option, spec in pairs(breaker_fields) do
    local field, parse = spec[1], spec[2]
    breaker_setters[option] = function(cfg, v) cfg[field] = parse("breaker", option, v) end
end

local breaker_skip = {
    name = true, is_failure = true, fallback = true, on_state_change = true,
    clock = true, shared = true,
}

local function same_config(a, b)
    for k, v in pairs(a) do
        if type(v) == "table" then
            if type(b[k]) ~= "table" or not same_config(v, b[k]) then
                return false
            end
        elseif b[k] ~= v then
            return false
        end
    end
    return true
end

-- The default verdict: fn raised, or returned nil plus a non-nil error.
local function default_is_failure(ok, a, b)
    if not ok then
        return true
    end
    return a == nil and b ~= nil
end
_M.default_is_failure = default_is_failure

-- buttress.breaker{ name = "payments", failure_threshold = 5, ... }
-- A named breaker is registered: asking again for the same name with the
-- same settings gives the same breaker (state survives per-request code).
local function new_breaker(opts)
    if type(opts) ~= "table" then
        argerror("breaker", "options", "table expected, got " .. typename(opts))
    end
    local name = opts.name
    if name ~= nil and type(name) ~= "string" then
        argerror("breaker", "name", "string expected, got " .. typename(name))
    end
    local shared = opts.shared
    if shared ~= nil then
        if getmetatable(shared) ~= Region then
            argerror("breaker", "shared", "buttress.region expected, got " .. typename(shared))
        end
        if name == nil then
            argerror("breaker", "name", "a shared breaker needs a name")
        end
    end
    local cfg = build("breaker", opts, breaker_setters, B.breaker_defaults(),
                      B.breaker_check, breaker_skip)
    local is_failure = opt_func("breaker", "is_failure", opts.is_failure)
    local fallback = opt_func("breaker", "fallback", opts.fallback)
    local on_change = opt_func("breaker", "on_state_change", opts.on_state_change)
    local clock = opt_func("breaker", "clock", opts.clock)
    if name and registry[name] then
        local old = registry[name]
        if not same_config(cfg, old._cfg) or not same_config(old._cfg, cfg)
           or old.shared ~= shared then
            argerror("breaker", "name", "breaker '" .. name
                     .. "' exists with different settings")
        end
        return old
    end
    local h
    if shared then
        h = attach(shared, "breaker", name, cfg)
    else
        h = B.breaker_new(cfg)
    end
    local self = setmetatable({
        name = name or "breaker",
        shared = shared,
        _h = h,
        _cfg = cfg,
        _clock = clock,
        _created = (clock or now_ns)(),
        is_failure = is_failure or default_is_failure,
        fallback = fallback,
        on_state_change = on_change,
    }, Breaker)
    if name then
        registry[name] = self
    end
    return self
end

_M.breaker = public(new_breaker)

function _M.get(name)
    return registry[name]
end

-- Two-step form for OpenResty phases: allow() in access_by_lua, record()
-- in log_by_lua (no sleeping, no yielding needed).
function Breaker:allow()
    local rc, t, from, to = self._h:allow(self._clock)
    if to >= 0 then
        transition(self, from, to)
    end
    if rc == 0 then
        return t
    end
    return nil, open_error(self, t)
end

local outcomes = {
    [true] = SUCCESS, [false] = FAILURE, excluded = EXCLUDED, cancelled = CANCELLED,
}

-- ok: true | false | "excluded" | "cancelled"; duration in seconds, or nil
-- (the core then times the call only when its rules need it).
function Breaker:record(ticket, ok, duration)
    local outcome = outcomes[ok]
    if outcome == nil then
        argerror("record", "ok", "true, false, \"excluded\" or \"cancelled\" expected, got "
                 .. tostring(ok), 2)
    end
    local dur = call_seconds_ns("record", "duration", duration)
    local rc, from, to = self._h:record(ticket, outcome, dur, self._clock)
    if to >= 0 then
        transition(self, from, to)
    end
    if rc == 0 then
        return true
    end
    return nil, new_error("stale", "stale ticket: the breaker '" .. self.name
                          .. "' moved on since the call was admitted",
                          { breaker = self.name })
end

local function verdict_outcome(v)
    if v == true then
        return FAILURE
    elseif v == false or v == nil then
        return SUCCESS
    elseif v == "excluded" then
        return EXCLUDED
    end
    error("buttress: is_failure must return true, false or \"excluded\", got "
          .. tostring(v), 3)
end

local function finish(self, t, ok, ...)
    local is_failure = self.is_failure
    local outcome
    if is_failure == default_is_failure then
        -- the default rule, inlined: this is every call's path
        local a, b = ...
        if not ok or (a == nil and b ~= nil) then
            outcome = FAILURE
        else
            outcome = SUCCESS
        end
    else
        local vok, v = pcall(is_failure, ok, ...)
        if not vok then
            -- a broken predicate must not leak the ticket
            self._h:record(t, CANCELLED, NONE, self._clock)
            error(v, 0)
        end
        outcome = verdict_outcome(v)
    end
    local _, from, to = self._h:record(t, outcome, NONE, self._clock)
    if to >= 0 then
        transition(self, from, to)
    end
    if not ok then
        error((...), 0) -- fn's own error, unchanged
    end
    return ...
end

-- fn's results; rejected: nil, err (or the fallback's results).
function Breaker:call(fn, ...)
    if not callable(fn) then
        argerror("call", "fn", "function expected, got " .. typename(fn), 2)
    end
    local rc, t, from, to = self._h:allow(self._clock)
    if to >= 0 then
        transition(self, from, to)
    end
    if rc ~= 0 then
        local err = open_error(self, t)
        local fallback = self.fallback
        if fallback then
            return fallback(err, ...)
        end
        return nil, err
    end
    return finish(self, t, pcall(fn, ...))
end

function Breaker:wrap(fn)
    if not callable(fn) then
        argerror("wrap", "fn", "function expected, got " .. typename(fn), 2)
    end
    return function(...)
        return self:call(fn, ...)
    end
end

function Breaker:state()
    return state_name[self._h:state()]
end

local function manual(op)
    return function(self)
        local _, from, to = self._h[op](self._h, self._clock)
        if to >= 0 then
            transition(self, from, to)
        end
        return true
    end
end
Breaker.force_open = manual("force_open")
Breaker.disable = manual("disable")
Breaker.reset = manual("reset")

-- A snapshot: counters, state, transitions ("closed>open" = count), rates
-- over the window, latency in seconds, calls per second since creation.
function Breaker:metrics()
    local clock = self._clock or now_ns
    local t = clock()
    local m = self._h:metrics(t)
    local l = m.latency
    m.name = self.name
    m.state = state_name[m.state]
    m.latency = {
        count = l.count,
        p50 = l.p50_ns / NS, p95 = l.p95_ns / NS, p99 = l.p99_ns / NS,
        max = l.max_ns / NS, mean = l.mean_ns / NS,
    }
    local last = {}
    for k, v in pairs(m.last_transition_ns) do
        last[k] = ns_to_s(v)
    end
    m.last_transition = last -- monotonic seconds, nil when never
    m.last_transition_ns = nil
    if m.open_until_ns >= 0 and m.open_until_ns > t then
        m.retry_after = (m.open_until_ns - t) / NS
    end
    m.open_until_ns = nil
    local elapsed = (t - self._created) / NS
    m.calls_per_second = elapsed > 0 and m.calls / elapsed or 0
    return m
end

function Breaker:config()
    local c = self._cfg
    return {
        failure_threshold = c.failure_threshold,
        reset_timeout = c.reset_timeout_ns / NS,
        half_open_calls = c.half_open_calls,
        success_threshold = c.success_threshold,
        trial_timeout = ns_to_s(c.trial_timeout_ns),
        failure_rate = c.failure_rate,
        slow_call = ns_to_s(c.slow_call_ns),
        slow_rate = c.slow_rate,
        window_type = c.window_type == 1 and "time" or "count",
        window = c.window_type == 1 and c.window_ns / NS or c.window_size,
        min_calls = c.min_calls,
    }
end

----------------------------------------------------------------- retry

local Retry = {}
Retry.__index = Retry

-- Active retry calls per coroutine (the innermost first): an inner call
-- inherits the outer deadline, r:remaining() reads it.  Weak keys: a
-- request coroutine that dies mid-call leaves nothing behind.
local active = setmetatable({}, { __mode = "k" })
local MAIN = {} -- LuaJIT's coroutine.running() is nil on the main thread

local function co_key()
    local co = co_running()
    return co or MAIN
end

local function default_sleep()
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and ngx.sleep then
        return ngx.sleep
    end
    return B.sleep
end

local giveup_kind = { [EXHAUSTED] = "exhausted", [DEADLINE] = "deadline", [BUDGET] = "budget" }
local giveup_text = {
    [EXHAUSTED] = "retries exhausted after %d attempt(s)",
    [DEADLINE] = "deadline reached after %d attempt(s)",
    [BUDGET] = "retry budget exhausted after %d attempt(s)",
}

local function giveup_error(self, rc, cause, attempts, raised)
    local msg = format(giveup_text[rc] or "retry gave up after %d attempt(s)", attempts)
    if self.name then
        msg = self.name .. ": " .. msg
    end
    if cause ~= nil then
        msg = msg .. ": " .. tostring(cause)
    end
    return new_error(giveup_kind[rc] or B.errname(rc), msg, {
        cause = cause, attempts = attempts, raised = raised or nil, retry = self.name,
    })
end

local function default_retry_on(err)
    return not (getmetatable(err) == Error and err.kind == "open")
end

local retry_setters = backoff_setters("retry", "backoff")
retry_setters.attempts = function(cfg, v) cfg.attempts = opt_count("retry", "attempts", v) end
retry_setters.deadline = function(cfg, v) cfg.deadline_ns = opt_seconds("retry", "deadline", v) end
retry_setters.backoff = function(cfg, v)
    if getmetatable(v) ~= Backoff then
        argerror("retry", "backoff", "buttress.backoff expected, got " .. typename(v))
    end
    cfg.backoff = deep_copy(v._cfg)
end

local retry_skip = {
    name = true, budget = true, retry_after = true, is_failure = true, retry_on = true,
    before_sleep = true, sleep = true, clock = true, seed = true, breaker = true,
}

-- buttress.retry{ attempts = 3, base = 0.1, cap = 2, jitter = "full",
--                 deadline = 5, sleep = ngx.sleep, retry_after = fn, ... }
local function new_retry(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        argerror("retry", "options", "table expected, got " .. typename(opts))
    end
    if opts.backoff ~= nil then
        for _, k in ipairs { "base", "cap", "multiplier", "jitter" } do
            if opts[k] ~= nil then
                argerror("retry", k, "give either backoff or " .. k .. ", not both")
            end
        end
    end
    local cfg = build("retry", opts, retry_setters, B.retry_defaults(),
                      B.retry_check, retry_skip)
    local name = opts.name
    if name ~= nil and type(name) ~= "string" then
        argerror("retry", "name", "string expected, got " .. typename(name))
    end
    local budget = opts.budget
    if budget ~= nil and getmetatable(budget) ~= Budget then
        argerror("retry", "budget", "buttress.budget expected, got " .. typename(budget))
    end
    local br = opts.breaker
    if br ~= nil and getmetatable(br) ~= Breaker then
        argerror("retry", "breaker", "buttress.breaker expected, got " .. typename(br))
    end
    local seed = opts.seed
    if seed ~= nil then
        opt_count("retry", "seed", seed)
    end
    return setmetatable({
        name = name,
        _h = B.retry_new(cfg, seed),
        _cfg = cfg,
        _budget = budget and budget._h,
        _breaker = br,
        _clock = opt_func("retry", "clock", opts.clock),
        sleep = opt_func("retry", "sleep", opts.sleep),
        retry_after = opt_func("retry", "retry_after", opts.retry_after),
        is_failure = opt_func("retry", "is_failure", opts.is_failure) or default_is_failure,
        retry_on = opt_func("retry", "retry_on", opts.retry_on) or default_retry_on,
        before_sleep = opt_func("retry", "before_sleep", opts.before_sleep),
    }, Retry)
end

_M.retry = public(new_retry)

local function pop(frame)
    active[frame.key] = frame.prev
end

-- One attempt has ended with (ok, ...): return its results, or go again.
-- Tail calls keep the stack flat however many attempts there are.
local function settle(self, frame, fn, args, ok, ...)
    local failed
    local is_failure = self.is_failure
    if is_failure == default_is_failure then
        failed = default_is_failure(ok, ...)
    else
        local vok, v = pcall(is_failure, ok, ...)
        if not vok then
            pop(frame)
            self._h:finish(frame.call, FAILURE)
            error(v, 0)
        end
        failed = verdict_outcome(v) == FAILURE
    end
    if not failed then
        pop(frame)
        self._h:finish(frame.call, SUCCESS)
        if not ok then
            error((...), 0)
        end
        return ...
    end
    local err
    if ok then
        err = select(2, ...)
    else
        err = (...)
    end
    local retry_on = self.retry_on
    local rok, again = pcall(retry_on, err)
    if not rok or not again then
        pop(frame)
        self._h:finish(frame.call, FAILURE)
        if not rok then
            error(again, 0)
        end
        if not ok then
            error(err, 0)
        end
        return ...
    end
    local override = NONE
    local retry_after = self.retry_after
    if retry_after then
        local aok, secs = pcall(retry_after, err)
        if aok and type(secs) == "number" and secs >= 0 and secs < huge then
            override = floor(secs * NS + 0.5)
        end
    end
    local clock = self._clock or now_ns
    local call = frame.call
    local attempt = call:attempt()
    local rc, delay = self._h:next(call, self._budget, override, clock())
    if rc ~= 0 then
        pop(frame)
        return nil, giveup_error(self, rc, err, attempt, not ok)
    end
    local before = self.before_sleep
    if before then
        local bok, berr = pcall(before, {
            attempt = attempt, delay = delay / NS, error = err, retry = self,
        })
        if not bok then
            log_error("buttress: before_sleep failed: " .. tostring(berr))
        end
    end
    if delay > 0 then -- a zero delay never sleeps (a sleep(0) still costs)
        local sleep = self.sleep or default_sleep()
        local sok, serr = pcall(sleep, delay / NS)
        if not sok then
            pop(frame)
            error(serr, 0)
        end
    end
    return settle(self, frame, fn, args, pcall(fn, unpack(args, 1, args.n)))
end

-- fn's results; given up: nil, err (err.kind "exhausted" | "deadline" |
-- "budget", err.cause the last error).  A failure retry_on refuses comes
-- back as fn gave it (raised errors are raised again).
function Retry:call(fn, ...)
    if not callable(fn) then
        argerror("call", "fn", "function expected, got " .. typename(fn), 2)
    end
    local br = self._breaker
    if br then
        local inner = fn
        fn = function(...)
            return br:call(inner, ...)
        end
    end
    local clock = self._clock or now_ns
    local key = co_key()
    local outer = active[key]
    local rc, call = self._h:begin(self._budget, outer and outer.deadline or NONE, clock())
    if rc ~= 0 then
        return nil, giveup_error(self, rc, nil, 0)
    end
    local frame = { call = call, deadline = call:deadline(), prev = outer, key = key }
    active[key] = frame
    local args = { n = select("#", ...), ... }
    return settle(self, frame, fn, args, pcall(fn, ...))
end

function Retry:wrap(fn)
    if not callable(fn) then
        argerror("wrap", "fn", "function expected, got " .. typename(fn), 2)
    end
    return function(...)
        return self:call(fn, ...)
    end
end

-- Seconds left before the innermost active deadline of the running
-- coroutine, or nil: pass it on as a cosocket / HTTP timeout.
local function remaining(clock)
    local frame = active[co_key()]
    if not frame or frame.deadline < 0 then
        return nil
    end
    local ns = frame.call:remaining((clock or now_ns)())
    return ns_to_s(ns)
end

function Retry:remaining()
    return remaining(self._clock)
end

function _M.remaining()
    return remaining(nil)
end

function Retry:metrics()
    local m = self._h:metrics()
    m.name = self.name
    return m
end

function Retry:config()
    local c = self._cfg
    local b = c.backoff
    return {
        attempts = c.attempts,
        deadline = ns_to_s(c.deadline_ns),
        base = b.base_ns / NS,
        cap = b.cap_ns / NS,
        multiplier = b.multiplier,
        jitter = B.jitter_name(b.jitter),
    }
end

----------------------------------------------------------- module level

-- The defaults, read from the core's *_config_init (never written here).
function _M.defaults()
    local b = B.breaker_defaults()
    local r = B.retry_defaults()
    local g = B.budget_defaults()
    return {
        breaker = {
            failure_threshold = b.failure_threshold,
            reset_timeout = b.reset_timeout_ns / NS,
            half_open_calls = b.half_open_calls,
            success_threshold = b.success_threshold,
            trial_timeout = ns_to_s(b.trial_timeout_ns),
            failure_rate = b.failure_rate,
            slow_call = ns_to_s(b.slow_call_ns),
            slow_rate = b.slow_rate,
            window = b.window_size,
            window_type = b.window_type == 1 and "time" or "count",
            min_calls = b.min_calls,
        },
        retry = {
            attempts = r.attempts,
            deadline = ns_to_s(r.deadline_ns),
            base = r.backoff.base_ns / NS,
            cap = r.backoff.cap_ns / NS,
            multiplier = r.backoff.multiplier,
            jitter = B.jitter_name(r.backoff.jitter),
        },
        budget = {
            ratio = g.ratio,
            min_per_second = g.min_per_second,
            window = g.window_ns / NS,
        },
    }
end

-- Monotonic seconds (the core's clock; never ngx.now(), a cached wall clock).
function _M.now()
    return now_ns() / NS
end

-- Metrics of every named breaker, by name.
function _M.metrics()
    local out = {}
    for name, br in pairs(registry) do
        out[name] = br:metrics()
    end
    return out
end

local function label(v)
    return (tostring(v):gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local function num(v)
    if v ~= v then
        return "NaN"
    end
    return format("%.17g", v)
end

local prom_states = { "closed", "open", "half_open", "forced_open", "disabled" }

-- Every named breaker in the Prometheus text exposition format (version
-- 0.0.4): serve it from a location with content_by_lua.
function _M.prometheus()
    local names = {}
    for name in pairs(registry) do
        names[#names + 1] = name
    end
    sort(names)
    local snaps = {}
    for i, name in ipairs(names) do
        snaps[i] = registry[name]:metrics()
    end
    local out = {}
    local function family(metric, kind, help, each)
        out[#out + 1] = "# HELP " .. metric .. " " .. help
        out[#out + 1] = "# TYPE " .. metric .. " " .. kind
        for i, name in ipairs(names) do
            each(snaps[i], 'breaker="' .. label(name) .. '"')
        end
    end
    local function line(metric, labels, v)
        out[#out + 1] = metric .. "{" .. labels .. "} " .. num(v)
    end
    family("buttress_breaker_calls_total", "counter", "Outcomes recorded, by outcome.",
           function(m, l)
               for _, o in ipairs { "successes", "failures", "excluded", "cancelled", "stale" } do
                   line("buttress_breaker_calls_total", l .. ',outcome="' .. o .. '"', m[o])
               end
           end)
    family("buttress_breaker_rejected_total", "counter", "Calls rejected while open.",
           function(m, l) line("buttress_breaker_rejected_total", l, m.rejected) end)
    family("buttress_breaker_slow_total", "counter", "Calls at or over slow_call.",
           function(m, l) line("buttress_breaker_slow_total", l, m.slow) end)
    family("buttress_breaker_state", "gauge", "1 for the current state.",
           function(m, l)
               for _, st in ipairs(prom_states) do
                   line("buttress_breaker_state", l .. ',state="' .. st .. '"',
                        m.state == st and 1 or 0)
               end
           end)
    family("buttress_breaker_transitions_total", "counter", "State changes, by edge.",
           function(m, l)
               local edges = {}
               for k in pairs(m.transitions) do
                   edges[#edges + 1] = k
               end
               sort(edges)
               for _, k in ipairs(edges) do
                   local from, to = k:match("^(.-)>(.*)$")
                   line("buttress_breaker_transitions_total",
                        l .. ',from="' .. from .. '",to="' .. to .. '"', m.transitions[k])
               end
           end)
    family("buttress_breaker_failure_rate", "gauge", "Failure rate over the window.",
           function(m, l) line("buttress_breaker_failure_rate", l, m.failure_rate) end)
    family("buttress_breaker_slow_rate", "gauge", "Slow-call rate over the window.",
           function(m, l) line("buttress_breaker_slow_rate", l, m.slow_rate) end)
    family("buttress_breaker_latency_seconds", "summary", "Latency of timed calls.",
           function(m, l)
               local lat = m.latency
               for _, q in ipairs { { "0.5", lat.p50 }, { "0.95", lat.p95 }, { "0.99", lat.p99 } } do
                   line("buttress_breaker_latency_seconds", l .. ',quantile="' .. q[1] .. '"', q[2])
               end
               out[#out + 1] = "buttress_breaker_latency_seconds_sum{" .. l .. "} "
                               .. num(lat.mean * lat.count)
               out[#out + 1] = "buttress_breaker_latency_seconds_count{" .. l .. "} "
                               .. num(lat.count)
           end)
    out[#out + 1] = ""
    return concat(out, "\n")
end

_M.sleep = B.sleep
_M.core = B

return _M
