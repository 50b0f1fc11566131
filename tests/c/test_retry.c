/*
 * Retry decisions: attempts, deadlines (own and inherited), override delays,
 * zero delays, budget spending and the counters.
 */
#include "util.h"

#define T0 SEC(1000) /* an arbitrary monotonic "now" far from 0 */

/* Un-jittered 100 ms doubling to 10 s, so delays are known exactly. */
static buttress_retry_config
retry_cfg(uint32_t attempts, int64_t deadline)
{
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.attempts = attempts;
  cfg.deadline_ns = deadline;
  cfg.backoff.base_ns = MS(100);
  cfg.backoff.multiplier = 2.0;
  cfg.backoff.cap_ns = SEC(10);
  cfg.backoff.jitter = BUTTRESS_JITTER_NONE;
  return cfg;
}

static buttress_retry_metrics
retry_metrics(buttress_retry *r)
{
  buttress_retry_metrics m;
  memset(&m, 0xff, sizeof m);
  assert_rc(buttress_retry_metrics_get(r, BUTTRESS_NO_CLOCK, &m), 0);
  return m;
}

static buttress_budget_metrics
budget_metrics(const buttress_budget *b, int64_t now)
{
  buttress_budget_metrics m;
  memset(&m, 0, sizeof m);
  assert_rc(buttress_budget_metrics_get(b, now, &m), 0);
  return m;
}

/* A budget that allows exactly `n` retries and earns nothing from calls. */
static buttress_budget *
budget_of(int n)
{
  buttress_budget_config cfg;
  buttress_budget_config_init(&cfg);
  cfg.ratio = 0;
  cfg.min_per_second = n;
  cfg.window_ns = SEC(1);
  return budget_new(&cfg);
}

static void
test_attempts_then_exhausted(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(4, BUTTRESS_NONE);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  int64_t now = T0;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, now), 0);
  assert_int_equal(call.attempt, 1);
  assert_i64_eq(call.started_ns, now);
  assert_i64_eq(call.deadline_ns, BUTTRESS_NONE);
  assert_int_equal(call.reason, 0);
  const int64_t delays[] = {MS(100), MS(200), MS(400)};
  for (int i = 0; i < 3; i++) {
    assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, now), 0);
    assert_i64_eq(call.delay_ns, delays[i]);
    assert_int_equal(call.attempt, 2 + i); /* attempts started so far */
    now += call.delay_ns;
  }
  /* Four attempts made: the fourth failure gives up. */
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, now), BUTTRESS_EXHAUSTED);
  assert_int_equal(call.reason, BUTTRESS_EXHAUSTED);
  assert_int_equal(call.attempt, 4);

  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.calls, 1);
  assert_int_equal(m.attempts, 4);
  assert_int_equal(m.retries, 3);
  assert_int_equal(m.giveups_attempts, 1);
  assert_int_equal(m.giveups_deadline, 0);
  assert_int_equal(m.giveups_budget, 0);
  assert_int_equal(m.successes, 0);
  assert_int_equal(m.failures, 0);
  free(r);
}

static void
test_single_attempt_never_retries(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(1, BUTTRESS_NONE);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), BUTTRESS_EXHAUSTED);
  assert_int_equal(retry_metrics(r).retries, 0);
  free(r);
}

static void
test_end_counts_outcomes(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(3, BUTTRESS_NONE);
  buttress_retry *r = retry_new(&cfg, 1);
  for (int i = 0; i < 5; i++) {
    buttress_retry_call call;
    assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    if (i % 2)
      assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    assert_rc(buttress_retry_end(r, &call, i < 3 ? BUTTRESS_SUCCESS : BUTTRESS_FAILURE), 0);
  }
  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.calls, 5);
  assert_int_equal(m.attempts, 7);
  assert_int_equal(m.retries, 2);
  assert_int_equal(m.successes, 3);
  assert_int_equal(m.failures, 2);
  free(r);
}

