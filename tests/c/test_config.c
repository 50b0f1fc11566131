/*
 * Configuration: documented defaults, a table of bad configurations (each
 * BUTTRESS_EINVAL from check and init, with the memory given to init left
 * untouched), edge values that are valid, NULL pointers and short sizes.
 */
#include <float.h>

#include "util.h"

/* Every init gets this much memory: more than any valid state needs, so a
 * rejection can only come from the configuration. */
#define ARENA_SIZE (size_t)(8u << 20)
#define PATTERN 0xA5

static unsigned char *arena;

static int
setup_arena(void **state)
{
  (void)state;
  arena = aligned_alloc(64, ARENA_SIZE);
  return arena == NULL;
}

static int
teardown_arena(void **state)
{
  (void)state;
  free(arena);
  return 0;
}

static void
arena_fill(void)
{
  memset(arena, PATTERN, ARENA_SIZE);
}

static int
arena_untouched(void)
{
  for (size_t i = 0; i < ARENA_SIZE; i++)
    if (arena[i] != PATTERN)
      return 0;
  return 1;
}

/* ------------------------------------------------------------ defaults */

static void
test_defaults(void **state)
{
  (void)state;
  buttress_backoff_config bo;
  buttress_backoff_config_init(&bo);
  assert_i64_eq(bo.base_ns, MS(100));
  assert_i64_eq(bo.cap_ns, SEC(10));
  assert_true(bo.multiplier == 2.0);
  assert_int_equal(bo.jitter, BUTTRESS_JITTER_FULL);
  assert_rc(buttress_backoff_config_check(&bo), 0);

  buttress_retry_config rt;
  buttress_retry_config_init(&rt);
  assert_int_equal(rt.attempts, 3);
  assert_i64_eq(rt.deadline_ns, BUTTRESS_NONE);
  assert_i64_eq(rt.backoff.base_ns, MS(100));
  assert_i64_eq(rt.backoff.cap_ns, SEC(10));
  assert_true(rt.backoff.multiplier == 2.0);
  assert_int_equal(rt.backoff.jitter, BUTTRESS_JITTER_FULL);
  assert_rc(buttress_retry_config_check(&rt), 0);

  buttress_budget_config bu;
  buttress_budget_config_init(&bu);
  assert_true(bu.ratio == 0.2);
  assert_true(bu.min_per_second == 10.0);
  assert_i64_eq(bu.window_ns, SEC(10));
  assert_rc(buttress_budget_config_check(&bu), 0);

  buttress_breaker_config br;
  buttress_breaker_config_init(&br);
  assert_int_equal(br.failure_threshold, 5);
  assert_int_equal(br.half_open_calls, 1);
  assert_int_equal(br.success_threshold, 1);
  assert_int_equal(br.window_size, 100);
  assert_int_equal(br.min_calls, 10);
  assert_int_equal(br.window_type, BUTTRESS_WINDOW_COUNT);
  assert_i64_eq(br.window_ns, SEC(100));
  assert_i64_eq(br.reset_timeout_ns, SEC(30));
  assert_i64_eq(br.trial_timeout_ns, BUTTRESS_NONE);
  assert_i64_eq(br.slow_call_ns, BUTTRESS_NONE);
  assert_true(br.failure_rate == 0.0);
  assert_true(br.slow_rate == 0.0);
  assert_int_equal(br.use_reset_backoff, 0);
  assert_rc(buttress_breaker_config_check(&br), 0);
  assert_true(buttress_breaker_sizeof(&br) > 0);
}

/* ---------------------------------------------------- the bad table */

enum kind { BACKOFF, RETRY, BUDGET, BREAKER };

union any_config {
  buttress_backoff_config backoff;
  buttress_retry_config retry;
  buttress_budget_config budget;
  buttress_breaker_config breaker;
};

struct bad_case {
  const char *what;
  enum kind kind;
  void (*spoil)(union any_config *c);
};

/* One small function per case keeps the table readable. */
#define SPOIL(name, stmt)                                                     \
  static void spoil_##name(union any_config *c) { stmt; }

