/*
 * Retry budget: within any window, retries <= min_per_second * window_s +
 * ratio * calls; the sliding window forgets old calls and retries; racing
 * threads never get more than that.
 *
 * Ratios here are exact binary fractions (0.25, 0.5) so that the allowance
 * is an exact integer; 0.2 is tested separately against its decimal value.
 */
#include <pthread.h>

#include "util.h"

#define T0 SEC(1000)

static buttress_budget_config
budget_cfg(double ratio, double min_per_second, int64_t window)
{
  buttress_budget_config cfg;
  buttress_budget_config_init(&cfg);
  cfg.ratio = ratio;
  cfg.min_per_second = min_per_second;
  cfg.window_ns = window;
  return cfg;
}

static buttress_budget_metrics
metrics_at(const buttress_budget *b, int64_t now)
{
  buttress_budget_metrics m;
  memset(&m, 0, sizeof m);
  assert_rc(buttress_budget_metrics_get(b, now, &m), 0);
  return m;
}

/* Withdraws until refused; returns how many were allowed. */
static long
drain(buttress_budget *b, int64_t now, long limit)
{
  long n = 0;
  while (n < limit && buttress_budget_withdraw(b, now) == 0)
    n++;
  return n;
}

static void
deposit_n(buttress_budget *b, int64_t now, long n)
{
  for (long i = 0; i < n; i++)
    assert_rc(buttress_budget_deposit(b, now), 0);
}

static void
test_reserve_without_calls(void **state)
{
  (void)state;
  buttress_budget_config cfg = budget_cfg(0.25, 10, SEC(10));
  buttress_budget *b = budget_new(&cfg);
  assert_true(metrics_at(b, T0).available == 100.0);
  assert_int_equal(drain(b, T0, 1000), 100); /* 10/s over a 10 s window */
  assert_rc(buttress_budget_withdraw(b, T0), BUTTRESS_BUDGET);
  buttress_budget_metrics m = metrics_at(b, T0);
  assert_int_equal(m.withdrawals, 100);
  assert_int_equal(m.rejections, 2);
  assert_int_equal(m.deposits, 0);
  assert_int_equal(m.window_retries, 100);
  assert_true(m.available == 0.0);
  free(b);
}

static void
test_calls_earn_ratio(void **state)
{
  (void)state;
  buttress_budget_config cfg = budget_cfg(0.25, 10, SEC(10));
  buttress_budget *b = budget_new(&cfg);
  deposit_n(b, T0, 400);
  buttress_budget_metrics m = metrics_at(b, T0);
  assert_int_equal(m.deposits, 400);
  assert_int_equal(m.window_calls, 400);
  assert_true(m.available == 200.0);
  assert_int_equal(drain(b, T0, 10000), 200);
  /* Three more calls earn 0.75: still not a whole retry; the fourth does. */
  deposit_n(b, T0, 3);
  assert_rc(buttress_budget_withdraw(b, T0), BUTTRESS_BUDGET);
  deposit_n(b, T0, 1);
  assert_rc(buttress_budget_withdraw(b, T0), 0);
  assert_rc(buttress_budget_withdraw(b, T0), BUTTRESS_BUDGET);
  free(b);
}

/* The documented default ratio: 1000 calls earn 200 retries, not 199 from
 * an accumulated rounding error, and never 201. */
static void
test_decimal_ratio(void **state)
{
  (void)state;
  buttress_budget_config cfg;
  buttress_budget_config_init(&cfg); /* 0.2, 10/s, 10 s */
  buttress_budget *b = budget_new(&cfg);
  deposit_n(b, T0, 1000);
  assert_int_equal(drain(b, T0, 10000), 300);
  free(b);
}

/* A fractional allowance allows its whole part: 0.5/s over 3 s is 1.5. */
static void
test_fractional_reserve(void **state)
{
  (void)state;
  buttress_budget_config cfg = budget_cfg(0, 0.5, SEC(3));
  buttress_budget *b = budget_new(&cfg);
  assert_true(metrics_at(b, T0).available == 1.5);
  assert_int_equal(drain(b, T0, 100), 1);
  free(b);
}

