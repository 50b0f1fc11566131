# libFuzzer harness of the public C API (issue 9).  Included by the top
# Makefile; uses its CORE_SRC, CORE_HDR, BUILD and WARN.
#
#   make fuzz-build    build $(BUILD)/fuzz/fuzz_api (clang, ASan + UBSan)
#   make fuzz-replay   replay the seed corpus and every regression input (fast)
#   make fuzz-ci       fuzz for FUZZ_CI_SECONDS (60), then replay
#   make fuzz          fuzz for FUZZ_SECONDS (600)
#
# New inputs go to $(BUILD)/fuzz/corpus, never into the repository; a crash
# is saved as $(BUILD)/fuzz/crash-<sha1>: once the core is fixed, copy it to
# tests/fuzz/regressions/ so that every later run replays it.

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 600
FUZZ_CI_SECONDS ?= 60
FUZZ_DIR := tests/fuzz
FUZZ_OUT := $(BUILD)/fuzz
FUZZ_BIN := $(FUZZ_OUT)/fuzz_api
# -fno-sanitize-recover: a UBSan report stops the run like an ASan one, so
# libFuzzer keeps the input.
FUZZ_CFLAGS ?= -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(WARN) -Icore
FUZZ_SEEDS := $(wildcard $(FUZZ_DIR)/corpus/*)
FUZZ_REGRESSIONS := $(filter-out %.md,$(wildcard $(FUZZ_DIR)/regressions/*))
FUZZ_RUN_OPTS ?= -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz-build fuzz fuzz-ci fuzz-replay fuzz-clang

fuzz-clang:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { \
	  echo "fuzz: '$(FUZZ_CC)' not found. The fuzz targets need clang with libFuzzer" \
	       "(Debian: apt-get install clang), or FUZZ_CC=<a clang>." >&2; exit 1; }
	@printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
	  | $(FUZZ_CC) -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null || { \
	  echo "fuzz: '$(FUZZ_CC)' cannot link -fsanitize=fuzzer (libFuzzer missing:" \
	       "Debian ships it with clang; or install libclang-rt-dev)." >&2; exit 1; }

fuzz-build: $(FUZZ_BIN)

$(FUZZ_BIN): $(FUZZ_DIR)/fuzz_api.c $(CORE_SRC) $(CORE_HDR) | fuzz-clang
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(FUZZ_DIR)/fuzz_api.c $(CORE_SRC) -lm -lpthread

# Inputs given as files are each run once: no fuzzing, a non-zero exit on
# the first violation.
fuzz-replay: $(FUZZ_BIN)
	@echo "fuzz: replaying $(words $(FUZZ_SEEDS)) seeds and $(words $(FUZZ_REGRESSIONS)) regression inputs"
	@./$(FUZZ_BIN) $(FUZZ_RUN_OPTS) $(FUZZ_SEEDS) $(FUZZ_REGRESSIONS) >$(FUZZ_OUT)/replay.log 2>&1 \
	  || { cat $(FUZZ_OUT)/replay.log; echo "fuzz: replay FAILED (log: $(FUZZ_OUT)/replay.log)" >&2; exit 1; }
	@echo "fuzz: replay ok"

# The first directory receives what libFuzzer finds; the others are read.
FUZZ_RUN = mkdir -p $(FUZZ_OUT)/corpus && ./$(FUZZ_BIN) $(FUZZ_RUN_OPTS) \
  -artifact_prefix=$(FUZZ_OUT)/ $(FUZZ_OUT)/corpus $(FUZZ_DIR)/corpus $(FUZZ_DIR)/regressions

fuzz-ci: $(FUZZ_BIN)
	$(FUZZ_RUN) -max_total_time=$(FUZZ_CI_SECONDS)
	@$(MAKE) --no-print-directory fuzz-replay

fuzz: $(FUZZ_BIN)
	$(FUZZ_RUN) -max_total_time=$(FUZZ_SECONDS)