SPOIL(bo_base_negative, c->backoff.base_ns = -1)
SPOIL(bo_base_over_max, (c->backoff.base_ns = BUTTRESS_MAX_DURATION_NS + 1,
                         c->backoff.cap_ns = BUTTRESS_MAX_DURATION_NS + 1))
SPOIL(bo_cap_below_base, (c->backoff.base_ns = SEC(2), c->backoff.cap_ns = SEC(1)))
SPOIL(bo_cap_infinite, c->backoff.cap_ns = INT64_MAX)
SPOIL(bo_cap_negative, (c->backoff.base_ns = 0, c->backoff.cap_ns = -1))
SPOIL(bo_multiplier_below_one, c->backoff.multiplier = 0.999)
SPOIL(bo_multiplier_zero, c->backoff.multiplier = 0)
SPOIL(bo_multiplier_negative, c->backoff.multiplier = -2)
SPOIL(bo_multiplier_nan, c->backoff.multiplier = NAN)
SPOIL(bo_multiplier_inf, c->backoff.multiplier = INFINITY)
SPOIL(bo_jitter_unknown, c->backoff.jitter = 4)
SPOIL(bo_jitter_negative, c->backoff.jitter = -1)

SPOIL(rt_attempts_zero, c->retry.attempts = 0)
SPOIL(rt_deadline_negative, c->retry.deadline_ns = -2)
SPOIL(rt_deadline_infinite, c->retry.deadline_ns = INT64_MAX)
SPOIL(rt_backoff_multiplier, c->retry.backoff.multiplier = 0.5)
SPOIL(rt_backoff_jitter, c->retry.backoff.jitter = 99)
SPOIL(rt_backoff_base_negative, c->retry.backoff.base_ns = -5)

SPOIL(bu_ratio_negative, c->budget.ratio = -0.1)
SPOIL(bu_ratio_nan, c->budget.ratio = NAN)
SPOIL(bu_ratio_inf, c->budget.ratio = INFINITY)
SPOIL(bu_min_negative, c->budget.min_per_second = -1)
SPOIL(bu_min_nan, c->budget.min_per_second = NAN)
SPOIL(bu_min_inf, c->budget.min_per_second = INFINITY)
SPOIL(bu_window_zero, c->budget.window_ns = 0)
SPOIL(bu_window_negative, c->budget.window_ns = -SEC(1))
SPOIL(bu_window_infinite, c->budget.window_ns = INT64_MAX)

SPOIL(br_half_open_zero, c->breaker.half_open_calls = 0)
SPOIL(br_half_open_over_max, c->breaker.half_open_calls = BUTTRESS_MAX_HALF_OPEN_CALLS + 1)
SPOIL(br_success_zero, c->breaker.success_threshold = 0)
SPOIL(br_success_over_max, c->breaker.success_threshold = BUTTRESS_MAX_THRESHOLD + 1)
SPOIL(br_failure_over_max, c->breaker.failure_threshold = BUTTRESS_MAX_THRESHOLD + 1)
SPOIL(br_failure_huge, c->breaker.failure_threshold = UINT32_MAX)
SPOIL(br_window_zero, c->breaker.window_size = 0)
SPOIL(br_window_over_max, c->breaker.window_size = BUTTRESS_MAX_WINDOW_CALLS + 1)
SPOIL(br_time_window_zero, (c->breaker.window_type = BUTTRESS_WINDOW_TIME,
                            c->breaker.window_ns = 0))
SPOIL(br_time_window_negative, (c->breaker.window_type = BUTTRESS_WINDOW_TIME,
                                c->breaker.window_ns = -SEC(1)))
SPOIL(br_time_window_infinite, (c->breaker.window_type = BUTTRESS_WINDOW_TIME,
                                c->breaker.window_ns = INT64_MAX))
