-- The rockspec builds and installs: `luarocks make` from a copy of the
-- checkout into a private tree, then a clean interpreter that sees only
-- that tree requires buttress and runs a breaker call, on the C module
-- (lua5.4) and on the FFI path (luajit, which finds the rock's
-- libbuttress.so on package.cpath).  Runs once, in the lua5.4 pass.

local T = ...

local NAME = "rockspec: luarocks make installs a working rock"

if _VERSION ~= "Lua 5.4" or T.jit then
    T.skip(NAME, "runs in the lua5.4 pass only")
    return
end
if (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) then
    T.skip(NAME, "not under valgrind (it builds the rock)")
    return
end
local CI = (os.getenv("CI") or "") ~= ""
if not T.execute("command -v luarocks >/dev/null 2>&1") and not CI then
    -- CI has it (.ci/deps.sh), so a missing luarocks fails there
    T.skip(NAME, "luarocks not installed (make deps)")
    return
end

local function sh_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    local ok, _, code = p:close()
    return ok == true or code == 0, out
end

-- A breaker call through require "buttress", in a clean environment that
-- sees nothing but the tree: prints "<backend> <result>".
local PROBE = [[
local b = require "buttress"
local br = b.breaker { name = "rock", failure_threshold = 2 }
local v = br:call(function(x) return x * 2 end, 21)
local _, err = br:call(function() return nil, "down" end)
assert(err == "down", tostring(err))
local t = assert(br:allow())
assert(br:record(t, true))
io.write(b.backend, " ", v, " ", br:metrics().calls, "\n")
]]

T.test(NAME, function()
    local p = assert(io.popen("mktemp -d /tmp/buttress-rock-XXXXXX"))
    local tmp = p:read("*l")
    p:close()
    assert(tmp and tmp ~= "", "mktemp failed")
    local ok, err = pcall(function()
        -- a copy: luarocks compiles in the source tree and leaves its .o
        -- files there; the checkout stays as it is
        local src, tree = tmp .. "/src", tmp .. "/tree"
        assert(T.execute("mkdir -p " .. sh_quote(src .. "/bindings")
                         .. " && cp -R core lua " .. sh_quote(src)
                         .. " && cp -R bindings/lua " .. sh_quote(src .. "/bindings/")))
        local built, log = capture("cd " .. sh_quote(src)
            .. " && luarocks make --lua-version 5.4 --tree " .. sh_quote(tree)
            .. " bindings/lua/buttress-scm-1.rockspec")
        T.ok(built, "luarocks make failed:\n" .. log)
        T.ok(log:find("is now installed", 1, true), "luarocks said:\n" .. log)

        local share, lib = tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4"
        for _, f in ipairs { share .. "/buttress.lua", share .. "/buttress/ffi.lua",
                             share .. "/buttress/cdef.lua", lib .. "/buttress/core.so",
                             lib .. "/libbuttress.so" } do
            T.ok(io.open(f, "rb"), "not installed: " .. f)
        end

        local lpath = share .. "/?.lua;" .. share .. "/?/init.lua"
        local cpath = lib .. "/?.so"
        -- env -i: no LUA_PATH, LUA_CPATH or BUTTRESS_LIB from this run
        local env = "env -i PATH=" .. sh_quote(os.getenv("PATH") or "/usr/bin:/bin")
        local ran, out = capture(env .. " LUA_PATH_5_4=" .. sh_quote(lpath)
            .. " LUA_CPATH_5_4=" .. sh_quote(cpath) .. " lua5.4 -e " .. sh_quote(PROBE))
        T.ok(ran, "lua5.4 with the rock:\n" .. out)
        T.eq(out, "c 42 3\n", "lua5.4 with the rock")

        if T.execute("command -v luajit >/dev/null 2>&1") then
            ran, out = capture(env .. " LUA_PATH=" .. sh_quote(lpath)
                .. " LUA_CPATH=" .. sh_quote(cpath) .. " luajit -e " .. sh_quote(PROBE))
            T.ok(ran, "luajit with the rock:\n" .. out)
            T.eq(out, "ffi 42 3\n", "luajit with the rock")
        end
    end)
    T.execute("rm -rf " .. sh_quote(tmp))
    assert(ok, err)
end)