/* A retry whose delay would end at or after the deadline is given up. */
static void
test_never_sleeps_into_the_deadline(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(100, SEC(1));
  cfg.backoff.multiplier = 1.0; /* every delay 100 ms */
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;

  /* Ends 1 ns before the deadline: allowed. */
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(call.deadline_ns, T0 + SEC(1));
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0 + MS(900) - 1), 0);
  assert_i64_eq(call.delay_ns, MS(100));

  /* Ends exactly at the deadline: given up. */
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0 + MS(900)), BUTTRESS_DEADLINE);
  assert_int_equal(call.reason, BUTTRESS_DEADLINE);

  /* Deadline already passed. */
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0 + SEC(2)), BUTTRESS_DEADLINE);

  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.calls, 3);
  assert_int_equal(m.retries, 1);
  assert_int_equal(m.giveups_deadline, 2);
  assert_int_equal(m.giveups_attempts, 0);
  free(r);
}

/* Every delay handed out, whatever the jitter, ends before the deadline. */
static void
test_jittered_delays_respect_deadline(void **state)
{
  (void)state;
  for (int jitter = BUTTRESS_JITTER_NONE; jitter <= BUTTRESS_JITTER_DECORRELATED; jitter++) {
    buttress_retry_config cfg = retry_cfg(1000, SEC(3));
    cfg.backoff.jitter = jitter;
    cfg.backoff.base_ns = MS(50);
    cfg.backoff.cap_ns = SEC(2);
    buttress_retry *r = retry_new(&cfg, (uint64_t)jitter + 10);
    for (int c = 0; c < 50; c++) {
      buttress_retry_call call;
      int64_t now = T0;
      assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, now), 0);
      int rc;
      while ((rc = buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, now)) == 0) {
        assert_i64_range(call.delay_ns, 0, SEC(2));
        assert_true(now + call.delay_ns < call.deadline_ns);
        now += call.delay_ns + MS(7); /* the attempt itself takes 7 ms */
      }
      assert_rc(rc, BUTTRESS_DEADLINE);
    }
    free(r);
  }
}

/* PITFALLS #17: a zero delay is reported as exactly 0 (bindings then skip
 * the sleep call). */
static void
test_zero_delay_reported_as_zero(void **state)
{
  (void)state;
  /* base 0: the ceiling is 0 for every retry, so full and equal jitter give
   * 0, and decorrelated draws from [0, min(cap, 3 * 0)]. */
  for (int jitter = BUTTRESS_JITTER_NONE; jitter <= BUTTRESS_JITTER_DECORRELATED; jitter++) {
    buttress_retry_config cfg = retry_cfg(6, BUTTRESS_NONE);
    cfg.backoff.base_ns = 0;
    cfg.backoff.jitter = jitter;
    buttress_retry *r = retry_new(&cfg, 3);
    buttress_retry_call call;
    assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    for (int i = 0; i < 5; i++) {
      assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
      assert_i64_eq(call.delay_ns, 0);
    }
    free(r);
  }
}

static void
test_override_delay_replaces_backoff(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(10, SEC(10));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, SEC(5), T0), 0);
  assert_i64_eq(call.delay_ns, SEC(5)); /* longer than the backoff's 100 ms */
  assert_rc(buttress_retry_next(r, &call, NULL, 0, T0 + SEC(5)), 0);
  assert_i64_eq(call.delay_ns, 0);
  assert_rc(buttress_retry_next(r, &call, NULL, 7, T0 + SEC(5)), 0);
  assert_i64_eq(call.delay_ns, 7);
  /* Past the cap is fine (the server asked for it) but not past the deadline. */
  assert_rc(buttress_retry_next(r, &call, NULL, SEC(5), T0 + SEC(5)), BUTTRESS_DEADLINE);
  assert_int_equal(call.reason, BUTTRESS_DEADLINE);

  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, SEC(10) - 1, T0), 0);
  assert_i64_eq(call.delay_ns, SEC(10) - 1);
  free(r);
}

/* PITFALLS #18: the budget is spent when the retry is decided, and only
 * when attempts and deadline allow the retry. */