SPOIL(br_min_calls_zero, c->breaker.min_calls = 0)
SPOIL(br_window_type_unknown, c->breaker.window_type = 2)
SPOIL(br_window_type_negative, c->breaker.window_type = -1)
SPOIL(br_reset_zero, c->breaker.reset_timeout_ns = 0)
SPOIL(br_reset_negative, c->breaker.reset_timeout_ns = -SEC(30))
SPOIL(br_reset_infinite, c->breaker.reset_timeout_ns = INT64_MAX)
SPOIL(br_trial_negative, c->breaker.trial_timeout_ns = -2)
SPOIL(br_trial_infinite, c->breaker.trial_timeout_ns = INT64_MAX)
SPOIL(br_slow_call_negative, c->breaker.slow_call_ns = -2)
SPOIL(br_slow_call_infinite, c->breaker.slow_call_ns = INT64_MAX)
SPOIL(br_failure_rate_negative, c->breaker.failure_rate = -0.1)
SPOIL(br_failure_rate_above_one, c->breaker.failure_rate = 1.0001)
SPOIL(br_failure_rate_nan, c->breaker.failure_rate = NAN)
SPOIL(br_failure_rate_inf, c->breaker.failure_rate = INFINITY)
SPOIL(br_slow_rate_without_slow_call, c->breaker.slow_rate = 0.5)
SPOIL(br_slow_rate_above_one, (c->breaker.slow_call_ns = SEC(1), c->breaker.slow_rate = 2.0))
SPOIL(br_slow_rate_negative, (c->breaker.slow_call_ns = SEC(1), c->breaker.slow_rate = -0.5))
SPOIL(br_slow_rate_nan, (c->breaker.slow_call_ns = SEC(1), c->breaker.slow_rate = NAN))
SPOIL(br_reset_backoff_multiplier, (c->breaker.use_reset_backoff = 1,
                                    c->breaker.reset_backoff.multiplier = 0.5))
SPOIL(br_reset_backoff_cap_below_base, (c->breaker.use_reset_backoff = 1,
                                        c->breaker.reset_backoff.base_ns = SEC(2),
                                        c->breaker.reset_backoff.cap_ns = SEC(1)))

#define CASE(kind, name) {#name, kind, spoil_##name}
static const struct bad_case bad_cases[] = {
    CASE(BACKOFF, bo_base_negative), CASE(BACKOFF, bo_base_over_max),
    CASE(BACKOFF, bo_cap_below_base), CASE(BACKOFF, bo_cap_infinite),
    CASE(BACKOFF, bo_cap_negative), CASE(BACKOFF, bo_multiplier_below_one),
    CASE(BACKOFF, bo_multiplier_zero), CASE(BACKOFF, bo_multiplier_negative),
    CASE(BACKOFF, bo_multiplier_nan), CASE(BACKOFF, bo_multiplier_inf),
    CASE(BACKOFF, bo_jitter_unknown), CASE(BACKOFF, bo_jitter_negative),

    CASE(RETRY, rt_attempts_zero), CASE(RETRY, rt_deadline_negative),
    CASE(RETRY, rt_deadline_infinite), CASE(RETRY, rt_backoff_multiplier),
    CASE(RETRY, rt_backoff_jitter), CASE(RETRY, rt_backoff_base_negative),

    CASE(BUDGET, bu_ratio_negative), CASE(BUDGET, bu_ratio_nan),
    CASE(BUDGET, bu_ratio_inf), CASE(BUDGET, bu_min_negative),
    CASE(BUDGET, bu_min_nan), CASE(BUDGET, bu_min_inf),
    CASE(BUDGET, bu_window_zero), CASE(BUDGET, bu_window_negative),
    CASE(BUDGET, bu_window_infinite),

    CASE(BREAKER, br_half_open_zero), CASE(BREAKER, br_half_open_over_max),
    CASE(BREAKER, br_success_zero), CASE(BREAKER, br_success_over_max),
    CASE(BREAKER, br_failure_over_max), CASE(BREAKER, br_failure_huge),
    CASE(BREAKER, br_window_zero), CASE(BREAKER, br_window_over_max),
    CASE(BREAKER, br_time_window_zero), CASE(BREAKER, br_time_window_negative),
    CASE(BREAKER, br_time_window_infinite), CASE(BREAKER, br_min_calls_zero),
    CASE(BREAKER, br_window_type_unknown), CASE(BREAKER, br_window_type_negative),
    CASE(BREAKER, br_reset_zero), CASE(BREAKER, br_reset_negative),
    CASE(BREAKER, br_reset_infinite), CASE(BREAKER, br_trial_negative),
    CASE(BREAKER, br_trial_infinite),
    CASE(BREAKER, br_slow_call_negative), CASE(BREAKER, br_slow_call_infinite),
    CASE(BREAKER, br_failure_rate_negative), CASE(BREAKER, br_failure_rate_above_one),
    CASE(BREAKER, br_failure_rate_nan), CASE(BREAKER, br_failure_rate_inf),
    CASE(BREAKER, br_slow_rate_without_slow_call), CASE(BREAKER, br_slow_rate_above_one),
    CASE(BREAKER, br_slow_rate_negative), CASE(BREAKER, br_slow_rate_nan),
    CASE(BREAKER, br_reset_backoff_multiplier),
    CASE(BREAKER, br_reset_backoff_cap_below_base),
};
#undef CASE

