/*
 * Circuit breaker, single-threaded: thresholds, windows, half-open permits,
 * trial expiry, the NEED_CLOCK protocol, stale tickets, manual transitions
 * and transition reporting.  Racing threads are in test_stress.c.
 */
#include "util.h"

#define T0 SEC(1000)
#define NONE_STATE BUTTRESS_STATE_NONE

static buttress_breaker_config
cfg_with(uint32_t failure_threshold, uint32_t half_open_calls,
         uint32_t success_threshold)
{
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = failure_threshold;
  cfg.half_open_calls = half_open_calls;
  cfg.success_threshold = success_threshold;
  return cfg;
}

/* A copy of the state block: "changes nothing" means these bytes stay. */
struct snapshot {
  unsigned char *bytes;
  size_t size;
};

static struct snapshot
snapshot_take(const buttress_breaker *br, const buttress_breaker_config *cfg)
{
  struct snapshot s = {NULL, buttress_breaker_sizeof(cfg)};
  s.bytes = malloc(s.size);
  assert_non_null(s.bytes);
  memcpy(s.bytes, br, s.size);
  return s;
}

static void
snapshot_assert_same(struct snapshot s, const buttress_breaker *br)
{
  if (memcmp(s.bytes, br, s.size) != 0)
    fail_msg("the breaker state changed");
  free(s.bytes);
}

static void
assert_no_transition(const buttress_ticket *t)
{
  assert_int_equal(t->from, NONE_STATE);
  assert_int_equal(t->to, NONE_STATE);
}

static void
assert_transition(const buttress_ticket *t, int from, int to)
{
  if (t->from != from || t->to != to)
    fail_msg("ticket reports %s -> %s, expected %s -> %s",
             buttress_state_name(t->from), buttress_state_name(t->to),
             buttress_state_name(from), buttress_state_name(to));
}

/* Opens a closed breaker with `threshold` consecutive failures at `now`. */
static void
trip(buttress_breaker *br, uint32_t threshold, int64_t now)
{
  for (uint32_t i = 0; i < threshold; i++)
    assert_rc(breaker_call(br, now, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
}

/* ------------------------------------------------------------ closed */

static void
test_starts_closed(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  buttress_breaker *br = breaker_new(&cfg);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.state, BUTTRESS_STATE_CLOSED);
  assert_int_equal(m.calls, 0);
  assert_int_equal(m.rejected, 0);
  for (int f = 0; f < 5; f++)
    for (int t = 0; t < 5; t++) {
      assert_int_equal(m.transitions[f][t], 0);
      assert_i64_eq(m.last_transition_ns[f][t], BUTTRESS_NONE);
    }
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_no_transition(&t);
  assert_int_equal(t.permit, -1);
  free(br);
}

static void
test_consecutive_failures_open(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  /* A success breaks the streak. */
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(breaker_metrics(br, T0).consecutive_failures, 4);
  assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  assert_int_equal(breaker_metrics(br, T0).consecutive_failures, 0);
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);

  buttress_ticket t;
  int64_t t_open = T0 + MS(5);
  assert_rc(buttress_breaker_allow(br, t_open, &t), 0);
  assert_no_transition(&t);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), t_open), 0);
  assert_transition(&t, BUTTRESS_STATE_CLOSED, BUTTRESS_STATE_OPEN);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);

  buttress_breaker_metrics m = breaker_metrics(br, t_open);
  assert_int_equal(m.state, BUTTRESS_STATE_OPEN);
  assert_int_equal(m.failures, 9);
  assert_int_equal(m.successes, 1);
  assert_int_equal(m.trips, 1);
  assert_i64_eq(m.open_until_ns, t_open + SEC(30));
  assert_int_equal(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_OPEN], 1);
  assert_i64_eq(m.last_transition_ns[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_OPEN], t_open);
  free(br);
}

/* An untimed success admitted while closed takes a short path through
 * record (no clock, no duration, no permit): it must behave exactly as the
 * full one.  Tests elsewhere mostly pass durations, which take the full
 * path. */