static void
test_budget_spent_only_when_decided(void **state)
{
  (void)state;
  buttress_budget *budget = budget_of(2);
  buttress_retry_config cfg = retry_cfg(10, BUTTRESS_NONE);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_int_equal(budget_metrics(budget, T0).deposits, 1);
  assert_rc(buttress_retry_next(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_int_equal(budget_metrics(budget, T0).withdrawals, 1); /* before any sleep */
  assert_rc(buttress_retry_next(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, budget, BUTTRESS_NONE, T0), BUTTRESS_BUDGET);
  assert_int_equal(call.reason, BUTTRESS_BUDGET);
  buttress_budget_metrics bm = budget_metrics(budget, T0);
  assert_int_equal(bm.withdrawals, 2);
  assert_int_equal(bm.rejections, 1);
  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.retries, 2);
  assert_int_equal(m.giveups_budget, 1);
  free(r);
  free(budget);

  /* Exhausted attempts and deadline give-ups leave the budget alone. */
  budget = budget_of(5);
  cfg = retry_cfg(1, BUTTRESS_NONE);
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, budget, BUTTRESS_NONE, T0), BUTTRESS_EXHAUSTED);
  free(r);
  cfg = retry_cfg(10, SEC(1));
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, budget, BUTTRESS_NONE, T0 + SEC(1)), BUTTRESS_DEADLINE);
  assert_rc(buttress_retry_begin(r, &call, budget, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, budget, SEC(2), T0), BUTTRESS_DEADLINE);
  bm = budget_metrics(budget, T0);
  assert_int_equal(bm.withdrawals, 0);
  assert_int_equal(bm.rejections, 0);
  assert_int_equal(bm.deposits, 3);
  free(r);
  free(budget);
}

/* begin() takes the earlier of its own deadline and the inherited one. */
static void
test_outer_deadline_nesting(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(3, SEC(10));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, T0 + SEC(5), T0), 0);
  assert_i64_eq(call.deadline_ns, T0 + SEC(5));
  assert_rc(buttress_retry_begin(r, &call, NULL, T0 + SEC(20), T0), 0);
  assert_i64_eq(call.deadline_ns, T0 + SEC(10));
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(call.deadline_ns, T0 + SEC(10));
  free(r);

  cfg = retry_cfg(3, BUTTRESS_NONE);
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, NULL, T0 + SEC(5), T0), 0);
  assert_i64_eq(call.deadline_ns, T0 + SEC(5));
  /* The inherited deadline bounds the inner retries too. */
  assert_rc(buttress_retry_next(r, &call, NULL, SEC(5), T0), BUTTRESS_DEADLINE);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(call.deadline_ns, BUTTRESS_NONE);

  /* An inherited deadline already passed: no attempt, counted as a give-up. */
  assert_rc(buttress_retry_begin(r, &call, NULL, T0 - 1, T0), BUTTRESS_DEADLINE);
  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.calls, 3);
  assert_int_equal(m.giveups_deadline, 2);
  free(r);
}

static void
test_remaining(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(3, SEC(2));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  int64_t left = 0;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_remaining(&call, T0, &left), 0);
  assert_i64_eq(left, SEC(2));
  assert_rc(buttress_retry_remaining(&call, T0 + MS(1500), &left), 0);
  assert_i64_eq(left, MS(500));
  assert_rc(buttress_retry_remaining(&call, T0 + SEC(2), &left), 0);
  assert_i64_eq(left, 0);
  assert_rc(buttress_retry_remaining(&call, T0 + SEC(9), &left), 0);
  assert_i64_eq(left, 0);
  free(r);

  cfg = retry_cfg(3, BUTTRESS_NONE);
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_remaining(&call, T0, &left), 0);
  assert_i64_eq(left, BUTTRESS_NONE);
  free(r);
}

/* Jittered retries stay within the capped exponential of their number. */
static void
test_full_jitter_within_ceiling(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(12, BUTTRESS_NONE);
  cfg.backoff.jitter = BUTTRESS_JITTER_FULL;
  buttress_retry *r = retry_new(&cfg, 11);
  for (int c = 0; c < 100; c++) {
    buttress_retry_call call;
    assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    for (uint32_t retry = 0; retry < 11; retry++) {
      assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
      assert_i64_range(call.delay_ns, 0, ref_ceiling(MS(100), 2.0, SEC(10), retry));
    }
  }
  free(r);
}