static void
defaults_of(enum kind kind, union any_config *c)
{
  memset(c, 0, sizeof *c);
  switch (kind) {
  case BACKOFF: buttress_backoff_config_init(&c->backoff); break;
  case RETRY: buttress_retry_config_init(&c->retry); break;
  case BUDGET: buttress_budget_config_init(&c->budget); break;
  case BREAKER: buttress_breaker_config_init(&c->breaker); break;
  }
}

static int
check_of(enum kind kind, const union any_config *c)
{
  switch (kind) {
  case BACKOFF: return buttress_backoff_config_check(&c->backoff);
  case RETRY: return buttress_retry_config_check(&c->retry);
  case BUDGET: return buttress_budget_config_check(&c->budget);
  case BREAKER: return buttress_breaker_config_check(&c->breaker);
  }
  return 0;
}

static int
init_of(enum kind kind, void *mem, size_t size, const union any_config *c)
{
  switch (kind) {
  case BACKOFF: return buttress_backoff_init(mem, size, &c->backoff, 1);
  case RETRY: return buttress_retry_init(mem, size, &c->retry, 1);
  case BUDGET: return buttress_budget_init(mem, size, &c->budget);
  case BREAKER: return buttress_breaker_init(mem, size, &c->breaker);
  }
  return 0;
}

static void
test_bad_config_table(void **state)
{
  (void)state;
  size_t per_kind[4] = {0};
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const struct bad_case *bc = &bad_cases[i];
    union any_config cfg;
    defaults_of(bc->kind, &cfg);
    bc->spoil(&cfg);
    int rc = check_of(bc->kind, &cfg);
    if (rc != BUTTRESS_EINVAL)
      fail_msg("%s: config_check returned %d (%s), expected EINVAL", bc->what,
               rc, buttress_errname(rc));
    arena_fill();
    rc = init_of(bc->kind, arena, ARENA_SIZE, &cfg);
    if (rc != BUTTRESS_EINVAL)
      fail_msg("%s: init returned %d (%s), expected EINVAL", bc->what, rc,
               buttress_errname(rc));
    if (!arena_untouched())
      fail_msg("%s: init wrote to memory while rejecting the config", bc->what);
    if (bc->kind == BREAKER && buttress_breaker_sizeof(&cfg.breaker) != 0)
      fail_msg("%s: breaker_sizeof is not 0", bc->what);
    per_kind[bc->kind]++;
  }
  /* The brief asks for at least 25, across every config struct. */
  assert_true(sizeof bad_cases / sizeof bad_cases[0] >= 25);
  for (int k = 0; k < 4; k++)
    assert_true(per_kind[k] >= 5);
}

/* The valid side of each boundary: none of these may be rejected. */
SPOIL(ok_base_zero, c->backoff.base_ns = 0)
SPOIL(ok_multiplier_one, c->backoff.multiplier = 1.0)
SPOIL(ok_cap_equals_base, c->backoff.cap_ns = c->backoff.base_ns)
SPOIL(ok_max_durations, (c->backoff.base_ns = BUTTRESS_MAX_DURATION_NS,
                         c->backoff.cap_ns = BUTTRESS_MAX_DURATION_NS))
