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

-- Latency sampling.  Timing a call costs two clock reads, more than the
-- rest of a closed breaker's success path, so calls that need no clock
-- (no slow-call rule, no time window, no deadline, no budget) are timed for
-- a random sample only: about one in 16, the gaps drawn uniformly from
-- 1..31 so that no periodic workload lines up with them (as the Python
-- binding does).  The first call is timed.  Each object has its own
-- Park-Miller generator: exact in doubles and in Lua 5.4 integers, no bit
-- operators needed, so the same code runs on LuaJIT and Lua 5.4.
local SAMPLE_SPAN = 31
local sampler_serial = 0

local function sampler_seed()
    sampler_serial = sampler_serial + 1
    return sampler_serial * 40503 % 2147483646 + 1 -- in [1, 2^31 - 2]
end

-- The number of calls until the next timed one, from self._rng.
local function sample_gap(self)
    local x = self._rng * 48271 % 2147483647
    self._rng = x
    return 1 + x % SAMPLE_SPAN
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

-- A name labels metrics and log lines: a non-empty string, or nil.
local function check_name(kind, name)
    if name ~= nil and type(name) ~= "string" then
        argerror(kind, "name", "string expected, got " .. typename(name))
    end
    if name == "" then
        argerror(kind, "name", "must not be empty (it labels metrics and logs); give a name or nil")
    end
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
    -- past BUTTRESS_MAX_DURATION_NS (2^62 ns, ~146 years) the two paths
    -- would disagree: the C module saturates, the FFI wraps to a negative
    if v * NS > 2 ^ 62 then
        argerror(fname, k, "too large: " .. tostring(v) .. " s", 3)
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
    if name ~= nil and name:find("\0", 1, true) then
        argerror("region", "name", "must not contain NUL bytes")
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
        if what == "name" and rc == EINVAL then
            argerror("region", "name", "\"/name\" expected (one leading slash, no other), got \""
                     .. name .. "\"")
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
    if name:find("\0", 1, true) then -- C would unlink the name cut at the NUL
        argerror("unlink_region", "name", "must not contain NUL bytes", 2)
    end
    return B.region_unlink(name) == 0
end

-- Find or create `name` in the region.  EBUSY: another process is creating
-- it right now; its slot is ready within moments.
attach = function(region, kind, name, cfg)
    -- C sees the name up to its first NUL: "a\0b" would attach to "a"
    if name == "" or name:find("\0", 1, true) then
        argerror(kind, "name", "a shared " .. kind .. " needs a non-empty name without NUL bytes")
    end
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

-- Named budgets and retry policies, for buttress.metrics: held weakly (an
-- object nobody uses any more leaves the report); of several live objects
-- with one name, the one made last is reported.
local weak_values = { __mode = "v" }
local budget_registry = setmetatable({}, weak_values)
local retry_registry = setmetatable({}, weak_values)

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
    check_name("budget", name)
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
    local self = setmetatable({
        name = name,
        _h = h,
        _clock = opt_func("budget", "clock", opts.clock),
    }, Budget)
    if name then
        budget_registry[name] = self
    end
    return self
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

------------------------------------------------------------------ logs

-- One line per breaker state change (level "warn"), per retry give-up
-- ("notice") and per retry ("debug", to a logger set with set_logger only):
-- names, states, counts and the correlation id, never argument values or
-- error messages (they may hold secrets).  Inside nginx through ngx.log;
-- elsewhere "warn" and "error" lines go to stderr.  Listener and callback
-- failures are "error" lines.
local logger -- nil: the default; false: off; else fn(level, message, fields)

local ngx_level = { error = "ERR", warn = "WARN", notice = "NOTICE", info = "INFO",
                    debug = "DEBUG" }

local function ngx_api()
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and type(ngx.log) == "function" then
        return ngx
    end
    return nil
end