/* Decorrelated jitter grows from the call's own previous delay. */
static void
test_decorrelated_grows_from_call_prev(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(30, BUTTRESS_NONE);
  cfg.backoff.jitter = BUTTRESS_JITTER_DECORRELATED;
  buttress_retry *r = retry_new(&cfg, 12);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  int64_t prev = MS(100); /* the first retry grows from base */
  for (int i = 0; i < 29; i++) {
    assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    int64_t hi = 3 * prev < SEC(10) ? 3 * prev : SEC(10);
    assert_i64_range(call.delay_ns, MS(100), hi);
    assert_i64_eq(call.prev_delay_ns, call.delay_ns);
    prev = call.delay_ns;
  }
  free(r);
}

static void
test_same_seed_same_delays(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(20, BUTTRESS_NONE);
  cfg.backoff.jitter = BUTTRESS_JITTER_FULL;
  buttress_retry *a = retry_new(&cfg, 2024), *b = retry_new(&cfg, 2024);
  buttress_retry_call ca, cb;
  assert_rc(buttress_retry_begin(a, &ca, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_begin(b, &cb, NULL, BUTTRESS_NONE, T0), 0);
  for (int i = 0; i < 19; i++) {
    assert_rc(buttress_retry_next(a, &ca, NULL, BUTTRESS_NONE, T0), 0);
    assert_rc(buttress_retry_next(b, &cb, NULL, BUTTRESS_NONE, T0), 0);
    assert_i64_eq(ca.delay_ns, cb.delay_ns);
  }
  free(a);
  free(b);
}

/* "No clock": a decision that needs the time returns NEED_CLOCK and
 * changes nothing; one that does not need it goes ahead. */
static void
test_no_clock_protocol(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(5, SEC(10));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK),
            BUTTRESS_NEED_CLOCK);
  assert_int_equal(retry_metrics(r).calls, 0);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  buttress_retry_call before = call;
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK),
            BUTTRESS_NEED_CLOCK);
  assert_memory_equal(&before, &call, sizeof call);
  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.retries, 0);
  assert_int_equal(m.attempts, 1);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  free(r);

  /* No deadline and no budget: attempts and backoff need no time. */
  cfg = retry_cfg(3, BUTTRESS_NONE);
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK), 0);
  assert_i64_eq(call.delay_ns, MS(100));
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK),
            BUTTRESS_EXHAUSTED);
  free(r);
}

/* Sums of times and durations saturate instead of wrapping. */
static void
test_huge_times_saturate(void **state)
{
  (void)state;
  const int64_t late = INT64_C(1) << 62;
  buttress_retry_config cfg = retry_cfg(5, BUTTRESS_MAX_DURATION_NS);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, late), 0);
  assert_true(call.deadline_ns > late); /* not wrapped negative */
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, late), 0);
  assert_i64_eq(call.delay_ns, MS(100));
  /* A Retry-After of "forever" cannot fit before any deadline. */
  assert_rc(buttress_retry_next(r, &call, NULL, INT64_MAX, late), BUTTRESS_DEADLINE);
  int64_t left;
  assert_rc(buttress_retry_remaining(&call, late, &left), 0);
  assert_true(left > 0);
  free(r);

  cfg = retry_cfg(5, SEC(1));
  r = retry_new(&cfg, 1);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, INT64_MAX, T0), BUTTRESS_DEADLINE);
  free(r);
}

