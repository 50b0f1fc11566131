/*
 * Histogram: quantiles within 2% of the exact quantiles of known
 * distributions (drawn with the reference splitmix64 and a fixed seed), max
 * exact, merge equal to recording both, clamping and bad input.
 */
#include <pthread.h>

#include "util.h"

#define TOP (INT64_C(1) << 38) /* values at or above land in the top bucket */

static const double quantiles[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9,
                                   0.95, 0.99, 0.999, 1.0};

static int
cmp_i64(const void *x, const void *y)
{
  int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return (a > b) - (a < b);
}

/* The documented definition: the smallest recorded v with at least q of the
 * values <= v, i.e. the ceil(q n)-th smallest (the smallest for q = 0). */
static int64_t
exact_quantile(const int64_t *sorted, size_t n, double q)
{
  size_t rank = (size_t)ceil(q * (double)n);
  return sorted[rank == 0 ? 0 : rank - 1];
}

/* Records `values`, then checks every quantile, the summary and max. */
static void
check_distribution(const char *name, int64_t *values, size_t n)
{
  buttress_histogram *h = histogram_new();
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    assert_rc(buttress_histogram_record(h, values[i]), 0);
    sum += (double)values[i];
  }
  qsort(values, n, sizeof *values, cmp_i64);
  int64_t last = 0;
  for (size_t i = 0; i < sizeof quantiles / sizeof quantiles[0]; i++) {
    double q = quantiles[i];
    int64_t got = -1, want = exact_quantile(values, n, q);
    assert_rc(buttress_histogram_quantile(h, q, &got), 0);
    if (!(fabs((double)(got - want)) <= 0.02 * (double)want))
      fail_msg("%s: q %.3f gives %lld, exact %lld (%.3f%% off)", name, q,
               (long long)got, (long long)want,
               100.0 * fabs((double)(got - want)) / (double)want);
    assert_true(got >= last); /* quantiles never decrease with q */
    last = got;
  }
  buttress_latency lat;
  memset(&lat, 0xff, sizeof lat);
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, n);
  assert_i64_eq(lat.max_ns, values[n - 1]);
  /* The summary's percentiles are the quantiles. */
  int64_t q50, q95, q99;
  assert_rc(buttress_histogram_quantile(h, 0.5, &q50), 0);
  assert_rc(buttress_histogram_quantile(h, 0.95, &q95), 0);
  assert_rc(buttress_histogram_quantile(h, 0.99, &q99), 0);
  assert_i64_eq(lat.p50_ns, q50);
  assert_i64_eq(lat.p95_ns, q95);
  assert_i64_eq(lat.p99_ns, q99);
  assert_rel_close(lat.mean_ns, sum / (double)n, 0.02);
  free(h);
}

static double
next_unit(uint64_t *prng)
{
  return ref_unit(ref_splitmix64_next(prng));
}

enum { N = 200000 };

static void
test_uniform(void **state)
{
  (void)state;
  int64_t *v = malloc(N * sizeof *v);
  assert_non_null(v);
  uint64_t prng = 1;
  for (size_t i = 0; i < N; i++)
    v[i] = 1000 + (int64_t)(next_unit(&prng) * 1e9); /* 1 us .. 1 s */
  check_distribution("uniform", v, N);
  free(v);
}

static void
test_small_values_exact(void **state)
{
  (void)state;
  /* 2% of a value below 50 is less than 1 ns: these must read back exact. */
  int64_t *v = malloc(N * sizeof *v);
  assert_non_null(v);
  uint64_t prng = 2;
  for (size_t i = 0; i < N; i++)
    v[i] = (int64_t)(next_unit(&prng) * 200);
  check_distribution("uniform 0..199", v, N);
  free(v);
}

static void
test_exponential(void **state)
{
  (void)state;
  int64_t *v = malloc(N * sizeof *v);
  assert_non_null(v);
  uint64_t prng = 3;
  for (size_t i = 0; i < N; i++)
    v[i] = 1 + (int64_t)(-5e6 * log(1.0 - next_unit(&prng))); /* mean 5 ms */
  check_distribution("exponential", v, N);
  free(v);
}