local function default_log(level, msg)
    local ngx = ngx_api()
    if ngx then
        ngx.log(ngx[ngx_level[level]] or ngx.ERR, msg)
    elseif level == "warn" or level == "error" then
        io.stderr:write(msg, "\n")
    end
end

-- Would a line of this level go anywhere?  (Lines are built only then.)
local function log_wanted(level)
    if logger ~= nil then
        return logger ~= false
    end
    if level == "debug" then
        return false
    end
    return ngx_api() ~= nil or level == "warn" or level == "error"
end

local function emit(level, msg, fields)
    local lg = logger
    if lg == false then
        return
    end
    if lg == nil then
        return default_log(level, msg)
    end
    local ok, err = pcall(lg, level, msg, fields)
    if not ok then
        default_log("error", "buttress: logger failed: " .. tostring(err))
    end
end

local function log_error(msg, fields)
    emit("error", msg, fields or { event = "error" })
end

-- buttress.set_logger(fn): fn(level, message, fields) receives every line
-- (level "error" | "warn" | "notice" | "debug"; fields a table with
-- event, breaker, old, new, retry, reason, attempt, attempts, delay,
-- correlation_id); nil restores the default, false turns logging off.
-- Returns the previous logger (nil for the default).
function _M.set_logger(fn)
    if fn ~= nil and fn ~= false and not callable(fn) then
        argerror("set_logger", "fn", "function, false or nil expected, got "
                 .. typename(fn), 2)
    end
    local prev = logger
    logger = fn
    return prev
end

-- Correlation ids: set per coroutine with buttress.correlation(id, fn, ...);
-- inside nginx, without one, the request's $request_id.
local correlations = setmetatable({}, { __mode = "k" })
local MAIN_CO = {} -- LuaJIT's coroutine.running() is nil on the main thread

local function ngx_request_id(ngx)
    return ngx.var.request_id
end

local function correlation_id()
    local id = correlations[co_running() or MAIN_CO]
    if id ~= nil then
        return id
    end
    local ngx = ngx_api()
    if ngx then
        -- ngx.var raises outside a request (init_worker, timers)
        local ok, rid = pcall(ngx_request_id, ngx)
        if ok and type(rid) == "string" and rid ~= "" then
            return rid
        end
    end
    return nil
end
_M.correlation_id = correlation_id

local function correlation_end(key, prev, ok, ...)
    correlations[key] = prev
    if not ok then
        error((...), 0)
    end
    return ...
end

-- fn(...) with `id` as the correlation id of the log lines that the running
-- coroutine causes meanwhile; returns fn's results (errors pass through).
function _M.correlation(id, fn, ...)
    if id ~= nil and type(id) ~= "string" then
        argerror("correlation", "id", "string expected, got " .. typename(id), 2)
    end
    if not callable(fn) then
        argerror("correlation", "fn", "function expected, got " .. typename(fn), 2)
    end
    local key = co_running() or MAIN_CO
    local prev = correlations[key]
    correlations[key] = id
    return correlation_end(key, prev, pcall(fn, ...))
end

-- A log value: quoted, with quotes, backslashes and control characters
-- escaped, so that a name cannot forge or split a line.
local function quoted(v)
    return '"' .. tostring(v):gsub('[%c"\\]', function(c)
        if c == "\n" then
            return "\\n"
        elseif c == '"' or c == "\\" then
            return "\\" .. c
        end
        return format("\\%03d", c:byte())
    end) .. '"'
end

local function with_correlation(msg, fields)
    local cid = correlation_id()
    if cid ~= nil then
        fields.correlation_id = cid
        msg = msg .. " correlation_id=" .. quoted(cid)
    end
    return msg, fields
end

local function log_transition(self, old, new)
    if not log_wanted("warn") then
        return
    end
    local msg, fields = with_correlation(
        format("buttress: event=state_change breaker=%s old=%s new=%s",
               quoted(self.name), old, new),
        { event = "state_change", breaker = self.name, old = old, new = new })
    emit("warn", msg, fields)
