/*
 * Backoff: golden sequences computed here from the documented algorithm
 * (util.h), the saturation grid of PITFALLS #11/#12, and the promise that
 * many threads may draw from one backoff at once.
 */
#include <float.h>
#include <pthread.h>

#include "util.h"

static buttress_backoff_config
backoff_cfg(int64_t base, double multiplier, int64_t cap, int jitter)
{
  buttress_backoff_config cfg;
  buttress_backoff_config_init(&cfg);
  cfg.base_ns = base;
  cfg.multiplier = multiplier;
  cfg.cap_ns = cap;
  cfg.jitter = jitter;
  return cfg;
}

/* ------------------------------------------------------------ golden */

static void
test_golden_none_is_capped_exponential(void **state)
{
  (void)state;
  buttress_backoff_config cfg = backoff_cfg(MS(100), 2.0, SEC(10), BUTTRESS_JITTER_NONE);
  buttress_backoff *b = backoff_new(&cfg, 42);
  /* 100 ms doubling: 0.1 0.2 0.4 0.8 1.6 3.2 6.4 then the 10 s cap. */
  const int64_t want[] = {MS(100), MS(200), MS(400), MS(800), MS(1600),
                          MS(3200), MS(6400), SEC(10), SEC(10), SEC(10)};
  int64_t prev = BUTTRESS_NONE;
  for (uint32_t r = 0; r < sizeof want / sizeof want[0]; r++) {
    int64_t got = -1, ceiling = -1;
    assert_rc(buttress_backoff_next(b, r, prev, &got), 0);
    assert_rc(buttress_backoff_ceiling(&cfg, r, &ceiling), 0);
    assert_i64_eq(got, want[r]);
    assert_i64_eq(ceiling, want[r]);
    prev = got;
  }
  free(b);
}

/* Full and equal jitter: one draw per retry, applied to the capped delay. */
static void
check_golden_capped(int jitter, uint64_t seed, int64_t base, double multiplier,
                    int64_t cap, uint32_t count)
{
  buttress_backoff_config cfg = backoff_cfg(base, multiplier, cap, jitter);
  buttress_backoff *b = backoff_new(&cfg, seed);
  uint64_t prng = seed;
  for (uint32_t r = 0; r < count; r++) {
    double u = ref_unit(ref_splitmix64_next(&prng));
    int64_t capped = ref_ceiling(base, multiplier, cap, r);
    int64_t want = jitter == BUTTRESS_JITTER_FULL ? ref_full(u, capped)
                                                  : ref_equal(u, capped);
    int64_t got = -1;
    assert_rc(buttress_backoff_next(b, r, BUTTRESS_NONE, &got), 0);
    if (got != want)
      fail_msg("jitter %d seed %llu retry %u: got %lld, want %lld", jitter,
               (unsigned long long)seed, r, (long long)got, (long long)want);
  }
  free(b);
}

static void
test_golden_full_jitter(void **state)
{
  (void)state;
  check_golden_capped(BUTTRESS_JITTER_FULL, 42, MS(100), 2.0, SEC(10), 24);
  check_golden_capped(BUTTRESS_JITTER_FULL, 0, MS(100), 2.0, SEC(10), 24);
  check_golden_capped(BUTTRESS_JITTER_FULL, UINT64_MAX, 1, 3.0, SEC(1), 40);
  check_golden_capped(BUTTRESS_JITTER_FULL, 0x123456789abcdefULL, MS(5), 2.0,
                      BUTTRESS_MAX_DURATION_NS, 64);
}

static void
test_golden_equal_jitter(void **state)
{
  (void)state;
  check_golden_capped(BUTTRESS_JITTER_EQUAL, 42, MS(100), 2.0, SEC(10), 24);
  check_golden_capped(BUTTRESS_JITTER_EQUAL, 7, 3, 2.0, MS(1), 30);
  check_golden_capped(BUTTRESS_JITTER_EQUAL, UINT64_MAX, MS(1), 4.0, SEC(60), 20);
}

/* Decorrelated: each delay grows from the previous one handed back. */
static void
check_golden_decorrelated(uint64_t seed, int64_t base, int64_t cap, uint32_t count)
{
  buttress_backoff_config cfg =
      backoff_cfg(base, 2.0, cap, BUTTRESS_JITTER_DECORRELATED);
  buttress_backoff *b = backoff_new(&cfg, seed);
  uint64_t prng = seed;
  int64_t prev = BUTTRESS_NONE;
  for (uint32_t r = 0; r < count; r++) {
    double u = ref_unit(ref_splitmix64_next(&prng));
    int64_t want = ref_decorrelated(u, base, cap, prev == BUTTRESS_NONE ? base : prev);
    int64_t got = -1;
    assert_rc(buttress_backoff_next(b, r, prev, &got), 0);
    if (got != want)
      fail_msg("decorrelated seed %llu retry %u prev %lld: got %lld, want %lld",
               (unsigned long long)seed, r, (long long)prev, (long long)got,
               (long long)want);
    prev = got;
  }
  free(b);
}