SPOIL(ok_huge_multiplier, c->backoff.multiplier = DBL_MAX)
SPOIL(ok_attempts_one, c->retry.attempts = 1)
SPOIL(ok_attempts_max, c->retry.attempts = UINT32_MAX)
SPOIL(ok_deadline_max, c->retry.deadline_ns = BUTTRESS_MAX_DURATION_NS)
SPOIL(ok_budget_zeroes, (c->budget.ratio = 0, c->budget.min_per_second = 0))
SPOIL(ok_budget_window_max, c->budget.window_ns = BUTTRESS_MAX_DURATION_NS)
SPOIL(ok_failure_threshold_off, c->breaker.failure_threshold = 0)
SPOIL(ok_thresholds_max, (c->breaker.failure_threshold = BUTTRESS_MAX_THRESHOLD,
                          c->breaker.success_threshold = BUTTRESS_MAX_THRESHOLD))
SPOIL(ok_half_open_max, c->breaker.half_open_calls = BUTTRESS_MAX_HALF_OPEN_CALLS)
SPOIL(ok_window_max, (c->breaker.window_size = BUTTRESS_MAX_WINDOW_CALLS,
                      c->breaker.failure_rate = 0.5))
SPOIL(ok_window_one, (c->breaker.window_size = 1, c->breaker.min_calls = 1))
SPOIL(ok_failure_rate_one, c->breaker.failure_rate = 1.0)
SPOIL(ok_failure_rate_tiny, c->breaker.failure_rate = 1e-9)
SPOIL(ok_slow_call_without_rate, c->breaker.slow_call_ns = SEC(1))
SPOIL(ok_slow_rate_with_call, (c->breaker.slow_call_ns = 1, c->breaker.slow_rate = 1.0))
SPOIL(ok_time_window, (c->breaker.window_type = BUTTRESS_WINDOW_TIME,
                       c->breaker.window_ns = BUTTRESS_MAX_DURATION_NS,
                       c->breaker.failure_rate = 0.5))
SPOIL(ok_trial_timeout_set, c->breaker.trial_timeout_ns = 1)
SPOIL(ok_reset_timeout_tiny, c->breaker.reset_timeout_ns = 1)
SPOIL(ok_reset_backoff, (c->breaker.use_reset_backoff = 1,
                         c->breaker.reset_backoff.base_ns = SEC(1)))

#define CASE(kind, name) {#name, kind, spoil_##name}
static const struct bad_case good_cases[] = {
    CASE(BACKOFF, ok_base_zero), CASE(BACKOFF, ok_multiplier_one),
    CASE(BACKOFF, ok_cap_equals_base), CASE(BACKOFF, ok_max_durations),
    CASE(BACKOFF, ok_huge_multiplier), CASE(RETRY, ok_attempts_one),
    CASE(RETRY, ok_attempts_max), CASE(RETRY, ok_deadline_max),
    CASE(BUDGET, ok_budget_zeroes), CASE(BUDGET, ok_budget_window_max),
    CASE(BREAKER, ok_failure_threshold_off), CASE(BREAKER, ok_thresholds_max),
    CASE(BREAKER, ok_half_open_max), CASE(BREAKER, ok_window_max),
    CASE(BREAKER, ok_window_one), CASE(BREAKER, ok_failure_rate_one),
    CASE(BREAKER, ok_failure_rate_tiny), CASE(BREAKER, ok_slow_call_without_rate),
    CASE(BREAKER, ok_slow_rate_with_call), CASE(BREAKER, ok_time_window),
    CASE(BREAKER, ok_trial_timeout_set), CASE(BREAKER, ok_reset_timeout_tiny),
    CASE(BREAKER, ok_reset_backoff),
};
#undef CASE

static void
test_edge_configs_accepted(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
    const struct bad_case *gc = &good_cases[i];
    union any_config cfg;
    defaults_of(gc->kind, &cfg);
    gc->spoil(&cfg);
    int rc = check_of(gc->kind, &cfg);
    if (rc != 0)
      fail_msg("%s: config_check returned %d (%s), expected 0", gc->what, rc,
               buttress_errname(rc));
    if (gc->kind == BREAKER)
      assert_true(buttress_breaker_sizeof(&cfg.breaker) <= ARENA_SIZE);
    rc = init_of(gc->kind, arena, ARENA_SIZE, &cfg);
    if (rc != 0)
      fail_msg("%s: init returned %d (%s), expected 0", gc->what, rc,
               buttress_errname(rc));
  }
}

