-- The OpenResty side of tests/nginx/test_observability.py: breakers and a
-- retry policy whose metrics a /metrics location serves, and state changes
-- made in a request, a timer and init_worker (the last two without
-- ngx.var: their log lines carry no request id).

local buttress = require "buttress"

local ngx = ngx

local _M = {}

-- Made once per worker, at module load: per-request code gets the same
-- objects (a named breaker is also returned again by buttress.breaker).
local upstream = buttress.breaker { name = "obs-upstream", failure_threshold = 2,
                                    reset_timeout = 1 }
local odd = buttress.breaker { name = 'obs "odd"\\name\nline2' }
local timer_br = buttress.breaker { name = "obs-timer" }
local init_br = buttress.breaker { name = "obs-init" }
local retry = buttress.retry { name = "obs-retry", attempts = 3, base = 0.05,
                               jitter = "none" } -- sleeps with ngx.sleep
-- retry policies and budgets are reported while something holds them
_M.budget = buttress.budget { name = "obs-budget" }

-- /call?fail=1: br:call; the error message must never reach the log.
function _M.call()
    local fail = ngx.var.arg_fail == "1"
    local res, err = upstream:call(function()
        if fail then
            return nil, "secret-upstream-error"
        end
        return "ok"
    end)
    if res then
        ngx.say("ok")
    elseif type(err) == "table" and err.kind == "open" then
        ngx.status = 503
        ngx.say("circuit open")
    else
        ngx.status = 502
        ngx.say("failed")
    end
    odd:call(function() return true end)
end

-- /retry?fail=1: three attempts, two ngx.sleep waits, then a give-up.
function _M.retry()
    local fail = ngx.var.arg_fail == "1"
    local res, err = retry:call(function(secret)
        if fail then
            return nil, "secret-retry-error " .. secret
        end
        return "ok"
    end, "secret-argument")
    if res then
        ngx.say("ok")
    else
        ngx.status = 503
        ngx.say(err.kind)
    end
end

-- /timer: a state change from a timer, where ngx.var raises.
function _M.timer()
    local ok, err = ngx.timer.at(0, function(premature)
        if not premature then
            timer_br:force_open()
        end
    end)
    ngx.say(ok and "scheduled" or ("timer failed: " .. tostring(err)))
end

-- init_worker_by_lua: a state change there, and back.
function _M.init_worker()
    init_br:force_open()
    init_br:reset()
end

function _M.metrics()
    buttress.metrics.serve { unix_time = ngx.now() }
end

return _M