static void
test_lognormal(void **state)
{
  (void)state;
  int64_t *v = malloc(N * sizeof *v);
  assert_non_null(v);
  uint64_t prng = 4;
  for (size_t i = 0; i < N; i++) {
    /* Box-Muller; 1 - u keeps log() away from 0. */
    double z = sqrt(-2.0 * log(1.0 - next_unit(&prng))) *
               cos(2.0 * M_PI * next_unit(&prng));
    v[i] = (int64_t)exp(log(2e6) + 1.5 * z); /* median 2 ms, a wide tail */
    if (v[i] >= TOP)
      v[i] = TOP - 1;
  }
  check_distribution("lognormal", v, N);
  free(v);
}

static void
test_constant(void **state)
{
  (void)state;
  const int64_t constants[] = {0, 1, 17, 123456789, TOP - 1};
  for (size_t c = 0; c < sizeof constants / sizeof constants[0]; c++) {
    int64_t *v = malloc(1000 * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < 1000; i++)
      v[i] = constants[c];
    check_distribution("constant", v, 1000);
    free(v);
  }
}

static void
test_empty(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  buttress_latency lat;
  memset(&lat, 0xff, sizeof lat);
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, 0);
  assert_i64_eq(lat.p50_ns, 0);
  assert_i64_eq(lat.p95_ns, 0);
  assert_i64_eq(lat.p99_ns, 0);
  assert_i64_eq(lat.max_ns, 0);
  free(h);
}

/* Merging src into dst reads back as if dst had recorded both. */
static void
test_merge_equals_recording_both(void **state)
{
  (void)state;
  buttress_histogram *a = histogram_new(), *b = histogram_new(), *both = histogram_new();
  uint64_t prng = 5;
  for (int i = 0; i < 50000; i++) {
    int64_t x = (int64_t)(next_unit(&prng) * 1e7);
    int64_t y = 1 + (int64_t)(-2e8 * log(1.0 - next_unit(&prng)));
    assert_rc(buttress_histogram_record(a, x), 0);
    assert_rc(buttress_histogram_record(both, x), 0);
    assert_rc(buttress_histogram_record(b, y), 0);
    assert_rc(buttress_histogram_record(both, y), 0);
  }
  assert_rc(buttress_histogram_merge(a, b), 0);
  for (int i = 0; i <= 1000; i++) {
    int64_t qa, qboth;
    assert_rc(buttress_histogram_quantile(a, i / 1000.0, &qa), 0);
    assert_rc(buttress_histogram_quantile(both, i / 1000.0, &qboth), 0);
    assert_i64_eq(qa, qboth);
  }
  buttress_latency la, lb;
  assert_rc(buttress_histogram_summary(a, &la), 0);
  assert_rc(buttress_histogram_summary(both, &lb), 0);
  assert_int_equal(la.count, 100000);
  assert_int_equal(la.count, lb.count);
  assert_i64_eq(la.max_ns, lb.max_ns);
  assert_i64_eq(la.p50_ns, lb.p50_ns);
  assert_i64_eq(la.p99_ns, lb.p99_ns);
  assert_rel_close(la.mean_ns, lb.mean_ns, 1e-9);
  /* src is left as it was. */
  buttress_latency lsrc;
  assert_rc(buttress_histogram_summary(b, &lsrc), 0);
  assert_int_equal(lsrc.count, 50000);
  free(a);
  free(b);
  free(both);
}

/* Values past 2**38 go to the top bucket: counted, never an error, max
 * still exact, quantiles finite and not negative. */