end

-- Listeners run after the core committed the transition; one that raises
-- is logged and cannot break the breaker or the caller.
local function transition(self, from, to)
    local old, new = state_name[from], state_name[to]
    log_transition(self, old, new)
    local cb = self.on_state_change
    if cb then
        local ok, err = pcall(cb, self, old, new)
        if not ok then
            log_error("buttress: on_state_change of '" .. self.name
                      .. "' failed: " .. tostring(err),
                      { event = "listener_error", breaker = self.name, old = old, new = new })
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
    check_name("breaker", name)
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
        -- latency sampling: calls until the next timed one; a breaker whose
        -- rules need durations has every call timed by the core already
        _countdown = (cfg.slow_call_ns >= 0 or cfg.window_type == 1
                      or cfg.failure_rate > 0 or cfg.slow_rate > 0) and huge or 1,
        _rng = sampler_seed(),
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
-- in log_by_lua (no sleeping, no yielding needed).  Not sampled for latency
-- (this is the path of the 10 ns target): record(ticket, ok, duration)
-- feeds the latency when given a duration.
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

-- A verdict verdict_outcome accepts (checked first, so that a bad one can
-- give its ticket or retry frame back before the error is raised).
local function valid_verdict(v)
    return v == true or v == false or v == nil or v == "excluded"
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