static void
test_untimed_closed_success(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t;
  for (int i = 0; i < 3; i++) {
    assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
    assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, BUTTRESS_NO_CLOCK, T0), 0);
  }
  assert_int_equal(breaker_metrics(br, T0).consecutive_failures, 3);
  /* a success ends the streak */
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_int_equal(t.flags, 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), 0);
  assert_no_transition(&t);
  assert_int_equal(breaker_metrics(br, T0).consecutive_failures, 0);
  /* the common case: no streak, nothing but counts change */
  for (int i = 0; i < 10; i++) {
    assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
    assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                      BUTTRESS_NO_CLOCK), 0);
  }
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.successes, 11);
  assert_int_equal(m.failures, 3);
  assert_int_equal(m.calls, 14);
  assert_int_equal(m.window_calls, 14);
  assert_int_equal(m.latency.count, 0);

  /* a ticket from an earlier generation is stale */
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_rc(buttress_breaker_reset(br, T0, NULL), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), BUTTRESS_STALE);
  m = breaker_metrics(br, T0);
  assert_int_equal(m.stale, 1);
  assert_int_equal(m.successes, 11);

  /* a ticket flagged as timed still asks for the clock, changing nothing */
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  t.flags |= BUTTRESS_TICKET_TIMED;
  struct snapshot s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  snapshot_assert_same(s, br);
  /* with a duration it is timed: the latency counts it */
  t.flags = 0;
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, MS(2), BUTTRESS_NO_CLOCK), 0);
  assert_int_equal(breaker_metrics(br, T0).latency.count, 1);
  /* and a clock reading, when given, stamps the calls-per-second meter */
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK, T0), 0);
  assert_rc(buttress_breaker_record(NULL, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), BUTTRESS_EINVAL);
  free(br);

  /* a breaker whose rules need durations never takes the short path */
  cfg.slow_call_ns = MS(100);
  br = breaker_new(&cfg);
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_int_equal(t.flags, BUTTRESS_TICKET_TIMED);
  t.flags = 0; /* even a ticket that lost its flag */
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), 0);
  assert_int_equal(breaker_metrics(br, T0).successes, 1);
  free(br);
}

static void
test_threshold_zero_never_opens(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(0, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 0; i < 10000; i++)
    assert_rc(breaker_call(br, T0 + i, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_int_equal(breaker_metrics(br, T0 + 10000).failures, 10000);
  free(br);
}

/* Excluded outcomes neither break the failure streak nor count as calls of
 * the window. */
static void
test_excluded_is_neutral(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  for (int i = 0; i < 20; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_EXCLUDED), 0);
  assert_int_equal(breaker_metrics(br, T0).consecutive_failures, 4);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.excluded, 20);
  assert_int_equal(m.successes, 0);
  free(br);

  /* Rate rule: 9 failures and many excluded stay under min_calls = 10. */
  cfg = cfg_with(0, 1, 1);
  cfg.failure_rate = 0.5;
  cfg.window_size = 10;
  cfg.min_calls = 10;
  br = breaker_new(&cfg);
  for (int i = 0; i < 9; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  for (int i = 0; i < 30; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_EXCLUDED), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_int_equal(breaker_metrics(br, T0).window_calls, 9);
  free(br);
}

/* -------------------------------------------------------------- open */

static void
test_open_rejects_with_retry_after(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(3, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 3, T0);
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, T0 + SEC(1), &t), BUTTRESS_OPEN);
  assert_i64_eq(t.retry_after_ns, SEC(29));
  assert_no_transition(&t);
  assert_rc(buttress_breaker_allow(br, T0 + SEC(30) - 1, &t), BUTTRESS_OPEN);
  assert_i64_eq(t.retry_after_ns, 1);
  buttress_breaker_metrics m = breaker_metrics(br, T0 + SEC(2));
  assert_int_equal(m.rejected, 2);
  assert_int_equal(m.calls, 3); /* rejections are not outcomes */
  /* The period has passed but no call has come: still reads "open". */
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

/* ---------------------------------------------------------- half-open */