static void
test_huge_values_clamp(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  const int64_t huge[] = {TOP, INT64_C(1) << 40, INT64_C(1) << 62, INT64_MAX};
  for (size_t i = 0; i < 4; i++)
    assert_rc(buttress_histogram_record(h, huge[i]), 0);
  buttress_latency lat;
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, 4);
  assert_i64_eq(lat.max_ns, INT64_MAX);
  assert_true(isfinite(lat.mean_ns) && lat.mean_ns > 0);
  for (size_t i = 0; i < sizeof quantiles / sizeof quantiles[0]; i++) {
    int64_t q;
    assert_rc(buttress_histogram_quantile(h, quantiles[i], &q), 0);
    /* The top bucket reads back as about 2**38 (within its precision). */
    assert_i64_range(q, TOP - TOP / 32, INT64_MAX);
  }
  /* Small values recorded next to them still read back right. */
  for (int i = 0; i < 96; i++)
    assert_rc(buttress_histogram_record(h, 1000), 0);
  int64_t p50;
  assert_rc(buttress_histogram_quantile(h, 0.5, &p50), 0);
  assert_i64_range(p50, 980, 1020);
  free(h);
}

static void
test_negative_values_rejected(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  assert_rc(buttress_histogram_record(h, 5), 0);
  assert_rc(buttress_histogram_record(h, -1), BUTTRESS_EINVAL);
  assert_rc(buttress_histogram_record(h, INT64_MIN), BUTTRESS_EINVAL);
  buttress_latency lat;
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, 1);
  assert_i64_eq(lat.max_ns, 5);
  free(h);
}

static void
test_bad_quantile_rejected(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  assert_rc(buttress_histogram_record(h, 5), 0);
  const double bad[] = {-0.01, 1.01, -INFINITY, INFINITY, NAN};
  for (size_t i = 0; i < 5; i++) {
    int64_t out = 0;
    assert_rc(buttress_histogram_quantile(h, bad[i], &out), BUTTRESS_EINVAL);
  }
  free(h);
}

static void
test_reset(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  for (int i = 0; i < 100; i++)
    assert_rc(buttress_histogram_record(h, MS(i)), 0);
  assert_rc(buttress_histogram_reset(h), 0);
  buttress_latency lat;
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, 0);
  assert_i64_eq(lat.max_ns, 0);
  assert_rc(buttress_histogram_record(h, 42), 0);
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, 1);
  assert_i64_eq(lat.max_ns, 42);
  assert_i64_eq(lat.p99_ns, 42);
  free(h);
}

/* ------------------------------------------------------------ threads */

enum { REC_THREADS = 8, REC_PER_THREAD = 100000 };

struct rec_arg {
  buttress_histogram *h;
  pthread_barrier_t *start;
  int64_t id;
  int errors;
};

static void *
rec_thread(void *p)
{
  struct rec_arg *a = p;
  pthread_barrier_wait(a->start);
  for (int64_t i = 0; i < REC_PER_THREAD; i++)
    if (buttress_histogram_record(a->h, a->id * 1000000 + i) != 0)
      a->errors++;
  return NULL;
}

static void
test_concurrent_records_all_counted(void **state)
{
  (void)state;
  buttress_histogram *h = histogram_new();
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, REC_THREADS);
  pthread_t th[REC_THREADS];
  struct rec_arg args[REC_THREADS];
  for (int i = 0; i < REC_THREADS; i++) {
    args[i] = (struct rec_arg){h, &start, i + 1, 0};
    assert_int_equal(pthread_create(&th[i], NULL, rec_thread, &args[i]), 0);
  }
  for (int i = 0; i < REC_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].errors, 0);
  }
  pthread_barrier_destroy(&start);
  buttress_latency lat;
  assert_rc(buttress_histogram_summary(h, &lat), 0);
  assert_int_equal(lat.count, (uint64_t)REC_THREADS * REC_PER_THREAD);
  assert_i64_eq(lat.max_ns, (int64_t)REC_THREADS * 1000000 + REC_PER_THREAD - 1);
  free(h);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform),
      cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_exponential),
      cmocka_unit_test(test_lognormal),
      cmocka_unit_test(test_constant),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_merge_equals_recording_both),
      cmocka_unit_test(test_huge_values_clamp),
      cmocka_unit_test(test_negative_values_rejected),
      cmocka_unit_test(test_bad_quantile_rejected),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_concurrent_records_all_counted),
  };
  return cmocka_run_group_tests_name("histogram", tests, NULL, NULL);
}