static void
test_nothing_allowed_when_zero(void **state)
{
  (void)state;
  buttress_budget_config cfg = budget_cfg(0, 0, SEC(1));
  buttress_budget *b = budget_new(&cfg);
  deposit_n(b, T0, 1000);
  assert_rc(buttress_budget_withdraw(b, T0), BUTTRESS_BUDGET);
  free(b);

  cfg = budget_cfg(0.5, 0, SEC(1));
  b = budget_new(&cfg);
  assert_rc(buttress_budget_withdraw(b, T0), BUTTRESS_BUDGET);
  deposit_n(b, T0, 2);
  assert_int_equal(drain(b, T0, 100), 1);
  free(b);
}

/* Calls and retries leave the window once it has slid past them.  Times are
 * kept away from the window's edges, where buckets may approximate. */
static void
test_window_slides(void **state)
{
  (void)state;
  const int64_t w = SEC(10);
  buttress_budget_config cfg = budget_cfg(0.5, 10, w);
  buttress_budget *b = budget_new(&cfg);
  deposit_n(b, T0, 100);
  assert_int_equal(drain(b, T0, 10000), 150);
  /* Half a window later nothing has expired. */
  assert_rc(buttress_budget_withdraw(b, T0 + w / 2), BUTTRESS_BUDGET);
  assert_int_equal(metrics_at(b, T0 + w / 2).window_retries, 150);
  assert_int_equal(metrics_at(b, T0 + w / 2).window_calls, 100);

  /* Two windows later everything has: only the reserve is left. */
  int64_t t1 = T0 + 2 * w;
  buttress_budget_metrics m = metrics_at(b, t1);
  assert_int_equal(m.window_calls, 0);
  assert_int_equal(m.window_retries, 0);
  assert_true(m.available == 100.0);
  /* Lifetime counters stay. */
  assert_int_equal(m.deposits, 100);
  assert_int_equal(m.withdrawals, 150);
  assert_int_equal(drain(b, t1, 10000), 100);

  /* 100 retries spent at t1; 40 calls and 20 retries at t1 + w/2.  At
   * t1 + 1.25 w the first 100 have expired, the rest have not. */
  deposit_n(b, t1 + w / 2, 40);
  assert_int_equal(drain(b, t1 + w / 2, 10000), 20);
  int64_t t2 = t1 + w + w / 4;
  m = metrics_at(b, t2);
  assert_int_equal(m.window_calls, 40);
  assert_int_equal(m.window_retries, 20);
  assert_int_equal(drain(b, t2, 10000), 100);
  free(b);
}

