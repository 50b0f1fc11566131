# Lua bindings: included by the top Makefile (`-include bindings/lua/lua.mk`).
#
#   make lua        the C module for Lua 5.4 ($(BUILD)/lua/buttress/core.so),
#                   the same module built against LuaJIT through the compat
#                   header ($(BUILD)/luajit/buttress/core.so) and
#                   libbuttress.so for the FFI path
#   make cdef       regenerate lua/buttress/cdef.lua from core/buttress.h
#   make test-lua   tests/lua under lua5.4 (C module) and luajit (FFI, then
#                   the C module built for LuaJIT)
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

.PHONY: lua cdef test-lua test-nginx bench-lua

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

test-nginx: lua
	@BUTTRESS_LIB=$(abspath $(LIB_SO)) $(PYTHON) tests/nginx/test_nginx.py

bench-lua: lua
	@BUTTRESS_LIB=$(abspath $(LIB_SO)) BUILD=$(BUILD) sh bench/lua/run.sh
