# buttress: one C core, bindings for Python and Lua.
# `make test` installs what it needs (Debian packages via .ci/deps.sh, Python
# packages with pip) and runs every suite.  `make help` lists the targets.

CC ?= cc
PREFIX ?= /usr/local
BUILD ?= build
PYTHON ?= python3

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS ?= -O2 -g
BASE_CFLAGS := -std=c11 -fPIC -fvisibility=hidden -D_GNU_SOURCE $(WARN) -Icore
# CI builds treat warnings as errors, as `make dev` does.
CI_CFLAGS := $(if $(filter true,$(CI)),-Werror)
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS) $(CI_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS_CORE := -lpthread -lm
ALL_LDFLAGS = $(LDFLAGS) $(EXTRA_LDFLAGS)

CORE_SRC := $(wildcard core/*.c)
CORE_OBJ := $(CORE_SRC:core/%.c=$(BUILD)/core/%.o)
CORE_HDR := core/buttress.h core/internal.h
LIB_A := $(BUILD)/libbuttress.a
LIB_SO := $(BUILD)/libbuttress.so

TEST_C_SRC := $(wildcard tests/c/test_*.c)
TEST_C_BIN := $(TEST_C_SRC:tests/c/%.c=$(BUILD)/tests/%)
TEST_C_SUPPORT := $(filter-out $(TEST_C_SRC),$(wildcard tests/c/*.c))

.PHONY: all help deps test test-c bench asan ubsan tsan dev install clean check demo

all: $(LIB_A) $(LIB_SO)

help:
	@echo "make demo       the failure drill (docs/drill.md): installs what it needs, runs it"
	@echo "make            build $(LIB_A) and $(LIB_SO)"
	@echo "make test       install what is missing, build, run every test suite"
	@echo "make test-c     the C suite (cmocka)"
	@echo "make asan|ubsan|tsan  the C suite under a sanitizer"
	@echo "make check      all sanitizers and the fuzz replays (CI runs it)"
	@echo "make dev        build and test the C suite with -Werror"
	@echo "make bench      benchmarks (bench/), never timed tests"
	@echo "make install PREFIX=/usr/local   headers, libraries, buttress.pc"
	@echo "make clean"

deps:
	@sh .ci/deps.sh

$(BUILD)/core/%.o: core/%.c $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB_A): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libbuttress.so $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS_CORE)

# ---------------------------------------------------------------- C tests
# Each tests/c/test_*.c is one cmocka program; other tests/c/*.c are shared
# helpers linked into every one of them.
$(BUILD)/tests/%: tests/c/%.c $(TEST_C_SUPPORT) $(wildcard tests/c/*.h) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fvisibility=default -Itests/c -o $@ $< $(TEST_C_SUPPORT) \
	  $(LIB_A) $(ALL_LDFLAGS) -lcmocka -lpthread -lm

# Each examples/c/*.c is a program that must build and exit 0.
EXAMPLE_C_SRC := $(wildcard examples/c/*.c)
EXAMPLE_C_BIN := $(EXAMPLE_C_SRC:examples/c/%.c=$(BUILD)/examples/%)
$(BUILD)/examples/%: examples/c/%.c core/buttress.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_A) $(ALL_LDFLAGS) -lpthread -lm

# Examples first, so that cmocka's summary lines come last.
test-c: $(TEST_C_BIN) $(EXAMPLE_C_BIN)
	@failed=0; for e in $(EXAMPLE_C_BIN); do \
	  echo "== $$e"; $(TEST_RUNNER) ./$$e || { echo "FAILED: $$e"; failed=1; }; \
	done; \
	for t in $(TEST_C_BIN); do \
	  echo "== $$t"; BUTTRESS_SCENARIOS=tests/scenarios $(TEST_RUNNER) ./$$t || failed=1; \
	done; exit $$failed

SAN_TEST = $(MAKE) --no-print-directory test-c
asan:
	$(SAN_TEST) BUILD=build/asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"
ubsan:
	$(SAN_TEST) BUILD=build/ubsan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=undefined,float-divide-by-zero -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=undefined"
tsan:
	$(SAN_TEST) BUILD=build/tsan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=thread" EXTRA_LDFLAGS="-fsanitize=thread"
dev:
	$(MAKE) --no-print-directory test-c BUILD=build/dev EXTRA_CFLAGS=-Werror

# ---------------------------------------------------------------- bench
# bench_shared.c is a program of its own; the other files make bench_core.
BENCH_C_SRC := $(filter-out bench/c/bench_shared.c,$(wildcard bench/c/*.c))
$(BUILD)/bench/bench_core: $(BENCH_C_SRC) bench/c/bench_util.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O2 -fvisibility=default -o $@ $(BENCH_C_SRC) $(LIB_A) -lpthread -lm
$(BUILD)/bench/bench_shared: bench/c/bench_shared.c bench/c/bench_util.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O2 -fvisibility=default -o $@ $< $(LIB_A) -lpthread -lm
bench: $(BUILD)/bench/bench_core $(BUILD)/bench/bench_shared
	./$(BUILD)/bench/bench_core
	./$(BUILD)/bench/bench_shared

# ---------------------------------------------------------------- install
install: $(LIB_A) $(LIB_SO)
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 core/buttress.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(shell sed -n 's/^#define BUTTRESS_VERSION "\(.*\)"/\1/p' core/buttress.h)|g' \
	  buttress.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/buttress.pc

clean:
	rm -rf build *.egg-info python/*.egg-info .pytest_cache

# Bindings add their own targets (python, test-python, lua, test-lua, ...).
-include bindings/python/python.mk
-include bindings/lua/lua.mk
# Hardening targets (fuzz, ...).
-include tests/fuzz/fuzz.mk

# The failure drill (docs/drill.md): retries, jitter, budgets and breakers
# against a struggling service; the chart goes to build/drill.png.
demo: deps python
	@$(PYTHON) -c "import matplotlib" 2>/dev/null || \
	  $(PYTHON) -m pip install -q matplotlib 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages matplotlib
	@mkdir -p $(BUILD)
	@PYTHONPATH=python $(PYTHON) -m buttress.drill --out $(BUILD)/drill.png

# The C suite under every sanitizer, and the fuzz inputs replayed plus a
# short fuzz run with a fixed seed (deterministic: a flaky CI helps nobody;
# `make fuzz` explores for real).  .ci/run calls it before `make test`.
check: deps
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory ubsan
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory asan-python
	@$(MAKE) --no-print-directory valgrind-lua
	@$(MAKE) --no-print-directory fuzz-replay
	@$(MAKE) --no-print-directory fuzz-build
	@mkdir -p $(BUILD)/fuzz/ci-corpus; ./$(BUILD)/fuzz/fuzz_api -seed=1 -runs=30000 \
	  -max_len=4096 -timeout=10 -artifact_prefix=$(BUILD)/fuzz/ \
	  $(BUILD)/fuzz/ci-corpus tests/fuzz/corpus tests/fuzz/regressions \
	  > $(BUILD)/fuzz/ci.log 2>&1; rc=$$?; tail -n 3 $(BUILD)/fuzz/ci.log; \
	  if [ $$rc -ne 0 ]; then cat $(BUILD)/fuzz/ci.log; echo "fuzz: FAILED (log: $(BUILD)/fuzz/ci.log)"; fi; \
	  exit $$rc

# Every suite; `deps` first so that a fresh machine gets what it needs.
TEST_SUITES ?= test-c $(LUA_TESTS) $(PYTHON_TESTS)
test: deps
	@$(MAKE) --no-print-directory all
	@failed=0; for s in $(TEST_SUITES); do \
	  $(MAKE) --no-print-directory $$s || failed=1; \
	done; exit $$failed