static void
test_half_open_at_period_end(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(3, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 3, T0);
  buttress_ticket trial, other;
  int64_t t1 = T0 + SEC(30); /* open_until: trials may start */
  assert_rc(buttress_breaker_allow(br, t1, &trial), 0);
  assert_transition(&trial, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN);
  assert_true(trial.permit >= 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);
  /* One permit: the next caller is rejected and told of no transition. */
  assert_rc(buttress_breaker_allow(br, t1, &other), BUTTRESS_OPEN);
  assert_no_transition(&other);

  assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_SUCCESS, MS(1), t1 + MS(1)), 0);
  assert_transition(&trial, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_CLOSED);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  buttress_breaker_metrics m = breaker_metrics(br, t1 + MS(1));
  assert_int_equal(m.trips, 0);
  assert_int_equal(m.transitions[BUTTRESS_STATE_OPEN][BUTTRESS_STATE_HALF_OPEN], 1);
  assert_int_equal(m.transitions[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_CLOSED], 1);
  assert_i64_eq(m.last_transition_ns[BUTTRESS_STATE_OPEN][BUTTRESS_STATE_HALF_OPEN], t1);
  assert_i64_eq(m.last_transition_ns[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_CLOSED],
                t1 + MS(1));
  /* Closed again: the streak starts over. */
  assert_rc(breaker_call(br, t1 + MS(2), BUTTRESS_FAILURE), 0);
  assert_rc(breaker_call(br, t1 + MS(2), BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  free(br);
}

static void
test_trial_failure_reopens(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(2, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 2, T0);
  buttress_ticket trial;
  int64_t t1 = T0 + SEC(31), t2 = t1 + SEC(2);
  assert_rc(buttress_breaker_allow(br, t1, &trial), 0);
  assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_FAILURE, SEC(2), t2), 0);
  assert_transition(&trial, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_OPEN);
  buttress_breaker_metrics m = breaker_metrics(br, t2);
  assert_int_equal(m.state, BUTTRESS_STATE_OPEN);
  assert_i64_eq(m.open_until_ns, t2 + SEC(30)); /* a full period from the failure */
  assert_int_equal(m.trips, 2);
  assert_int_equal(m.transitions[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_OPEN], 1);
  assert_rc(buttress_breaker_allow(br, t2 + SEC(30) - 1, &trial), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, t2 + SEC(30), &trial), 0);
  assert_transition(&trial, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN);
  free(br);
}

static void
test_success_threshold(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 3);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  int64_t now = T0 + SEC(30);
  for (uint32_t i = 1; i <= 3; i++) {
    buttress_ticket trial;
    assert_rc(buttress_breaker_allow(br, now, &trial), 0);
    if (i == 1)
      assert_transition(&trial, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN);
    else
      assert_no_transition(&trial);
    assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_SUCCESS, MS(1), now), 0);
    if (i < 3) {
      assert_no_transition(&trial);
      buttress_breaker_metrics m = breaker_metrics(br, now);
      assert_int_equal(m.state, BUTTRESS_STATE_HALF_OPEN);
      assert_int_equal(m.half_open_successes, i);
    } else {
      assert_transition(&trial, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_CLOSED);
    }
    now += MS(10);
  }
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  free(br);
}

/* K permits: K concurrent trials, the K+1-th rejected; any outcome gives its
 * permit back, and only successes count toward closing. */
static void
test_half_open_permits(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 3, 2);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  int64_t now = T0 + SEC(30);
  buttress_ticket t[4];
  for (int i = 0; i < 3; i++)
    assert_rc(buttress_breaker_allow(br, now, &t[i]), 0);
  assert_true(t[0].permit != t[1].permit && t[1].permit != t[2].permit &&
              t[0].permit != t[2].permit);
  assert_rc(buttress_breaker_allow(br, now, &t[3]), BUTTRESS_OPEN);

  assert_rc(buttress_breaker_record(br, &t[0], BUTTRESS_CANCELLED, BUTTRESS_NO_CLOCK, now), 0);
  assert_no_transition(&t[0]);
  assert_rc(buttress_breaker_allow(br, now, &t[3]), 0);
  assert_rc(buttress_breaker_allow(br, now, &t[0]), BUTTRESS_OPEN);

  assert_rc(buttress_breaker_record(br, &t[1], BUTTRESS_EXCLUDED, MS(1), now), 0);
  assert_no_transition(&t[1]);
  buttress_breaker_metrics m = breaker_metrics(br, now);
  assert_int_equal(m.state, BUTTRESS_STATE_HALF_OPEN);
  assert_int_equal(m.half_open_successes, 0);
  assert_int_equal(m.cancelled, 1);
  assert_int_equal(m.excluded, 1);
  assert_rc(buttress_breaker_allow(br, now, &t[1]), 0); /* the permit came back */

  assert_rc(buttress_breaker_record(br, &t[2], BUTTRESS_SUCCESS, MS(1), now), 0);
  assert_no_transition(&t[2]);
  assert_rc(buttress_breaker_record(br, &t[3], BUTTRESS_SUCCESS, MS(1), now), 0);
  assert_transition(&t[3], BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_CLOSED);
  /* The last trial finishes after the breaker closed: stale. */
  assert_rc(buttress_breaker_record(br, &t[1], BUTTRESS_FAILURE, MS(1), now), BUTTRESS_STALE);
  assert_no_transition(&t[1]);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  free(br);
}

