-- The baseline: a straightforward table-based circuit breaker in pure Lua,
-- the kind written inline in many OpenResty apps.  Single-threaded state in
-- a table, no generations, no trial permits, no metrics: only what the
-- benchmark compares against.

local pcall = pcall
local setmetatable = setmetatable

local M = {}
M.__index = M

function M.new(threshold, timeout, clock)
    return setmetatable({
        state = "closed", failures = 0, opened = 0,
        threshold = threshold, timeout = timeout, clock = clock,
    }, M)
end

function M:allow()
    if self.state == "open" then
        if self.clock() - self.opened < self.timeout then
            return false
        end
        self.state = "half_open"
    end
    return true
end

function M:record(ok)
    if ok then
        self.failures = 0
        if self.state == "half_open" then
            self.state = "closed"
        end
    else
        self.failures = self.failures + 1
        if self.state == "half_open" or self.failures >= self.threshold then
            self.state = "open"
            self.opened = self.clock()
        end
    end
end

local function finish(self, ok, ...)
    local a, b = ...
    self:record(ok and not (a == nil and b ~= nil))
    if not ok then
        error(a, 0)
    end
    return ...
end

function M:call(fn, ...)
    if not self:allow() then
        return nil, "open"
    end
    return finish(self, pcall(fn, ...))
end

return M