/* The sliding window needs the time: without it nothing is counted. */
static void
test_no_clock_protocol(void **state)
{
  (void)state;
  buttress_budget_config cfg = budget_cfg(0.5, 1, SEC(10));
  buttress_budget *b = budget_new(&cfg);
  assert_rc(buttress_budget_deposit(b, BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  assert_rc(buttress_budget_withdraw(b, BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  buttress_budget_metrics m = metrics_at(b, T0);
  assert_int_equal(m.deposits, 0);
  assert_int_equal(m.withdrawals, 0);
  assert_int_equal(m.rejections, 0);
  assert_int_equal(drain(b, T0, 1000), 10);
  free(b);
}

static void
test_caller_errors(void **state)
{
  (void)state;
  buttress_budget_metrics m;
  assert_rc(buttress_budget_deposit(NULL, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_budget_withdraw(NULL, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_budget_metrics_get(NULL, T0, &m), BUTTRESS_EINVAL);
}

/* ------------------------------------------------------------ racing */

enum { RACE_THREADS = 8 };

struct race_arg {
  buttress_budget *b;
  pthread_barrier_t *start;
  int64_t now, spread; /* operation i happens at now + (i % 10) * spread */
  long tries, deposits;
  long granted, refused;
};

static void *
race_thread(void *p)
{
  struct race_arg *a = p;
  pthread_barrier_wait(a->start);
  for (long i = 0; i < a->tries || i < a->deposits; i++) {
    int64_t now = a->now + (i % 10) * a->spread;
    if (i < a->deposits)
      buttress_budget_deposit(a->b, now);
    if (i < a->tries) {
      if (buttress_budget_withdraw(a->b, now) == 0)
        a->granted++;
      else
        a->refused++;
    }
  }
  return NULL;
}

static void
run_race(buttress_budget *b, int64_t now, int64_t spread, long tries, long deposits,
         long *granted, long *refused)
{
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, RACE_THREADS);
  pthread_t th[RACE_THREADS];
  struct race_arg args[RACE_THREADS];
  for (int i = 0; i < RACE_THREADS; i++) {
    args[i] = (struct race_arg){b, &start, now, spread, tries, deposits, 0, 0};
    assert_int_equal(pthread_create(&th[i], NULL, race_thread, &args[i]), 0);
  }
  *granted = *refused = 0;
  for (int i = 0; i < RACE_THREADS; i++) {
    pthread_join(th[i], NULL);
    *granted += args[i].granted;
    *refused += args[i].refused;
  }
  pthread_barrier_destroy(&start);
}

/* Eight threads withdraw at once from a known balance: exactly the balance
 * is granted, never one more. */
static void
test_racing_withdrawals_never_overgrant(void **state)
{
  (void)state;
  const int rounds = (int)scaled(50);
  for (int round = 0; round < rounds; round++) {
    buttress_budget_config cfg = budget_cfg(0.25, 10, SEC(10));
    buttress_budget *b = budget_new(&cfg);
    deposit_n(b, T0, 4000); /* 100 + 1000 */
    long granted, refused;
    run_race(b, T0, 0, 500, 0, &granted, &refused);
    assert_int_equal(granted, 1100);
    assert_int_equal(refused, RACE_THREADS * 500 - 1100);
    buttress_budget_metrics m = metrics_at(b, T0);
    assert_int_equal(m.withdrawals, 1100);
    assert_int_equal(m.rejections, (uint64_t)refused);
    free(b);
  }
}

/* Deposits and withdrawals racing, spread over the ten buckets of one
 * window so that threads also race to start each bucket: at no point more
 * than allowed, so in the end no more than the formula of all calls; a
 * final drain (all ten buckets still in the window) then reaches the
 * formula exactly, unless the budget lost count of a call or a retry. */
static void
test_racing_deposits_and_withdrawals(void **state)
{
  (void)state;
  const int rounds = (int)scaled(200);
  const int64_t w = SEC(10), bucket = w / BUTTRESS_TIME_BUCKETS;
  const long allowed = 50 + RACE_THREADS * 400 / 2;
  int over = 0, under = 0;
  for (int round = 0; round < rounds; round++) {
    buttress_budget_config cfg = budget_cfg(0.5, 5, w);
    buttress_budget *b = budget_new(&cfg);
    long granted, refused;
    run_race(b, T0 + MS(1), bucket, 300, 400, &granted, &refused);
    assert_true(granted <= allowed);
    int64_t t_end = T0 + MS(1) + 9 * bucket;
    long total = granted + drain(b, t_end, 100000);
    if (total != allowed && over + under == 0)
      fprintf(stderr, "round %d: %ld retries allowed in all, the formula says %ld\n",
              round, total, allowed);
    over += total > allowed;
    under += total < allowed;
    buttress_budget_metrics m = metrics_at(b, t_end);
    assert_int_equal(m.deposits, RACE_THREADS * 400);
    assert_int_equal(m.window_calls, RACE_THREADS * 400);
    assert_int_equal(m.withdrawals, (uint64_t)total);
    free(b);
  }
  assert_int_equal(over, 0);  /* over-granted: a retry was lost from the window */
  assert_int_equal(under, 0); /* under-granted: a call was lost from the window */
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reserve_without_calls),
      cmocka_unit_test(test_calls_earn_ratio),
      cmocka_unit_test(test_decimal_ratio),
      cmocka_unit_test(test_fractional_reserve),
      cmocka_unit_test(test_nothing_allowed_when_zero),
      cmocka_unit_test(test_window_slides),
      cmocka_unit_test(test_no_clock_protocol),
      cmocka_unit_test(test_caller_errors),
      cmocka_unit_test(test_racing_withdrawals_never_overgrant),
      cmocka_unit_test(test_racing_deposits_and_withdrawals),
  };
  return cmocka_run_group_tests_name("budget", tests, NULL, NULL);
}