static void
test_caller_errors(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(3, BUTTRESS_NONE);
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  int64_t out;
  assert_rc(buttress_retry_begin(NULL, &call, NULL, BUTTRESS_NONE, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_begin(r, NULL, NULL, BUTTRESS_NONE, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(NULL, &call, NULL, BUTTRESS_NONE, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_next(r, NULL, NULL, BUTTRESS_NONE, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_remaining(NULL, T0, &out), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_remaining(&call, T0, NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_metrics_get(r, BUTTRESS_NO_CLOCK, NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_get_config(NULL, &cfg), BUTTRESS_EINVAL);
  free(r);
}

static void
test_get_config_round_trip(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(7, SEC(3));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_config out;
  memset(&out, 0xab, sizeof out);
  assert_rc(buttress_retry_get_config(r, &out), 0);
  assert_int_equal(out.attempts, 7);
  assert_i64_eq(out.deadline_ns, SEC(3));
  assert_i64_eq(out.backoff.base_ns, MS(100));
  assert_i64_eq(out.backoff.cap_ns, SEC(10));
  assert_int_equal(out.backoff.jitter, BUTTRESS_JITTER_NONE);
  free(r);
}

/* A sleep that wakes up late, past the deadline: resume() gives up instead
 * of starting an attempt with no time left, and takes back the attempt
 * next() counted.  On time, or without a deadline, it says go. */
static void
test_resume_after_a_late_wake_up(void **state)
{
  (void)state;
  buttress_retry_config cfg = retry_cfg(5, MS(1000));
  buttress_retry *r = retry_new(&cfg, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_resume(r, &call, BUTTRESS_NO_CLOCK), 0); /* first attempt */
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0 + MS(100)), 0);
  assert_i64_eq(call.delay_ns, MS(100));
  assert_rc(buttress_retry_resume(r, &call, BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  assert_rc(buttress_retry_resume(r, &call, T0 + MS(200)), 0); /* woke on time */
  assert_int_equal(call.attempt, 2);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0 + MS(300)), 0);
  assert_i64_eq(call.delay_ns, MS(200)); /* would end at 500 ms, before 1 s */
  /* ... but the sleep overran to the deadline itself */
  assert_rc(buttress_retry_resume(r, &call, T0 + MS(1000)), BUTTRESS_DEADLINE);
  assert_int_equal(call.reason, BUTTRESS_DEADLINE);
  assert_int_equal(call.attempt, 2);
  buttress_retry_metrics m = retry_metrics(r);
  assert_int_equal(m.attempts, 2);
  assert_int_equal(m.retries, 2);
  assert_int_equal(m.giveups_deadline, 1);
  /* the call is over: a second resume is a caller error, counted nowhere */
  assert_rc(buttress_retry_resume(r, &call, T0 + MS(1000)), BUTTRESS_EINVAL);
  assert_int_equal(retry_metrics(r).giveups_deadline, 1);

  /* no deadline: never a give-up, never the clock */
  buttress_retry_config free_cfg = retry_cfg(5, BUTTRESS_NONE);
  buttress_retry *r2 = retry_new(&free_cfg, 1);
  assert_rc(buttress_retry_begin(r2, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK), 0);
  assert_rc(buttress_retry_next(r2, &call, NULL, BUTTRESS_NONE, BUTTRESS_NO_CLOCK), 0);
  assert_rc(buttress_retry_resume(r2, &call, BUTTRESS_NO_CLOCK), 0);
  assert_rc(buttress_retry_resume(NULL, &call, T0), BUTTRESS_EINVAL);
  assert_rc(buttress_retry_resume(r2, NULL, T0), BUTTRESS_EINVAL);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attempts_then_exhausted),
      cmocka_unit_test(test_single_attempt_never_retries),
      cmocka_unit_test(test_end_counts_outcomes),
      cmocka_unit_test(test_never_sleeps_into_the_deadline),
      cmocka_unit_test(test_jittered_delays_respect_deadline),
      cmocka_unit_test(test_zero_delay_reported_as_zero),
      cmocka_unit_test(test_override_delay_replaces_backoff),
      cmocka_unit_test(test_budget_spent_only_when_decided),
      cmocka_unit_test(test_outer_deadline_nesting),
      cmocka_unit_test(test_remaining),
      cmocka_unit_test(test_full_jitter_within_ceiling),
      cmocka_unit_test(test_decorrelated_grows_from_call_prev),
      cmocka_unit_test(test_same_seed_same_delays),
      cmocka_unit_test(test_no_clock_protocol),
      cmocka_unit_test(test_huge_times_saturate),
      cmocka_unit_test(test_caller_errors),
      cmocka_unit_test(test_get_config_round_trip),
      cmocka_unit_test(test_resume_after_a_late_wake_up),
  };
  return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
