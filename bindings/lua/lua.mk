# Lua bindings: included by the top Makefile (`-include bindings/lua/lua.mk`).
#
#   make lua        the C module for Lua 5.4 ($(BUILD)/lua/buttress/core.so),
#                   the same module built against LuaJIT through the compat
#                   header ($(BUILD)/luajit/buttress/core.so) and
#                   libbuttress.so for the FFI path
#   make cdef       regenerate lua/buttress/cdef.lua from core/buttress.h
#   make test-lua   tests/lua under lua5.4 (C module) and luajit (FFI, then
#                   the C module built for LuaJIT); the lua5.4 pass also
#                   builds the rockspec with `luarocks make` into a private
#                   tree and runs a breaker from it (test_rockspec.lua)
#   make valgrind-lua  tests/lua under lua5.4 and valgrind memcheck (make check
#                   runs it): no memory error, no definite or indirect leak
#   make test-nginx a real nginx with the lua module (tests/nginx)
#   make bench-lua  bench/lua (numbers, never a test)

LUA54 ?= lua5.4
LUAJIT ?= luajit
LUA54_CFLAGS ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUAJIT_CFLAGS ?= $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)

LUA_CMOD := $(BUILD)/lua/buttress/core.so
LUAJIT_CMOD := $(BUILD)/luajit/buttress/core.so
LUA_MOD_DEPS := bindings/lua/lbuttress.c bindings/lua/lbuttress_compat.h core/buttress.h $(LIB_A)

LUA_TESTS := test-lua test-nginx

.PHONY: lua cdef test-lua valgrind-lua test-nginx bench-lua

lua: $(LUA_CMOD) $(LUAJIT_CMOD) $(LIB_SO)

# The core is linked in statically and its symbols kept private to the
# module (--exclude-libs), so it never clashes with a libbuttress.so that
# the same process loads through the FFI.
$(LUA_CMOD): $(LUA_MOD_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LUA54_CFLAGS) -shared -o $@ bindings/lua/lbuttress.c \
	  $(LIB_A) -Wl,--exclude-libs,ALL $(ALL_LDFLAGS) -lpthread -lm

$(LUAJIT_CMOD): $(LUA_MOD_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -shared -o $@ bindings/lua/lbuttress.c \
	  $(LIB_A) -Wl,--exclude-libs,ALL $(ALL_LDFLAGS) -lpthread -lm

cdef:
	CC="$(CC)" sh bindings/lua/gencdef.sh core/buttress.h > lua/buttress/cdef.lua.tmp
	mv lua/buttress/cdef.lua.tmp lua/buttress/cdef.lua

LUA_TEST_ENV = BUTTRESS_LIB=$(abspath $(LIB_SO)) BUTTRESS_SCENARIOS=tests/scenarios \
  LUA_PATH="lua/?.lua;tests/lua/?.lua;;" LUA_PATH_5_4="lua/?.lua;tests/lua/?.lua;;"

test-lua: lua
	@failed=0; \
	echo "== lua5.4 (C module)"; \
	$(LUA_TEST_ENV) LUA_CPATH_5_4="$(BUILD)/lua/?.so;;" \
	  $(LUA54) tests/lua/run.lua || failed=1; \
	echo "== luajit (FFI)"; \
	$(LUA_TEST_ENV) $(LUAJIT) tests/lua/run.lua || failed=1; \
	echo "== luajit (C module through the compat header)"; \
	$(LUA_TEST_ENV) LUA_CPATH="$(BUILD)/luajit/?.so;;" BUTTRESS_BACKEND=c \
	  $(LUAJIT) tests/lua/run.lua || failed=1; \
	exit $$failed

# The Lua 5.4 suite (C module) under valgrind memcheck.  LUA_INIT_5_4 makes
# the runner's os.exit close the Lua state first, so every userdata is
# finalised and freed and a leak left by the module shows as a definite one.
# The resource checks run at 1/1000 of their counts; tests/lua/valgrind.supp
# is read when it exists (known noise of lua5.4 or ld.so, none needed today).
VALGRIND ?= valgrind
VALGRIND_LUA_FLAGS ?= --error-exitcode=1 --leak-check=full \
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
  --track-origins=yes --keep-debuginfo=yes $(if $(wildcard tests/lua/valgrind.supp),--suppressions=tests/lua/valgrind.supp)

valgrind-lua: lua
	@command -v $(VALGRIND) >/dev/null 2>&1 || { echo "valgrind-lua: no valgrind (make deps)"; exit 1; }
	@echo "== lua5.4 (C module) under valgrind memcheck"
	@$(LUA_TEST_ENV) LUA_CPATH_5_4="$(BUILD)/lua/?.so;;" BUTTRESS_RESOURCE_SCALE=0.001 \
	  LUA_INIT_5_4='local exit = os.exit; os.exit = function(c) return exit(c, true) end' \
	  $(VALGRIND) $(VALGRIND_LUA_FLAGS) $(LUA54) tests/lua/run.lua

test-nginx: lua
	@failed=0; for t in tests/nginx/test_*.py; do \
	  BUTTRESS_LIB=$(abspath $(LIB_SO)) $(PYTHON) $$t || failed=1; \
	done; exit $$failed

bench-lua: lua
	@BUTTRESS_LIB=$(abspath $(LIB_SO)) BUILD=$(BUILD) sh bench/lua/run.sh