/* PITFALLS #2: a trial that never reports back does not wedge half-open,
 * and its late report cannot free the permit of the trial that replaced it. */
static void
test_trial_permit_expires(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  cfg.trial_timeout_ns = SEC(5);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  int64_t t1 = T0 + SEC(30);
  buttress_ticket lost, late, next;
  assert_rc(buttress_breaker_allow(br, t1, &lost), 0);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(5) - 1, &next), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(5) + 1, &late), 0);
  assert_no_transition(&late);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);

  /* The lost trial turns up: whatever it returns, the new trial keeps its
   * permit. */
  int rc = buttress_breaker_record(br, &lost, BUTTRESS_CANCELLED, BUTTRESS_NO_CLOCK,
                                   t1 + SEC(6));
  assert_true(rc == 0 || rc == BUTTRESS_STALE);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(6), &next), BUTTRESS_OPEN);

  assert_rc(buttress_breaker_record(br, &late, BUTTRESS_SUCCESS, MS(1), t1 + SEC(7)), 0);
  assert_transition(&late, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_CLOSED);
  free(br);
}

/* Open periods and trial permits end on whole milliseconds, rounded up
 * (documented in buttress.h): never early, at most 1 ms late, also at times
 * that are not whole milliseconds. */
static void
test_periods_rounded_up_to_the_millisecond(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  cfg.trial_timeout_ns = SEC(5);
  buttress_breaker *br = breaker_new(&cfg);
  int64_t t_open = T0 + 123457; /* 0.123457 ms past a whole millisecond */
  trip(br, 1, t_open);
  int64_t until = breaker_metrics(br, t_open).open_until_ns;
  int64_t exact = t_open + SEC(30);
  assert_true(until >= exact && until < exact + MS(1));
  assert_i64_eq(until % MS(1), 0);
  buttress_ticket t, lost;
  /* never early */
  assert_rc(buttress_breaker_allow(br, exact - 1, &t), BUTTRESS_OPEN);
  assert_i64_eq(t.retry_after_ns, until - (exact - 1));
  assert_rc(buttress_breaker_allow(br, until - 1, &t), BUTTRESS_OPEN);
  assert_i64_eq(t.retry_after_ns, 1);
  /* at most 1 ms late */
  assert_rc(buttress_breaker_allow(br, until, &lost), 0);
  int64_t t_trial = until;
  assert_rc(buttress_breaker_allow(br, t_trial + SEC(5) - 1, &t), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, t_trial + SEC(5) + MS(1), &t), 0);
  free(br);
}

/* trial_timeout defaults to reset_timeout. */
static void
test_trial_timeout_default(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  cfg.reset_timeout_ns = SEC(10);
  assert_i64_eq(cfg.trial_timeout_ns, BUTTRESS_NONE);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  int64_t t1 = T0 + SEC(10);
  buttress_ticket lost, next;
  assert_rc(buttress_breaker_allow(br, t1, &lost), 0);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(10) - 1, &next), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(10) + 1, &next), 0);
  free(br);
}

/* --------------------------------------------------------- NEED_CLOCK */

static void
test_need_clock_closed(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t;

  /* allow() on a closed breaker: no clock needed, nothing written. */
  struct snapshot s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  snapshot_assert_same(s, br);
  assert_int_equal(t.flags & BUTTRESS_TICKET_TIMED, 0);

  /* An untimed success needs no clock either. */
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), 0);
  assert_int_equal(breaker_metrics(br, T0).successes, 1);

  /* A failure does: NEED_CLOCK, nothing changed, then again with the time. */
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  snapshot_assert_same(s, br);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, BUTTRESS_NO_CLOCK, T0), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.failures, 1);
  assert_int_equal(m.calls, 2);
  assert_int_equal(m.consecutive_failures, 1);
  /* Untimed outcomes stay out of latency. */
  assert_int_equal(m.latency.count, 0);
  free(br);
}

static void
test_need_clock_open_and_half_open(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  buttress_ticket t;
  struct snapshot s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), BUTTRESS_NEED_CLOCK);
  snapshot_assert_same(s, br);
  assert_int_equal(breaker_metrics(br, T0).rejected, 0);

  /* Past the period the answer depends on the time too. */
  assert_rc(buttress_breaker_allow(br, T0 + SEC(30), &t), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);
  s = snapshot_take(br, &cfg);
  buttress_ticket u;
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &u), BUTTRESS_NEED_CLOCK);
  snapshot_assert_same(s, br);
  free(br);
}

/* Tickets say when record() will want the time: slow-call rules and time
 * windows need it; a plain count window does not. */