static void
test_golden_decorrelated_jitter(void **state)
{
  (void)state;
  check_golden_decorrelated(42, MS(100), SEC(10), 40);
  check_golden_decorrelated(0, MS(1), SEC(1), 40);
  check_golden_decorrelated(UINT64_MAX, 1000, BUTTRESS_MAX_DURATION_NS, 80);
}

/* The caller may pass any previous delay, not only the last one drawn. */
static void
test_decorrelated_uses_given_prev(void **state)
{
  (void)state;
  buttress_backoff_config cfg =
      backoff_cfg(MS(100), 2.0, SEC(10), BUTTRESS_JITTER_DECORRELATED);
  buttress_backoff *b = backoff_new(&cfg, 99);
  uint64_t prng = 99;
  const int64_t prevs[] = {MS(100), SEC(1), SEC(3), SEC(4), SEC(10),
                           BUTTRESS_MAX_DURATION_NS};
  for (size_t i = 0; i < sizeof prevs / sizeof prevs[0]; i++) {
    double u = ref_unit(ref_splitmix64_next(&prng));
    int64_t got = -1;
    assert_rc(buttress_backoff_next(b, 5, prevs[i], &got), 0);
    assert_i64_eq(got, ref_decorrelated(u, MS(100), SEC(10), prevs[i]));
  }
  free(b);
}

static void
test_same_seed_same_sequence(void **state)
{
  (void)state;
  for (int jitter = BUTTRESS_JITTER_NONE; jitter <= BUTTRESS_JITTER_DECORRELATED; jitter++) {
    buttress_backoff_config cfg = backoff_cfg(MS(10), 2.0, SEC(5), jitter);
    buttress_backoff *a = backoff_new(&cfg, 1234), *b = backoff_new(&cfg, 1234);
    buttress_backoff *c = backoff_new(&cfg, 1235);
    int64_t pa = BUTTRESS_NONE, pb = BUTTRESS_NONE;
    int differs = 0;
    for (uint32_t r = 0; r < 50; r++) {
      int64_t da, db, dc;
      assert_rc(buttress_backoff_next(a, r, pa, &da), 0);
      assert_rc(buttress_backoff_next(b, r, pb, &db), 0);
      assert_rc(buttress_backoff_next(c, r, pa, &dc), 0);
      assert_i64_eq(da, db);
      differs |= da != dc;
      pa = da;
      pb = db;
    }
    /* Only the un-jittered backoff ignores its seed. */
    assert_int_equal(differs, jitter != BUTTRESS_JITTER_NONE);
    free(a);
    free(b);
    free(c);
  }
}

/* ------------------------------------------------------ overflow grid */

static const uint32_t grid_retries[] = {0, 1, 2, 31, 32, 33, 62, 63, 64, 65,
                                        1023, 1024, 1025, 65535, 1u << 31,
                                        UINT32_MAX - 1, UINT32_MAX};

struct grid_cfg {
  int64_t base, cap;
  double multiplier;
};

static const struct grid_cfg grid_cfgs[] = {
    {0, SEC(10), 2.0},                                   /* immediate retries */
    {0, 0, 1.0},                                         /* everything zero */
    {1, 1, 1.0},
    {MS(100), SEC(10), 1.0},                             /* constant */
    {MS(100), SEC(10), 2.0},                             /* the defaults */
    {MS(100), SEC(10), 1.5},
    {1, BUTTRESS_MAX_DURATION_NS, 2.0},                  /* 2**62 needs 62 doublings */
    {1, BUTTRESS_MAX_DURATION_NS, 1.0000001},            /* slow growth, huge exponent */
    {SEC(1), BUTTRESS_MAX_DURATION_NS, 1e300},
    {SEC(1), BUTTRESS_MAX_DURATION_NS, DBL_MAX},
    {BUTTRESS_MAX_DURATION_NS, BUTTRESS_MAX_DURATION_NS, 2.0},
    {BUTTRESS_MAX_DURATION_NS - 1, BUTTRESS_MAX_DURATION_NS, 1e10},
    {3, INT64_C(1) << 40, 10.0},
    {MS(1), MS(1), 2.0},                                 /* cap == base */
};

