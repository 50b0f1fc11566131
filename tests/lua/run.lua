-- The Lua test runner: no dependencies, runs under lua5.4 (C module) and
-- luajit (FFI).  Each tests/lua/test_*.lua gets the runner table T and
-- registers tests with T.test(name, fn).  Ends with "N passed, N failed".
--
--   lua5.4 tests/lua/run.lua [pattern]      (from the repository root,
--   luajit tests/lua/run.lua [pattern]       LUA_PATH with lua/?.lua)

local dir = (arg and arg[0] or "tests/lua/run.lua"):match("^(.*)/[^/]*$") or "."
local pattern = arg and arg[1]

local T = { dir = dir, interp = arg and arg[-1] or "lua", skipped = {} }
local tests = {}

function T.test(name, fn)
    tests[#tests + 1] = { name = T.file .. ": " .. name, fn = fn }
end

function T.skip(name, why)
    tests[#tests + 1] = { name = T.file .. ": " .. name, skip = why }
end

local function show(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end

function T.eq(got, want, what)
    if got ~= want then
        error((what and what .. ": " or "") .. "expected " .. show(want) .. ", got "
              .. show(got), 2)
    end
end

function T.ok(v, what)
    if not v then
        error(what or "expected a true value", 2)
    end
    return v
end

function T.near(got, want, tol, what)
    if type(got) ~= "number" or math.abs(got - want) > tol then
        error((what and what .. ": " or "") .. "expected " .. tostring(want) .. " +- "
              .. tostring(tol) .. ", got " .. tostring(got), 2)
    end
end

-- fn must raise an error whose message contains `find` (plain text).
function T.raises(fn, find, what)
    local ok, err = pcall(fn)
    if ok then
        error((what and what .. ": " or "") .. "expected an error", 2)
    end
    if find and not tostring(err):find(find, 1, true) then
        error((what and what .. ": " or "") .. "error " .. show(tostring(err))
              .. " does not mention " .. show(find), 2)
    end
    return err
end

-- Files in a directory, sorted (ls: no lfs needed).
function T.ls(path, suffix)
    local out = {}
    local p = io.popen('ls -1 "' .. path .. '" 2>/dev/null')
    if p then
        for name in p:lines() do
            if not suffix or name:sub(-#suffix) == suffix then
                out[#out + 1] = name
            end
        end
        p:close()
    end
    table.sort(out)
    return out
end

-- os.execute's status in both 5.1 (a number) and 5.2+ (true/nil, how, code).
function T.execute(cmd)
    local a, _, c = os.execute(cmd)
    if type(a) == "number" then
        return a == 0, a
    end
    return a == true, c
end

-- A clock the test drives: c.fn() returns c.ns.
function T.clock(ns)
    local c = { ns = ns or 0 }
    c.fn = function()
        return c.ns
    end
    return c
end

T.buttress = require "buttress"

-- buttress's log lines (one per state change, ...) would go to stderr:
-- keep the last ones in T.logs instead ($BUTTRESS_TEST_LOG=1 shows them).
-- Tests that check logging set a logger of their own and restore T.logger.
T.logs = {}
function T.logger(level, msg, fields)
    if #T.logs >= 1000 then
        T.logs = {}
    end
    T.logs[#T.logs + 1] = { level = level, msg = msg, fields = fields }
end
if T.buttress.set_logger and (os.getenv("BUTTRESS_TEST_LOG") or "") == "" then
    T.buttress.set_logger(T.logger)
end
T.jit = rawget(_G, "jit") ~= nil

for _, f in ipairs(T.ls(dir, ".lua")) do
    if f:match("^test_") then
        T.file = f
        local chunk = assert(loadfile(dir .. "/" .. f))
        chunk(T)
    end
end

local passed, failed, skipped = 0, 0, 0
for _, t in ipairs(tests) do
    if pattern and not t.name:find(pattern, 1, true) then
        -- not selected
    elseif t.skip then
        skipped = skipped + 1
        print("SKIP " .. t.name .. ": " .. t.skip)
    else
        local ok, err = xpcall(t.fn, debug.traceback)
        if ok then
            passed = passed + 1
        else
            failed = failed + 1
            print("FAIL " .. t.name .. "\n  " .. tostring(err):gsub("\n", "\n  "))
        end
    end
end

print(string.format("backend %s on %s", T.buttress.backend, _VERSION
      .. (T.jit and (" / " .. jit.version) or "")))
if skipped > 0 then
    print(string.format("%d passed, %d failed, %d skipped", passed, failed, skipped))
else
    print(string.format("%d passed, %d failed", passed, failed))
end
os.exit(failed == 0 and 0 or 1)