static void
test_timed_tickets(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  cfg.slow_call_ns = SEC(1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_true(t.flags & BUTTRESS_TICKET_TIMED);
  struct snapshot s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                    BUTTRESS_NO_CLOCK), BUTTRESS_NEED_CLOCK);
  snapshot_assert_same(s, br);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, SEC(2), T0), 0);
  assert_int_equal(breaker_metrics(br, T0).slow, 1);
  free(br);

  cfg = cfg_with(5, 1, 1);
  cfg.window_type = BUTTRESS_WINDOW_TIME;
  cfg.window_ns = SEC(10);
  cfg.failure_rate = 0.5;
  br = breaker_new(&cfg);
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_true(t.flags & BUTTRESS_TICKET_TIMED);
  free(br);
}

/* ------------------------------------------------------------- stale */

static void
test_stale_ticket_ignored(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(3, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket old;
  assert_rc(buttress_breaker_allow(br, T0, &old), 0);
  trip(br, 3, T0 + 1);
  buttress_breaker_metrics before = breaker_metrics(br, T0 + 2);
  assert_rc(buttress_breaker_record(br, &old, BUTTRESS_SUCCESS, MS(1), T0 + 2), BUTTRESS_STALE);
  assert_no_transition(&old);
  buttress_breaker_metrics after = breaker_metrics(br, T0 + 2);
  assert_int_equal(after.stale, before.stale + 1);
  assert_int_equal(after.calls, before.calls + 1);
  assert_int_equal(after.successes, before.successes);
  assert_int_equal(after.failures, before.failures);
  assert_int_equal(after.state, BUTTRESS_STATE_OPEN);
  assert_i64_eq(after.open_until_ns, before.open_until_ns);
  free(br);
}

/* ------------------------------------------------- manual transitions */

/* A disabled breaker with a slow-call rule times its calls as a closed one
 * does: slow calls and latency stay exact while it is disabled; it still
 * never needs the clock to record. */
static void
test_disabled_breaker_keeps_timing_calls(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  cfg.slow_call_ns = MS(10);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t;
  assert_rc(buttress_breaker_disable(br, T0, NULL), 0);
  for (int i = 0; i < 4; i++) {
    assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
    assert_true(t.flags & BUTTRESS_TICKET_TIMED);
    assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, MS(5 * i), T0 + SEC(1)), 0);
  }
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), BUTTRESS_NO_CLOCK), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0 + SEC(1));
  assert_int_equal(m.slow, 2); /* 10 and 15 ms */
  assert_int_equal(m.latency.count, 5);
  assert_int_equal(m.state, BUTTRESS_STATE_DISABLED);
  /* without a slow-call rule, nothing asks for the time */
  buttress_breaker_config plain = cfg_with(5, 1, 1);
  buttress_breaker *br2 = breaker_new(&plain);
  assert_rc(buttress_breaker_disable(br2, T0, NULL), 0);
  assert_rc(buttress_breaker_allow(br2, BUTTRESS_NO_CLOCK, &t), 0);
  assert_int_equal(t.flags, 0);
}

static void
test_force_open_disable_reset(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket out, t, old;

  assert_rc(buttress_breaker_allow(br, T0, &old), 0);
  assert_rc(buttress_breaker_force_open(br, T0, &out), 0);
  assert_transition(&out, BUTTRESS_STATE_CLOSED, BUTTRESS_STATE_FORCED_OPEN);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_FORCED_OPEN);
  assert_rc(buttress_breaker_allow(br, T0 + SEC(3600), &t), BUTTRESS_OPEN);
  assert_i64_eq(t.retry_after_ns, BUTTRESS_NONE);
  assert_rc(buttress_breaker_record(br, &old, BUTTRESS_SUCCESS, MS(1), T0 + 1), BUTTRESS_STALE);

  assert_rc(buttress_breaker_reset(br, T0 + SEC(3600), &out), 0);
  assert_transition(&out, BUTTRESS_STATE_FORCED_OPEN, BUTTRESS_STATE_CLOSED);
  assert_rc(buttress_breaker_allow(br, T0 + SEC(3600), &t), 0);

  assert_rc(buttress_breaker_disable(br, T0 + SEC(3601), &out), 0);
  assert_transition(&out, BUTTRESS_STATE_CLOSED, BUTTRESS_STATE_DISABLED);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, MS(1), T0 + SEC(3601)),
            BUTTRESS_STALE);
  /* Disabled: everything goes, nothing opens, and no clock is needed. */
  for (int i = 0; i < 100; i++)
    assert_rc(breaker_call(br, T0 + SEC(3602), BUTTRESS_FAILURE), 0);
  struct snapshot s = snapshot_take(br, &cfg);
  assert_rc(buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t), 0);
  snapshot_assert_same(s, br);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_DISABLED);

  assert_rc(buttress_breaker_reset(br, T0 + SEC(3603), NULL), 0); /* out may be NULL */
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  buttress_breaker_metrics m = breaker_metrics(br, T0 + SEC(3603));
  assert_int_equal(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_FORCED_OPEN], 1);
  assert_int_equal(m.transitions[BUTTRESS_STATE_FORCED_OPEN][BUTTRESS_STATE_CLOSED], 1);
  assert_int_equal(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_DISABLED], 1);
  assert_int_equal(m.transitions[BUTTRESS_STATE_DISABLED][BUTTRESS_STATE_CLOSED], 1);
  assert_i64_eq(m.last_transition_ns[BUTTRESS_STATE_DISABLED][BUTTRESS_STATE_CLOSED],
                T0 + SEC(3603));
  assert_int_equal(m.failures, 100); /* lifetime counters survive reset */
  assert_int_equal(m.stale, 2);
  assert_int_equal(m.rejected, 1);
  free(br);
}