/* --------------------------------------------------- NULL and sizes */

static size_t
sizeof_of(enum kind kind, const union any_config *c)
{
  switch (kind) {
  case BACKOFF: return buttress_backoff_sizeof();
  case RETRY: return buttress_retry_sizeof();
  case BUDGET: return buttress_budget_sizeof();
  case BREAKER: return buttress_breaker_sizeof(&c->breaker);
  }
  return 0;
}

static void
test_null_pointers(void **state)
{
  (void)state;
  assert_rc(buttress_backoff_config_check(NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_config_check(NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_budget_config_check(NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_config_check(NULL), BUTTRESS_EINVAL);
  for (enum kind k = BACKOFF; k <= BREAKER; k++) {
    union any_config cfg;
    defaults_of(k, &cfg);
    size_t size = sizeof_of(k, &cfg);
    assert_rc(init_of(k, NULL, size, &cfg), BUTTRESS_EINVAL);
    arena_fill();
    switch (k) {
    case BACKOFF: assert_rc(buttress_backoff_init(arena, size, NULL, 1), BUTTRESS_EINVAL); break;
    case RETRY: assert_rc(buttress_retry_init(arena, size, NULL, 1), BUTTRESS_EINVAL); break;
    case BUDGET: assert_rc(buttress_budget_init(arena, size, NULL), BUTTRESS_EINVAL); break;
    case BREAKER: assert_rc(buttress_breaker_init(arena, size, NULL), BUTTRESS_EINVAL); break;
    }
    assert_true(arena_untouched());
  }
  assert_rc(buttress_histogram_init(NULL, buttress_histogram_sizeof()), BUTTRESS_EINVAL);
  int64_t out;
  assert_rc(buttress_backoff_ceiling(NULL, 0, &out), BUTTRESS_EINVAL);
}

static void
test_size_below_sizeof(void **state)
{
  (void)state;
  for (enum kind k = BACKOFF; k <= BREAKER; k++) {
    union any_config cfg;
    defaults_of(k, &cfg);
    size_t size = sizeof_of(k, &cfg);
    assert_true(size > 0);
    const size_t short_sizes[] = {0, 1, size / 2, size - 1};
    for (size_t i = 0; i < 4; i++) {
      arena_fill();
      assert_rc(init_of(k, arena, short_sizes[i], &cfg), BUTTRESS_EINVAL);
      assert_true(arena_untouched());
    }
    assert_rc(init_of(k, arena, size, &cfg), 0);
  }
  size_t hsize = buttress_histogram_sizeof();
  arena_fill();
  assert_rc(buttress_histogram_init(arena, hsize - 1), BUTTRESS_EINVAL);
  assert_rc(buttress_histogram_init(arena, 0), BUTTRESS_EINVAL);
  assert_true(arena_untouched());
  assert_rc(buttress_histogram_init(arena, hsize), 0);

  /* A breaker's size follows its config: a bigger window needs at least as
   * much, and the default's size is too small for the largest window. */
  buttress_breaker_config small, big;
  buttress_breaker_config_init(&small);
  buttress_breaker_config_init(&big);
  big.window_size = BUTTRESS_MAX_WINDOW_CALLS;
  big.failure_rate = 0.5;
  big.half_open_calls = BUTTRESS_MAX_HALF_OPEN_CALLS;
  size_t small_size = buttress_breaker_sizeof(&small);
  size_t big_size = buttress_breaker_sizeof(&big);
  assert_true(big_size >= small_size);
  if (big_size > small_size) {
    arena_fill();
    assert_rc(buttress_breaker_init(arena, small_size, &big), BUTTRESS_EINVAL);
    assert_true(arena_untouched());
  }
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_bad_config_table),
      cmocka_unit_test(test_edge_configs_accepted),
      cmocka_unit_test(test_null_pointers),
      cmocka_unit_test(test_size_below_sizeof),
  };
  return cmocka_run_group_tests_name("config", tests, setup_arena, teardown_arena);
}
