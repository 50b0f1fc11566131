-- LuaRocks: from the repository root,
--
--   luarocks make bindings/lua/buttress-scm-1.rockspec      [--lua-version 5.1 | 5.4]
--
-- builds both paths: buttress.core (the C module, for Lua 5.1-5.4 and
-- LuaJIT) and libbuttress (the shared library that the LuaJIT FFI path
-- finds through package.cpath), and installs them with buttress,
-- buttress.ffi and buttress.cdef.  tests/lua/test_rockspec.lua runs it
-- into a private tree; tests/lua checks that the source lists below name
-- every core/*.c.
rockspec_format = "3.0"
package = "buttress"
version = "scm-1"

-- There is no public repository yet: this URL is a placeholder (.invalid
-- is a reserved name that resolves nowhere) and must be replaced by the
-- published one when the project is published.  `luarocks make` from a
-- checkout never reads it; `luarocks install buttress` cannot work before.
source = {
   url = "git+https://buttress.invalid/buttress.git",
}

description = {
   summary = "Retry with backoff, circuit breakers, retry budgets and deadlines",
   detailed = [[
Fault-tolerance primitives in one small C11 core with lock-free atomics:
retry with exponential backoff and jitter, circuit breakers (consecutive
failures, failure and slow-call rates, half-open trials that expire),
retry budgets, deadlines and metrics.  Lua 5.4 uses a C module; LuaJIT and
OpenResty call the same core through the FFI.  Breaker state can live in
shared memory, one breaker for every nginx worker.
]],
   license = "MIT",
   labels = { "resilience", "circuit-breaker", "retry", "openresty" },
}

dependencies = {
   "lua >= 5.1",
}

-- (the rockspec sandbox has no ipairs: the list is written out twice)
build = {
   type = "builtin",
   modules = {
      ["buttress"] = "lua/buttress.lua",
      ["buttress.ffi"] = "lua/buttress/ffi.lua",
      ["buttress.cdef"] = "lua/buttress/cdef.lua",
      ["buttress.core"] = {
         sources = {
            "bindings/lua/lbuttress.c",
            "core/api.c", "core/backoff.c", "core/breaker.c", "core/budget.c",
            "core/clock.c", "core/histogram.c", "core/rate.c", "core/region.c", "core/retry.c",
            "core/window.c",
         },
         incdirs = { "core", "bindings/lua" },
         defines = { "_GNU_SOURCE" },
         libraries = { "pthread", "m" },
      },
      -- Not a Lua module: the library ffi.lua loads, installed on the
      -- cpath where its search finds it.
      ["libbuttress"] = {
         sources = {
            "core/api.c", "core/backoff.c", "core/breaker.c", "core/budget.c",
            "core/clock.c", "core/histogram.c", "core/rate.c", "core/region.c", "core/retry.c",
            "core/window.c",
         },
         incdirs = { "core" },
         defines = { "_GNU_SOURCE" },
         libraries = { "pthread", "m" },
      },
   },
}