/* reset() clears the streak and the window. */
static void
test_reset_clears_streak(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_rc(buttress_breaker_reset(br, T0, NULL), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.consecutive_failures, 0);
  assert_int_equal(m.window_calls, 0);
  assert_int_equal(m.failures, 4);
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

/* -------------------------------------------------------- rate rules */

static void
test_failure_rate_count_window(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(0, 1, 1);
  cfg.failure_rate = 0.5;
  cfg.window_size = 10;
  cfg.min_calls = 10;
  buttress_breaker *br = breaker_new(&cfg);
  /* Fewer than min_calls: 9 failures out of 9 do not open. */
  for (int i = 0; i < 9; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_rc(buttress_breaker_reset(br, T0, NULL), 0);

  /* The window keeps the last 10 calls: 10 successes, then failures push
   * them out; 4/10 stays closed, 5/10 reaches the rate. */
  for (int i = 0; i < 10; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  for (int i = 0; i < 4; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.state, BUTTRESS_STATE_CLOSED);
  assert_int_equal(m.window_calls, 10);
  assert_int_equal(m.window_failures, 4);
  assert_true(fabs(m.failure_rate - 0.4) < 1e-9);
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), T0), 0);
  assert_transition(&t, BUTTRESS_STATE_CLOSED, BUTTRESS_STATE_OPEN);
  free(br);
}

