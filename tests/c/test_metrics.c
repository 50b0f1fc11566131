/*
 * Throughput and latency in the metrics: calls per second for breakers and
 * retry policies (from clock stamps left by callers that have the time), and
 * the latency of whole retried calls.
 */
#include "util.h"

#define T0 SEC(5000) /* an arbitrary monotonic "now" far from 0 */

static double
breaker_rate(buttress_breaker *br, int64_t now)
{
  return breaker_metrics(br, now).calls_per_second;
}

static buttress_retry_metrics
retry_metrics_at(buttress_retry *r, int64_t now)
{
  buttress_retry_metrics m;
  memset(&m, 0xff, sizeof m);
  assert_rc(buttress_retry_metrics_get(r, now, &m), 0);
  return m;
}

/* Untimed successes (no clock at all) still count: a read at T0 stamps the
 * count, a read 10 s later sees every call made between them. */
static void
test_breaker_rate_between_reads(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  assert_true(breaker_rate(br, T0) == 0.0); /* one stamp, no interval yet */
  for (int i = 0; i < 500; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_rel_close(breaker_rate(br, T0 + SEC(10)), 50.0, 1e-9);
  /* The oldest stamp of the minute stays the base. */
  for (int i = 0; i < 500; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_rel_close(breaker_rate(br, T0 + SEC(20)), 50.0, 1e-9);
}

/* Stamps older than a minute are forgotten: the rate follows the traffic. */
static void
test_breaker_rate_forgets_old_stamps(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  breaker_rate(br, T0);
  for (int i = 0; i < 6000; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_rel_close(breaker_rate(br, T0 + SEC(60)), 100.0, 1e-9);
  /* Quiet for two minutes: the stamps of the busy minute are gone. */
  breaker_rate(br, T0 + SEC(170));
  assert_true(breaker_rate(br, T0 + SEC(180)) == 0.0);
  for (int i = 0; i < 20; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_rel_close(breaker_rate(br, T0 + SEC(190)), 1.0, 1e-9);
}

/* Timed calls stamp the meter themselves: no reader is needed between. */
static void
test_breaker_rate_stamped_by_timed_calls(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 0; i < 300; i++) /* 300 calls over 30 s, each with the time */
    assert_rc(breaker_call(br, T0 + MS(100) * i, BUTTRESS_SUCCESS), 0);
  /* The first stamp (at T0, count 0) is the base: 300 calls in 30 s. */
  assert_rel_close(breaker_rate(br, T0 + SEC(30)), 10.0, 1e-9);
  /* Excluded and cancelled outcomes are calls too. */
  buttress_ticket t;
  for (int i = 0; i < 30; i++) {
    assert_rc(buttress_breaker_allow(br, T0 + SEC(30), &t), 0);
    assert_rc(buttress_breaker_record(br, &t, i % 2 ? BUTTRESS_EXCLUDED : BUTTRESS_CANCELLED,
                                      BUTTRESS_NO_CLOCK, T0 + SEC(30)),
              0);
  }
  assert_rel_close(breaker_rate(br, T0 + SEC(30)), 11.0, 1e-9);
}

/* Without a clock the rate is unknown and reported as 0; the read changes
 * nothing. */
static void
test_breaker_rate_without_clock(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 0; i < 10; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_true(breaker_rate(br, BUTTRESS_NO_CLOCK) == 0.0);
  assert_true(breaker_rate(br, T0) == 0.0);
  assert_true(breaker_rate(br, T0 + SEC(1)) == 0.0); /* no calls since T0 */
}

/* Millisecond precision: 1,000 calls in 250 ms is 4,000 a second. */
static void
test_breaker_rate_sub_second(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  breaker_rate(br, T0 + MS(100));
  for (int i = 0; i < 1000; i++)
    assert_rc(breaker_call(br, BUTTRESS_NO_CLOCK, BUTTRESS_SUCCESS), 0);
  assert_rel_close(breaker_rate(br, T0 + MS(350)), 4000.0, 1e-9);
}

/* Retry policies: calls per second over begin()s, stamped by begin() when
 * it has the time, by observe() and by metrics reads. */
static void
test_retry_rate(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_true(retry_metrics_at(r, T0).calls_per_second == 0.0);
  for (int i = 0; i < 40; i++) { /* untimed calls */
    assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK), 0);
    assert_rc(buttress_retry_end(r, &call, BUTTRESS_SUCCESS), 0);
  }
  assert_rel_close(retry_metrics_at(r, T0 + SEC(4)).calls_per_second, 10.0, 1e-9);
  assert_true(retry_metrics_at(r, BUTTRESS_NO_CLOCK).calls_per_second == 0.0);
  assert_int_equal(retry_metrics_at(r, BUTTRESS_NO_CLOCK).calls, 40);
}

/* observe() feeds a latency histogram of whole calls; NO_CLOCK durations
 * are not latency. */
static void
test_retry_latency(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  buttress_retry *r = retry_new(&cfg, 1);
  for (int i = 1; i <= 1000; i++)
    assert_rc(buttress_retry_observe(r, MS(i), T0 + MS(i)), 0);
  assert_rc(buttress_retry_observe(r, BUTTRESS_NO_CLOCK, BUTTRESS_NO_CLOCK), 0);
  buttress_retry_metrics m = retry_metrics_at(r, T0 + SEC(2));
  assert_int_equal(m.latency.count, 1000);
  assert_i64_eq(m.latency.max_ns, MS(1000));
  /* within the histogram's 1/64 of the exact quantiles */
  assert_true(llabs(m.latency.p50_ns - MS(500)) <= MS(500) / 64);
  assert_true(llabs(m.latency.p95_ns - MS(950)) <= MS(950) / 64);
  assert_true(llabs(m.latency.p99_ns - MS(990)) <= MS(990) / 64);
  assert_rc(buttress_retry_observe(NULL, 1, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_observe(r, -2, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_observe(r, 1, -2), BUTTRESS_EINVAL);
  assert_int_equal(retry_metrics_at(r, T0 + SEC(2)).latency.count, 1000);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_breaker_rate_between_reads),
      cmocka_unit_test(test_breaker_rate_forgets_old_stamps),
      cmocka_unit_test(test_breaker_rate_stamped_by_timed_calls),
      cmocka_unit_test(test_breaker_rate_without_clock),
      cmocka_unit_test(test_breaker_rate_sub_second),
      cmocka_unit_test(test_retry_rate),
      cmocka_unit_test(test_retry_latency),
  };
  return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