-- Latency sampling has primitives of its own (the FFI path's
-- allow_sampled / record_sampled; on the C module, allow with sample =
-- true), so that the branch between a sampled call and the others is taken
-- here in the facade and never inside allow or record: under LuaJIT a side
-- trace that starts inside one of those and returns into Breaker:call or
-- finish cannot record their `...` (NYI: VARG below the trace's start), and
-- the sampled call would fall back to the interpreter.
local allow_sampled = B.breaker_allow_sampled or function(h, clock)
    return h:allow(clock, true)
end
local record_sampled = B.breaker_record_sampled or function(h, t, outcome, clock)
    return h:record(t, outcome, NONE, clock)
end

-- sampled: the call was admitted by allow_sampled.  The branch on it stays
-- in this function (see above): no helper that a trace could start in.
local function finish(self, t, sampled, ok, ...)
    local is_failure = self.is_failure
    local h, clock = self._h, self._clock
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
        if not vok or not valid_verdict(v) then
            -- a broken predicate or a bad verdict must not leak the ticket
            -- (a half-open permit would stay taken)
            if sampled then
                record_sampled(h, t, CANCELLED, clock)
            else
                h:record(t, CANCELLED, NONE, clock)
            end
            if not vok then
                error(v, 0)
            end
        end
        outcome = verdict_outcome(v)
    end
    local _, from, to
    if sampled then
        _, from, to = record_sampled(h, t, outcome, clock)
    else
        _, from, to = h:record(t, outcome, NONE, clock)
    end
    if to >= 0 then
        transition(self, from, to)
    end
    if not ok then
        error((...), 0) -- fn's own error, unchanged
    end
    return ...
end

-- A sampled call: timed from admission to outcome (two clock reads).
local function call_sampled(self, fn, ...)
    local rc, t, from, to = allow_sampled(self._h, self._clock)
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
    return finish(self, t, true, pcall(fn, ...))
end

-- fn's results; rejected: nil, err (or the fallback's results).
function Breaker:call(fn, ...)
    if not callable(fn) then
        argerror("call", "fn", "function expected, got " .. typename(fn), 2)
    end
    local n = self._countdown - 1
    if n <= 0 then
        self._countdown = sample_gap(self)
        return call_sampled(self, fn, ...)
    end
    self._countdown = n
    local rc, t, from, to = self._h:allow(self._clock)
    if to >= 0 then
        transition(self, from, to)
    end
    if rc ~= 0 then
        -- inline: a helper taking `...` costs Lua 5.4 about 20 ns here
        local err = open_error(self, t)
        local fallback = self.fallback
        if fallback then
            return fallback(err, ...)
        end
        return nil, err
    end
    return finish(self, t, false, pcall(fn, ...))
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
-- over the window, latency in seconds (timed and sampled calls), calls per
-- second over about the last minute (the core's meter).
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
    if m.state == "open" and m.open_until_ns >= 0 then
        m.open_until = m.open_until_ns / NS -- monotonic seconds, as in Python
    end
    if m.open_until_ns >= 0 and m.open_until_ns > t then
        m.retry_after = (m.open_until_ns - t) / NS
    end
    m.open_until_ns = nil
    -- m.calls_per_second: the core's, over about the last minute
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
    check_name("retry", name)
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
    local self = setmetatable({
        name = name,
        _h = B.retry_new(cfg, seed),
        _cfg = cfg,
        _budget = budget and budget._h,
        _breaker = br,
        _clock = opt_func("retry", "clock", opts.clock),
        -- whole calls are timed when begin() needs the clock anyway (a
        -- deadline, a budget), else sampled (see sample_gap)
        _timed = cfg.deadline_ns >= 0 or budget ~= nil,
        _countdown = 1,
        _rng = sampler_seed(),
        sleep = opt_func("retry", "sleep", opts.sleep),
        retry_after = opt_func("retry", "retry_after", opts.retry_after),
        is_failure = opt_func("retry", "is_failure", opts.is_failure) or default_is_failure,
        retry_on = opt_func("retry", "retry_on", opts.retry_on) or default_retry_on,
        before_sleep = opt_func("retry", "before_sleep", opts.before_sleep),
    }, Retry)
    if name then
        retry_registry[name] = self
    end
    return self
end

_M.retry = public(new_retry)

local function pop(frame)
    active[frame.key] = frame.prev
end

-- A whole call has ended: its time, when it was timed, feeds the latency
-- of the metrics (now: the clock reading when the caller has one).
local function observe(self, frame, now)
    local start = frame.start
    if start < 0 then
        return
    end
    if now == nil then
        local ok, t = pcall(frame.clock)
        if not ok or type(t) ~= "number" then
            return
        end
        now = t
    end
    local d = now - start
    self._h:observe(d > 0 and d or 0, now)
end

local giveup_reason = { [EXHAUSTED] = "attempts", [DEADLINE] = "deadline", [BUDGET] = "budget" }

-- One "notice" line per give-up: the reason is the label of the giveups_*
-- metrics (attempts, deadline, budget).
local function log_giveup(self, rc, attempts)
    if not log_wanted("notice") then
        return
    end
    local reason = giveup_reason[rc] or B.errname(rc)
    local fields = { event = "giveup", retry = self.name, reason = reason, attempts = attempts }
    local msg = "buttress: event=giveup"
    if self.name then
        msg = msg .. " retry=" .. quoted(self.name)
    end
    msg = msg .. " reason=" .. reason .. " attempts=" .. attempts
    local br = self._breaker
    if br then
        fields.breaker = br.name
        msg = msg .. " breaker=" .. quoted(br.name)
    end
    emit("notice", with_correlation(msg, fields))
end

-- One "debug" line per retry (to a logger set with set_logger only).
local function log_retry(self, attempt, delay)
    local fields = { event = "retry", retry = self.name, attempt = attempt, delay = delay }
    local msg = "buttress: event=retry"
    if self.name then
        msg = msg .. " retry=" .. quoted(self.name)
    end
    msg = msg .. format(" attempt=%d delay=%.3f", attempt, delay)
    emit("debug", with_correlation(msg, fields))
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
        if not valid_verdict(v) then
            -- leave no frame behind: later calls would inherit its deadline
            pop(frame)
            self._h:finish(frame.call, FAILURE)
        end
        failed = verdict_outcome(v) == FAILURE
    end
    if not failed then
        pop(frame)
        self._h:finish(frame.call, SUCCESS)
        observe(self, frame)
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
        observe(self, frame)
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
    local cok, now = pcall(clock)
    if not cok then
        pop(frame)
        self._h:finish(call, FAILURE)
        error(now, 0)
    end
    local rc, delay = self._h:next(call, self._budget, override, now)
    if rc ~= 0 then
        pop(frame)
        observe(self, frame, now)
        log_giveup(self, rc, attempt)
        return nil, giveup_error(self, rc, err, attempt, not ok)
    end
    if log_wanted("debug") then
        log_retry(self, attempt, delay / NS)
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
            self._h:finish(call, FAILURE)
            error(serr, 0)
        end
        if frame.deadline >= 0 then
            -- a late wake-up past the deadline ends the call with the last
            -- error, not with an attempt that has no time left
            cok, now = pcall(clock)
            if not cok then
                pop(frame)
                self._h:finish(call, FAILURE)
                error(now, 0)
            end
            rc = self._h:resume(call, now)
            if rc ~= 0 then
                pop(frame)
                observe(self, frame, now)
                log_giveup(self, rc, attempt)
                return nil, giveup_error(self, rc, err, attempt, not ok)
            end
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
    local outer_deadline = outer and outer.deadline or NONE
    -- the clock is read only when begin() needs it or the call is sampled
    local now = NONE
    if self._timed or outer_deadline >= 0 then
        now = clock()
    else
        local n = self._countdown - 1
        if n > 0 then
            self._countdown = n
        else
            self._countdown = sample_gap(self)
            now = clock()
        end
    end
    local rc, call = self._h:begin(self._budget, outer_deadline, now)
    if rc ~= 0 then
        log_giveup(self, rc, 0)
        return nil, giveup_error(self, rc, nil, 0)
    end
    -- the frame keeps the clock its deadline was computed with, so that
    -- buttress.remaining() agrees with a retry given a test clock
    local frame = { call = call, deadline = call:deadline(), prev = outer, key = key,
                    clock = clock, start = now }
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
local function remaining()
    local frame = active[co_key()]
    if not frame or frame.deadline < 0 then
        return nil
    end
    local ns = frame.call:remaining(frame.clock())
    return ns_to_s(ns)
end

function Retry:remaining()
    return remaining()
end

_M.remaining = remaining

-- Counters, give-ups by reason (giveups_attempts, giveups_deadline,
-- giveups_budget), calls per second (the core's meter) and the latency of
-- whole calls in seconds (sleeps included; timed or sampled calls).
function Retry:metrics()
    local clock = self._clock or now_ns
    local m = self._h:metrics(clock())
    local l = m.latency
    m.latency = {
        count = l.count,
        p50 = l.p50_ns / NS, p95 = l.p95_ns / NS, p99 = l.p99_ns / NS,
        max = l.max_ns / NS, mean = l.mean_ns / NS,
    }
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

---------------------------------------------------------------- metrics

-- buttress.metrics() (a call, as before): every named breaker's metrics,
-- by name.  buttress.metrics.snapshot(): every named breaker, retry policy
-- and budget, as in Python; buttress.metrics.prometheus(): the same in the
-- Prometheus text exposition format.  Per process: in nginx, a breaker in
-- a buttress.region reports the state every worker shares; anything else
-- (retry policies always) reports the worker that served the scrape.
local metrics = {}
_M.metrics = metrics

local function metrics_of(reg)
    local out = {}
    for name, obj in pairs(reg) do
        out[name] = obj:metrics()
    end
    return out
end

setmetatable(metrics, {
    __call = function()
        return metrics_of(registry)
    end,
})

function metrics.snapshot()
    return {
        breakers = metrics_of(registry),
        retries = metrics_of(retry_registry),
        budgets = metrics_of(budget_registry),
    }
end

-- Report `obj` (a breaker, retry policy or budget) under `name` (default:
-- its own).  Retry policies and budgets are held weakly, breakers for good
-- (the breaker registry also makes buttress.breaker{name=...} idempotent).
function metrics.register(obj, name)
    local mt = getmetatable(obj)
    local reg
    if mt == Breaker then
        reg = registry
    elseif mt == Retry then
        reg = retry_registry
    elseif mt == Budget then
        reg = budget_registry
    else
        argerror("register", "obj", "buttress.breaker, retry or budget expected, got "
                 .. typename(obj), 2)
    end
    if name == nil then
        name = obj.name
    end
    if type(name) ~= "string" then
        argerror("register", "name", "string expected, got " .. typename(name), 2)
    end
    reg[name] = obj
end

-- The Prometheus exposition: the metric names, labels and types of
-- Python's buttress.metrics.prometheus() (python/buttress/metrics.py).
-- Each spec: { field of metrics(), how, family name after buttress_<kind>_
-- (counters without _total), help }.
local prom_kinds = {
    { "breaker", function() return registry end, {
        { "calls", "counter", "calls", "Calls whose outcome was recorded (successes, "
          .. "failures, excluded, cancelled and stale)." },
        { "successes", "counter", "successes", "Calls recorded as successes." },
        { "failures", "counter", "failures", "Calls recorded as failures." },
        { "excluded", "counter", "excluded", "Calls recorded as excluded: neither success "
          .. "nor failure." },
        { "cancelled", "counter", "cancelled", "Calls recorded as cancelled (they never "
          .. "finished)." },
        { "stale", "counter", "stale", "Outcomes of calls admitted before a transition, "
          .. "ignored." },
        { "rejected", "counter", "rejected", "Calls rejected without being made (open "
          .. "circuit)." },
        { "slow", "counter", "slow", "Calls that took slow_call seconds or more." },
        { "state", "state", "state", "1 for the breaker's current state (label state), 0 "
          .. "for the others." },
        { "transitions", "edges", "transitions", "State transitions, by edge (labels from, "
          .. "to)." },
        { "last_transition", "edge_time", "last_transition_timestamp_seconds",
          "Unix time of the last transition, by edge (labels from, to)." },
        { "trips", "gauge", "trips", "Successive openings since the breaker last closed (0 "
          .. "when closed); all openings: transitions_total{to=\"open\"}." },
        { "consecutive_failures", "gauge", "consecutive_failures",
          "Current run of consecutive failures." },
        { "half_open_successes", "gauge", "half_open_successes",
          "Trial successes in the current half-open period." },
        { "window_calls", "gauge", "window_calls", "Calls in the window." },
        { "window_failures", "gauge", "window_failures", "Failures in the window." },
        { "window_slow", "gauge", "window_slow", "Slow calls in the window." },
        { "failure_rate", "gauge", "failure_rate", "Failures / calls in the window, 0 to 1." },
        { "slow_rate", "gauge", "slow_rate", "Slow calls / calls in the window, 0 to 1." },
        { "calls_per_second", "gauge", "calls_per_second",
          "Outcomes recorded per second over about the last minute." },
        { "latency", "summary", "latency_seconds", "Latency of the timed calls, seconds." },
    } },
    { "retry", function() return retry_registry end, {
        { "calls", "counter", "calls", "Calls of the function (each may make several "
          .. "attempts)." },
        { "attempts", "counter", "attempts", "Attempts: first attempts and retries." },
        { "retries", "counter", "retries", "Retries decided (each one after a backoff "
          .. "delay)." },
        { "successes", "counter", "successes", "Calls that ended in success." },
        { "failures", "counter", "failures", "Calls that ended with an error that is not "
          .. "retried." },
        { "giveups_", "reasons", "giveups", "Calls given up, by reason: attempts, deadline "
          .. "or budget." },
        { "calls_per_second", "gauge", "calls_per_second",
          "Calls per second, measured by the core." },
        { "latency", "summary", "latency_seconds", "Latency of the timed calls, seconds." },
    } },
    { "budget", function() return budget_registry end, {
        { "deposits", "counter", "deposits", "Calls counted by the budget." },
        { "withdrawals", "counter", "withdrawals", "Retries the budget allowed." },
        { "rejections", "counter", "rejections", "Retries the budget refused." },
        { "available", "gauge", "available", "Retries allowed right now." },
        { "window_calls", "gauge", "window_calls", "Calls in the budget's window." },
        { "window_retries", "gauge", "window_retries", "Retries in the budget's window." },
    } },
}

local prom_states = { "closed", "open", "half_open", "forced_open", "disabled" }
local prom_quantiles = { { "0.5", "p50" }, { "0.95", "p95" }, { "0.99", "p99" } }

local function prom_label(v)
    return (tostring(v):gsub('[\\\n"]', { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local function prom_help(v)
    return (v:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function prom_num(v)
    if v ~= v then
        return "NaN"
    elseif v == huge then
        return "+Inf"
    elseif v == -huge then
        return "-Inf"
    elseif v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
        return format("%d", v)
    end
    local s = format("%.15g", v)
    if tonumber(s) ~= v then
        s = format("%.17g", v)
    end
    return s
end

local function is_num(v)
    return type(v) == "number"
end

local function edges_of(t)
    local keys = {}
    for k in pairs(t or {}) do
        if type(k) == "string" and k:find(">", 1, true) then
            keys[#keys + 1] = k
        end
    end
    sort(keys)
    return keys
end

-- The families of one kind of object: { name, type, help, samples }, each
-- sample a { name, labels (a string), value } triple.  offset: Unix time
-- minus the monotonic clock, or nil (no last-transition timestamps).
local function prom_families(kind, objs, specs, offset, fams)
    local base = "buttress_" .. kind .. "_"
    local function family(name, typ, help)
        local f = { name = base .. name, type = typ, help = help, samples = {} }
        fams[#fams + 1] = f
        return f
    end
    local function add(f, sample, labels, v)
        f.samples[#f.samples + 1] = { sample, labels, v }
    end
    for _, sp in ipairs(specs) do
        local key, how, prom, help = sp[1], sp[2], sp[3], sp[4]
        if how == "counter" or how == "gauge" then
            local f = family(prom, how, help)
            local sample = how == "counter" and f.name .. "_total" or f.name
            for _, o in ipairs(objs) do
                local v = o.m[key]
                if is_num(v) then
                    add(f, sample, o.lab, v)
                end
            end
        elseif how == "state" then
            local f = family(prom, "gauge", help)
            for _, o in ipairs(objs) do
                local cur = o.m[key]
                if type(cur) == "string" then
                    local known = false
                    for _, st in ipairs(prom_states) do
                        add(f, f.name, o.lab .. ',state="' .. st .. '"', cur == st and 1 or 0)
                        known = known or cur == st
                    end
                    if not known then
                        add(f, f.name, o.lab .. ',state="' .. prom_label(cur) .. '"', 1)
                    end
                end
            end
        elseif how == "edges" or how == "edge_time" then
            local f = family(prom, how == "edges" and "counter" or "gauge", help)
            local sample = how == "edges" and f.name .. "_total" or f.name
            for _, o in ipairs(objs) do
                local t = o.m[key]
                for _, k in ipairs(edges_of(t)) do
                    local v = t[k]
                    local from, to = k:match("^(.-)>(.*)$")
                    local lab = o.lab .. ',from="' .. prom_label(from) .. '",to="'
                                .. prom_label(to) .. '"'
                    if how == "edges" and is_num(v) and v > 0 then
                        add(f, sample, lab, v)
                    elseif how == "edge_time" and is_num(v) and offset then
                        add(f, sample, lab, v + offset)
                    end
                end
            end
        elseif how == "reasons" then
            local f = family(prom, "counter", help)
            for _, o in ipairs(objs) do
                local reasons = {}
                for k, v in pairs(o.m) do
                    if type(k) == "string" and k:sub(1, #key) == key and is_num(v) then
                        reasons[#reasons + 1] = k
                    end
                end
                sort(reasons)
                for _, k in ipairs(reasons) do
                    add(f, f.name .. "_total",
                        o.lab .. ',reason="' .. prom_label(k:sub(#key + 1)) .. '"', o.m[k])
                end
            end
        elseif how == "summary" then
            local s = family(prom, "summary", help)
            local mx = family(prom:gsub("_seconds$", "") .. "_max_seconds", "gauge",
                              "Maximum of " .. key .. ".")
            for _, o in ipairs(objs) do
                local lat = o.m[key]
                if type(lat) == "table" and is_num(lat.count) then
                    local n = lat.count
                    for _, q in ipairs(prom_quantiles) do
                        local v = lat[q[2]]
                        if is_num(v) then
                            add(s, s.name, o.lab .. ',quantile="' .. q[1] .. '"',
                                n > 0 and v or 0 / 0)
                        end
                    end
                    if is_num(lat.mean) then
                        add(s, s.name .. "_sum", o.lab, lat.mean * n)
                    end
                    add(s, s.name .. "_count", o.lab, n)
                    if is_num(lat.max) then
                        add(mx, mx.name, o.lab, n > 0 and lat.max or 0 / 0)
                    end
                end
            end
        end
    end
end

-- Every named breaker, retry policy and budget in the Prometheus text
-- exposition format (version 0.0.4): the names, labels and types of
-- Python's buttress.metrics.prometheus().  Serve it with metrics.serve()
-- from an nginx location, or with CONTENT_TYPE elsewhere.
-- opts.unix_time (seconds, e.g. ngx.now()): the binding reads no wall
-- clock, so the last-transition timestamps (Unix time) are exported only
-- when the caller gives the time.
function metrics.prometheus(opts)
    local offset
    if opts ~= nil then
        if type(opts) ~= "table" then
            argerror("prometheus", "opts", "table expected, got " .. typename(opts), 2)
        end
        local wall = opts.unix_time
        if wall ~= nil then
            if type(wall) ~= "number" or wall ~= wall or wall == huge then
                argerror("prometheus", "unix_time", "number of seconds expected, got "
                         .. tostring(wall), 2)
            end
            offset = wall - now_ns() / NS
        end
    end
    local fams = {}
    for _, k in ipairs(prom_kinds) do
        local kind, reg, specs = k[1], k[2](), k[3]
        local names = {}
        for name in pairs(reg) do
            names[#names + 1] = name
        end
        sort(names)
        local objs = {}
        for i, name in ipairs(names) do
            objs[i] = { m = reg[name]:metrics(), lab = kind .. '="' .. prom_label(name) .. '"' }
        end
        if #objs > 0 then
            prom_families(kind, objs, specs, offset, fams)
        end
    end
    local out = {}
    for _, f in ipairs(fams) do
        if #f.samples > 0 then
            local head = f.type == "counter" and f.name .. "_total" or f.name
            out[#out + 1] = "# HELP " .. head .. " " .. prom_help(f.help)
            out[#out + 1] = "# TYPE " .. head .. " " .. f.type
            for _, smp in ipairs(f.samples) do
                out[#out + 1] = smp[1] .. "{" .. smp[2] .. "} " .. prom_num(smp[3])
            end
        end
    end
    if #out == 0 then
        return ""
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

metrics.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- content_by_lua_block { local m = require("buttress").metrics; m.serve{ unix_time = ngx.now() } }
function metrics.serve(opts)
    local ngx = rawget(_G, "ngx")
    local text = metrics.prometheus(opts)
    ngx.header["Content-Type"] = metrics.CONTENT_TYPE
    ngx.print(text)
end

_M.prometheus = metrics.prometheus -- the name of earlier versions

_M.sleep = B.sleep
_M.core = B

return _M