static void
test_failure_rate_time_window(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(0, 1, 1);
  cfg.failure_rate = 0.5;
  cfg.window_type = BUTTRESS_WINDOW_TIME;
  cfg.window_ns = SEC(10);
  cfg.min_calls = 4;
  buttress_breaker *br = breaker_new(&cfg);
  /* Three failures, then a success 5 s later: 3/4 within the window. */
  for (int i = 0; i < 3; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_rc(breaker_call(br, T0 + SEC(5), BUTTRESS_SUCCESS), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);

  /* The same three failures 25 s earlier have left the window. */
  br = breaker_new(&cfg);
  for (int i = 0; i < 3; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  int64_t t1 = T0 + SEC(25);
  assert_rc(breaker_call(br, t1, BUTTRESS_FAILURE), 0);
  buttress_breaker_metrics m = breaker_metrics(br, t1);
  assert_int_equal(m.state, BUTTRESS_STATE_CLOSED);
  assert_int_equal(m.window_calls, 1);
  assert_rc(breaker_call(br, t1, BUTTRESS_SUCCESS), 0);
  assert_rc(breaker_call(br, t1, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_rc(breaker_call(br, t1, BUTTRESS_FAILURE), 0); /* 3 of 4 */
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

static int
call_lasting(buttress_breaker *br, int64_t now, int outcome, int64_t duration)
{
  buttress_ticket t;
  int rc = buttress_breaker_allow(br, now, &t);
  if (rc != 0)
    return rc;
  return buttress_breaker_record(br, &t, outcome, duration, now + duration);
}

static void
test_slow_rate(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(0, 1, 1);
  cfg.slow_call_ns = SEC(1);
  cfg.slow_rate = 0.5;
  cfg.window_size = 10;
  cfg.min_calls = 10;
  buttress_breaker *br = breaker_new(&cfg);
  int64_t now = T0;
  for (int i = 0; i < 5; i++) /* exactly slow_call_ns is slow */
    assert_rc(call_lasting(br, now, BUTTRESS_SUCCESS, SEC(1)), 0);
  for (int i = 0; i < 4; i++)
    assert_rc(call_lasting(br, now, BUTTRESS_SUCCESS, SEC(1) - 1), 0);
  buttress_breaker_metrics m = breaker_metrics(br, now);
  assert_int_equal(m.state, BUTTRESS_STATE_CLOSED);
  assert_int_equal(m.slow, 5);
  assert_int_equal(m.window_slow, 5);
  assert_rc(call_lasting(br, now, BUTTRESS_SUCCESS, MS(1)), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

static void
test_latency_recorded(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(0, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  for (int i = 1; i <= 100; i++)
    assert_rc(call_lasting(br, T0, BUTTRESS_SUCCESS, MS(i)), 0);
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK, T0), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.latency.count, 100);
  assert_i64_eq(m.latency.max_ns, MS(100));
  assert_rel_close(m.latency.p50_ns, MS(50), 0.02);
  assert_rel_close(m.latency.p99_ns, MS(99), 0.02);
  assert_int_equal(m.successes, 101);
  free(br);
}

/* calls = successes + failures + excluded + stale + cancelled. */
static void
test_calls_add_up(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(3, 2, 1);
  buttress_breaker *br = breaker_new(&cfg);
  uint64_t prng = 9;
  int64_t now = T0;
  buttress_ticket held[8];
  int nheld = 0;
  for (int i = 0; i < 5000; i++) {
    now += MS(100) + (int64_t)(ref_splitmix64_next(&prng) % (uint64_t)SEC(5));
    uint64_t r = ref_splitmix64_next(&prng);
    if (nheld < 8 && r % 5 == 0) { /* keep some tickets to go stale later */
      if (buttress_breaker_allow(br, now, &held[nheld]) == 0)
        nheld++;
      continue;
    }
    if (nheld > 0 && r % 5 == 1) {
      nheld--;
      buttress_breaker_record(br, &held[nheld], BUTTRESS_SUCCESS, MS(1), now);
      continue;
    }
    int outcome = (int)((r >> 8) % 4);
    int rc = breaker_call(br, now, outcome);
    assert_true(rc == 0 || rc == BUTTRESS_OPEN);
  }
  buttress_breaker_metrics m = breaker_metrics(br, now);
  assert_int_equal(m.calls, m.successes + m.failures + m.excluded + m.stale + m.cancelled);
  assert_true(m.rejected > 0);
  assert_true(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_OPEN] > 0);
  assert_true(m.transitions[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_CLOSED] > 0);
  free(br);
}

/* The n-th successive open period lasts the reset backoff's n-th delay. */
static void
test_reset_backoff(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  cfg.use_reset_backoff = 1;
  cfg.reset_backoff.base_ns = SEC(1);
  cfg.reset_backoff.multiplier = 2.0;
  cfg.reset_backoff.cap_ns = SEC(5);
  cfg.reset_backoff.jitter = BUTTRESS_JITTER_NONE;
  buttress_breaker *br = breaker_new(&cfg);
  int64_t now = T0;
  trip(br, 1, now);
  const int64_t periods[] = {SEC(1), SEC(2), SEC(4), SEC(5), SEC(5)};
  for (int i = 0; i < 5; i++) {
    buttress_breaker_metrics m = breaker_metrics(br, now);
    assert_int_equal(m.trips, i + 1);
    assert_i64_eq(m.open_until_ns, now + periods[i]);
    buttress_ticket t;
    assert_rc(buttress_breaker_allow(br, now + periods[i] - 1, &t), BUTTRESS_OPEN);
    now += periods[i];
    assert_rc(breaker_call(br, now, BUTTRESS_FAILURE), 0); /* the trial fails */
  }
  /* A successful trial closes and starts the sequence over. */
  now += SEC(5);
  assert_rc(breaker_call(br, now, BUTTRESS_SUCCESS), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_int_equal(breaker_metrics(br, now).trips, 0);
  trip(br, 1, now);
  assert_i64_eq(breaker_metrics(br, now).open_until_ns, now + SEC(1));
  free(br);
}

static void
test_caller_errors(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t;
  buttress_breaker_metrics m;
  assert_rc(buttress_breaker_allow(NULL, T0, &t), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_allow(br, T0, NULL), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, 4, MS(1), T0), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_record(br, &t, -1, MS(1), T0), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_record(br, NULL, BUTTRESS_SUCCESS, MS(1), T0), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_record(NULL, &t, BUTTRESS_SUCCESS, MS(1), T0), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_metrics_get(NULL, T0, &m), BUTTRESS_EINVAL);
  assert_rc(buttress_breaker_metrics_get(br, T0, NULL), BUTTRESS_EINVAL);
  /* None of the refused calls counted anything. */
  m = breaker_metrics(br, T0);
  assert_int_equal(m.calls, 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, MS(1), T0), 0);
  free(br);
}

/* Time sums saturate: an open period or trial timeout of ~146 years at a
 * late time neither wraps nor opens "forever ago". */
static void
test_huge_durations(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(1, 1, 1);
  cfg.reset_timeout_ns = BUTTRESS_MAX_DURATION_NS;
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  /* (Rounding is test_periods_rounded_up_to_the_millisecond's job.) */
  assert_true(breaker_metrics(br, T0).open_until_ns >= T0 + BUTTRESS_MAX_DURATION_NS);
  buttress_ticket early;
  assert_rc(buttress_breaker_allow(br, T0 + SEC(3600), &early), BUTTRESS_OPEN);
  free(br);

  /* The same at a time so late that the sum passes INT64_MAX. */
  const int64_t late = INT64_C(1) << 62;
  br = breaker_new(&cfg);
  trip(br, 1, late);
  buttress_ticket t;
  assert_rc(buttress_breaker_allow(br, late + SEC(3600), &t), BUTTRESS_OPEN);
  assert_true(t.retry_after_ns > 0);
  /* The period saturates at INT64_MAX, the last representable instant. */
  assert_rc(buttress_breaker_allow(br, INT64_MAX - 1, &t), BUTTRESS_OPEN);
  free(br);
}

static void
test_config_round_trip_and_sizeof(void **state)
{
  (void)state;
  buttress_breaker_config cfg = cfg_with(7, 4, 3);
  cfg.window_size = 50;
  cfg.failure_rate = 0.25;
  cfg.reset_timeout_ns = SEC(12);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_breaker_config out;
  memset(&out, 0xab, sizeof out);
  assert_rc(buttress_breaker_get_config(br, &out), 0);
  assert_int_equal(out.failure_threshold, 7);
  assert_int_equal(out.half_open_calls, 4);
  assert_int_equal(out.success_threshold, 3);
  assert_int_equal(out.window_size, 50);
  assert_true(out.failure_rate == 0.25);
  assert_i64_eq(out.reset_timeout_ns, SEC(12));
  free(br);

  cfg.half_open_calls = 0;
  assert_int_equal(buttress_breaker_sizeof(&cfg), 0);
  assert_int_equal(buttress_breaker_sizeof(NULL), 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_starts_closed),
      cmocka_unit_test(test_consecutive_failures_open),
      cmocka_unit_test(test_untimed_closed_success),
      cmocka_unit_test(test_threshold_zero_never_opens),
      cmocka_unit_test(test_excluded_is_neutral),
      cmocka_unit_test(test_open_rejects_with_retry_after),
      cmocka_unit_test(test_half_open_at_period_end),
      cmocka_unit_test(test_trial_failure_reopens),
      cmocka_unit_test(test_success_threshold),
      cmocka_unit_test(test_half_open_permits),
      cmocka_unit_test(test_trial_permit_expires),
      cmocka_unit_test(test_trial_timeout_default),
      cmocka_unit_test(test_periods_rounded_up_to_the_millisecond),
      cmocka_unit_test(test_need_clock_closed),
      cmocka_unit_test(test_need_clock_open_and_half_open),
      cmocka_unit_test(test_timed_tickets),
      cmocka_unit_test(test_stale_ticket_ignored),
      cmocka_unit_test(test_force_open_disable_reset),
      cmocka_unit_test(test_disabled_breaker_keeps_timing_calls),
      cmocka_unit_test(test_reset_clears_streak),
      cmocka_unit_test(test_failure_rate_count_window),
      cmocka_unit_test(test_failure_rate_time_window),
      cmocka_unit_test(test_slow_rate),
      cmocka_unit_test(test_latency_recorded),
      cmocka_unit_test(test_calls_add_up),
      cmocka_unit_test(test_reset_backoff),
      cmocka_unit_test(test_caller_errors),
      cmocka_unit_test(test_config_round_trip_and_sizeof),
      /* Last: under -fno-sanitize-recover a core overflow aborts the run. */
      cmocka_unit_test(test_huge_durations),
  };
  return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