static void
test_overflow_grid(void **state)
{
  (void)state;
  for (size_t c = 0; c < sizeof grid_cfgs / sizeof grid_cfgs[0]; c++) {
    const struct grid_cfg *g = &grid_cfgs[c];
    for (int jitter = BUTTRESS_JITTER_NONE; jitter <= BUTTRESS_JITTER_DECORRELATED; jitter++) {
      buttress_backoff_config cfg = backoff_cfg(g->base, g->multiplier, g->cap, jitter);
      assert_rc(buttress_backoff_config_check(&cfg), 0);
      buttress_backoff *b = backoff_new(&cfg, 0xfeedULL + (uint64_t)c);
      int64_t last_ceiling = 0;
      for (size_t i = 0; i < sizeof grid_retries / sizeof grid_retries[0]; i++) {
        uint32_t r = grid_retries[i];
        int64_t ceiling = -1;
        assert_rc(buttress_backoff_ceiling(&cfg, r, &ceiling), 0);
        /* Saturating and monotone: never past the cap, never shrinking. */
        if (ceiling < last_ceiling || ceiling > g->cap || ceiling < g->base)
          fail_msg("cfg %zu retry %u: ceiling %lld (last %lld, base %lld cap %lld)",
                   c, r, (long long)ceiling, (long long)last_ceiling,
                   (long long)g->base, (long long)g->cap);
        last_ceiling = ceiling;
        if (g->multiplier == 1.0)
          assert_i64_eq(ceiling, g->base);
        if (g->base > 0 && g->multiplier >= 2.0 && r >= 64)
          assert_i64_eq(ceiling, g->cap);

        const int64_t prevs[] = {BUTTRESS_NONE, g->base, g->cap};
        for (size_t p = 0; p < 3; p++) {
          int64_t d = -1;
          assert_rc(buttress_backoff_next(b, r, prevs[p], &d), 0);
          int64_t lo = 0, hi = ceiling;
          if (jitter == BUTTRESS_JITTER_NONE)
            lo = ceiling;
          else if (jitter == BUTTRESS_JITTER_EQUAL)
            lo = ceiling / 2;
          else if (jitter == BUTTRESS_JITTER_DECORRELATED) {
            lo = g->base;
            hi = g->cap;
          }
          if (d < lo || d > hi)
            fail_msg("cfg %zu jitter %d retry %u prev %lld: delay %lld outside "
                     "[%lld, %lld]", c, jitter, r, (long long)prevs[p],
                     (long long)d, (long long)lo, (long long)hi);
        }
      }
      free(b);
    }
  }
}

/* PITFALLS #12: jitter comes after the cap, so saturated clients spread
 * over [0, cap] instead of all sleeping exactly the cap. */
static void
test_full_jitter_saturated_is_spread(void **state)
{
  (void)state;
  buttress_backoff_config cfg = backoff_cfg(MS(100), 2.0, SEC(10), BUTTRESS_JITTER_FULL);
  buttress_backoff *b = backoff_new(&cfg, 5);
  const uint32_t retries[] = {64, 1024, 1025, UINT32_MAX};
  for (size_t i = 0; i < 4; i++) {
    int64_t lo = INT64_MAX, hi = 0;
    double sum = 0;
    const int n = 4000;
    for (int k = 0; k < n; k++) {
      int64_t d;
      assert_rc(buttress_backoff_next(b, retries[i], BUTTRESS_NONE, &d), 0);
      assert_i64_range(d, 0, SEC(10));
      lo = d < lo ? d : lo;
      hi = d > hi ? d : hi;
      sum += (double)d;
    }
    assert_true(lo < SEC(1));
    assert_true(hi > SEC(9));
    /* The mean of uniform [0, cap] is cap/2; 4000 draws: sd of the mean ~1.4%. */
    assert_rel_close(sum / n, (double)SEC(5), 0.08);
  }
  free(b);
}

static void
test_equal_jitter_saturated_is_spread(void **state)
{
  (void)state;
  buttress_backoff_config cfg = backoff_cfg(MS(100), 2.0, SEC(10), BUTTRESS_JITTER_EQUAL);
  buttress_backoff *b = backoff_new(&cfg, 6);
  int64_t lo = INT64_MAX, hi = 0;
  for (int k = 0; k < 2000; k++) {
    int64_t d;
    assert_rc(buttress_backoff_next(b, UINT32_MAX, BUTTRESS_NONE, &d), 0);
    assert_i64_range(d, SEC(5), SEC(10));
    lo = d < lo ? d : lo;
    hi = d > hi ? d : hi;
  }
  assert_true(lo < SEC(5) + MS(100));
  assert_true(hi > SEC(10) - MS(100));
  free(b);
}

/* Multipliers that are not powers of two: base * m**r to within 1 ns (the
 * contract does not fix the rounding of fractional nanoseconds). */
