-- The checked-in lua/buttress/cdef.lua is exactly what `make cdef` makes
-- from core/buttress.h today: a header change without `make cdef` fails.

local T = ...
local b = T.buttress

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

T.test("cdef: checked-in cdef.lua matches the header's FFI block", function()
    local p = assert(io.popen("sh bindings/lua/gencdef.sh core/buttress.h 2>&1"))
    local fresh = p:read("*a")
    p:close()
    local have = slurp("lua/buttress/cdef.lua")
    if fresh ~= have then
        -- name the first line that differs
        local n, a, c = 0, nil, nil
        local fl, hl = {}, {}
        for l in fresh:gmatch("[^\n]*") do fl[#fl + 1] = l end
        for l in have:gmatch("[^\n]*") do hl[#hl + 1] = l end
        for i = 1, math.max(#fl, #hl) do
            if fl[i] ~= hl[i] then
                n, a, c = i, fl[i], hl[i]
                break
            end
        end
        error("lua/buttress/cdef.lua drifted from core/buttress.h (run `make cdef`); line "
              .. tostring(n) .. ": header gives " .. string.format("%q", tostring(a))
              .. ", file has " .. string.format("%q", tostring(c)), 0)
    end
end)

T.test("cdef: the generated block is plain C (no BUTTRESS_API, no macros)", function()
    local have = slurp("lua/buttress/cdef.lua")
    T.ok(not have:find("BUTTRESS_API", 1, true), "BUTTRESS_API left in")
    T.ok(not have:find("__attribute__", 1, true), "attribute left in")
    T.ok(not have:find("#", 1, true), "a preprocessor line left in")
    T.ok(have:find("buttress_breaker_allow", 1, true), "prototypes missing")
end)

T.test("abi: the loaded core reports the ABI the binding was written for", function()
    T.eq(b.core.abi, 2)
end)

if T.jit then
    T.test("cdef: LuaJIT parses it and the layouts match the header's C view", function()
        local ffi = require "ffi"
        -- sizes a C compiler gives for the same structs
        local src = [[
#include <stdio.h>
#include "buttress.h"
int main(void) {
  printf("%zu %zu %zu %zu %zu\n", sizeof(buttress_ticket), sizeof(buttress_breaker_config),
         sizeof(buttress_breaker_metrics), sizeof(buttress_retry_call),
         sizeof(buttress_retry_config));
  return 0;
}
]]
        local dir = os.tmpname()
        os.remove(dir)
        assert(T.execute("mkdir -p " .. dir))
        local f = assert(io.open(dir .. "/s.c", "w"))
        f:write(src)
        f:close()
        assert(T.execute("cc -Icore -o " .. dir .. "/s " .. dir .. "/s.c"), "cc failed")
        local p = assert(io.popen(dir .. "/s"))
        local out = p:read("*a")
        p:close()
        T.execute("rm -rf " .. dir)
        require "buttress.ffi"
        local want = string.format("%d %d %d %d %d\n", ffi.sizeof("buttress_ticket"),
            ffi.sizeof("buttress_breaker_config"), ffi.sizeof("buttress_breaker_metrics"),
            ffi.sizeof("buttress_retry_call"), ffi.sizeof("buttress_retry_config"))
        T.eq(want, out)
    end)
end

T.test("rockspec: its source lists name every core/*.c", function()
    local spec = assert(io.open("bindings/lua/buttress-scm-1.rockspec")):read("*a")
    for _, f in ipairs(T.ls("core", ".c")) do
        T.ok(spec:find('"core/' .. f .. '"', 1, true), "rockspec misses core/" .. f)
    end
    for _, m in ipairs { "lua/buttress.lua", "lua/buttress/ffi.lua", "lua/buttress/cdef.lua",
                         "bindings/lua/lbuttress.c" } do
        T.ok(spec:find('"' .. m .. '"', 1, true), "rockspec misses " .. m)
    end
end)

if T.jit and b.backend == "ffi" then
    -- How the FFI path finds libbuttress.so, each way on its own.
    local lib = os.getenv("BUTTRESS_LIB")
    local dir = lib and lib:match("^(.*)/[^/]*$")
    local function run(env, code)
        return T.execute("env -u BUTTRESS_LIB " .. env .. " " .. T.interp .. " -e '"
                         .. code .. "' >/dev/null 2>&1")
    end
    T.test("ffi: finds libbuttress.so through package.cpath", function()
        T.ok(dir, "BUTTRESS_LIB not set by the test target")
        T.ok(run("LUA_CPATH='" .. dir .. "/?.so;;'",
                 'assert(require("buttress").breaker{}:state() == "closed")'))
    end)
    T.test("ffi: finds libbuttress.so through buttress.config", function()
        T.ok(run("LUA_CPATH=';;'", 'package.loaded["buttress.config"] = { lib = "'
                 .. lib .. '" }; assert(require("buttress").backend == "ffi")'))
    end)
    T.test("ffi: a missing library is a clear error at require", function()
        T.ok(not run("LUA_CPATH=';;' BUTTRESS_LIB=/nonexistent/libbuttress.so",
                     'require("buttress")'))
    end)
end

T.test("version: the binding reports the header's BUTTRESS_VERSION", function()
    local h = assert(io.open("core/buttress.h")):read("*a")
    T.eq(b._VERSION, h:match('#define BUTTRESS_VERSION "([^"]+)"'))
end)

if T.jit and b.backend == "ffi" then
    T.test("ffi: loading the module twice in one VM is harmless", function()
        local saved = package.loaded["buttress.ffi"]
        package.loaded["buttress.ffi"] = nil
        local ok, err = pcall(require, "buttress.ffi")
        package.loaded["buttress.ffi"] = saved
        T.ok(ok, tostring(err))
    end)
end