static void
test_ceiling_fractional_multiplier(void **state)
{
  (void)state;
  buttress_backoff_config cfg = backoff_cfg(MS(100), 1.5, SEC(100), BUTTRESS_JITTER_NONE);
  for (uint32_t r = 0; r < 40; r++) {
    int64_t got;
    assert_rc(buttress_backoff_ceiling(&cfg, r, &got), 0);
    int64_t want = ref_ceiling(MS(100), 1.5, SEC(100), r);
    assert_i64_range(got, want - 1, want + 1);
  }
}

static void
test_get_config_round_trip(void **state)
{
  (void)state;
  buttress_backoff_config cfg = backoff_cfg(MS(7), 3.5, SEC(9), BUTTRESS_JITTER_EQUAL);
  buttress_backoff *b = backoff_new(&cfg, 1);
  buttress_backoff_config out;
  memset(&out, 0xab, sizeof out);
  assert_rc(buttress_backoff_get_config(b, &out), 0);
  assert_i64_eq(out.base_ns, MS(7));
  assert_i64_eq(out.cap_ns, SEC(9));
  assert_true(out.multiplier == 3.5);
  assert_int_equal(out.jitter, BUTTRESS_JITTER_EQUAL);
  free(b);
}

/* -------------------------------------------------------- concurrency */

/* The PRNG advances with one atomic add: whatever the interleaving, the
 * draws of all threads together are exactly the first N values of the
 * sequence (no draw lost, none repeated). */
enum { DRAW_THREADS = 8, DRAWS_PER_THREAD = 20000 };

struct draw_arg {
  buttress_backoff *b;
  pthread_barrier_t *start;
  int64_t *out;
  int errors;
};

static void *
draw_thread(void *p)
{
  struct draw_arg *a = p;
  pthread_barrier_wait(a->start);
  for (int i = 0; i < DRAWS_PER_THREAD; i++)
    if (buttress_backoff_next(a->b, UINT32_MAX, BUTTRESS_NONE, &a->out[i]) != 0)
      a->errors++;
  return NULL;
}

static int
cmp_i64(const void *x, const void *y)
{
  int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return (a > b) - (a < b);
}

static void
test_concurrent_draws_are_the_sequence(void **state)
{
  (void)state;
  const int64_t cap = BUTTRESS_MAX_DURATION_NS; /* 2**62: no two draws collide */
  buttress_backoff_config cfg = backoff_cfg(1, 2.0, cap, BUTTRESS_JITTER_FULL);
  buttress_backoff *b = backoff_new(&cfg, 777);
  const size_t total = (size_t)DRAW_THREADS * DRAWS_PER_THREAD;
  int64_t *got = calloc(total, sizeof *got), *want = calloc(total, sizeof *want);
  assert_non_null(got);
  assert_non_null(want);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, DRAW_THREADS);
  pthread_t th[DRAW_THREADS];
  struct draw_arg args[DRAW_THREADS];
  for (int i = 0; i < DRAW_THREADS; i++) {
    args[i] = (struct draw_arg){b, &start, got + (size_t)i * DRAWS_PER_THREAD, 0};
    assert_int_equal(pthread_create(&th[i], NULL, draw_thread, &args[i]), 0);
  }
  for (int i = 0; i < DRAW_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].errors, 0);
  }
  pthread_barrier_destroy(&start);
  uint64_t prng = 777;
  for (size_t i = 0; i < total; i++)
    want[i] = ref_full(ref_unit(ref_splitmix64_next(&prng)), cap);
  qsort(got, total, sizeof *got, cmp_i64);
  qsort(want, total, sizeof *want, cmp_i64);
  for (size_t i = 0; i < total; i++)
    if (got[i] != want[i])
      fail_msg("sorted draw %zu: got %lld, want %lld", i, (long long)got[i],
               (long long)want[i]);
  free(got);
  free(want);
  free(b);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_none_is_capped_exponential),
      cmocka_unit_test(test_golden_full_jitter),
      cmocka_unit_test(test_golden_equal_jitter),
      cmocka_unit_test(test_golden_decorrelated_jitter),
      cmocka_unit_test(test_decorrelated_uses_given_prev),
      cmocka_unit_test(test_same_seed_same_sequence),
      cmocka_unit_test(test_overflow_grid),
      cmocka_unit_test(test_full_jitter_saturated_is_spread),
      cmocka_unit_test(test_equal_jitter_saturated_is_spread),
      cmocka_unit_test(test_ceiling_fractional_multiplier),
      cmocka_unit_test(test_get_config_round_trip),
      cmocka_unit_test(test_concurrent_draws_are_the_sequence),
  };
  return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
