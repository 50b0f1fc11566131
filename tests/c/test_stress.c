/*
 * Contention: counters exact under 2..64 racing threads (at least 1M
 * operations in all), exactly K half-open trials in each of 10,000 racing
 * rounds, and exactly one ticket told of each transition.
 *
 * Workers never call cmocka (its asserts are not thread-safe): they tally,
 * the main thread compares.  BUTTRESS_STRESS_SCALE (default 1) scales the
 * amount of work, e.g. 0.1 for a quick sanitizer run.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "util.h"

#define T0 SEC(1000)

/* A shared fake monotonic clock: every reading moves it 50 us on, so racing
 * threads see nearly (not strictly) ordered times, as with a real clock. */
static _Atomic int64_t fake_clock;

static int64_t
clock_read(void)
{
  return atomic_fetch_add_explicit(&fake_clock, 50 * 1000, memory_order_relaxed);
}

struct tally {
  uint64_t rejected, need_clock, unexpected;
  uint64_t recorded[4]; /* by outcome, record() returned 0 */
  uint64_t stale;
  uint64_t told[5][5];  /* transitions reported in this thread's tickets */
};

static void
note_transition(struct tally *t, const buttress_ticket *tk)
{
  if (tk->from == BUTTRESS_STATE_NONE && tk->to == BUTTRESS_STATE_NONE)
    return;
  if (tk->from < 0 || tk->from >= 5 || tk->to < 0 || tk->to >= 5)
    t->unexpected++;
  else
    t->told[tk->from][tk->to]++;
}

static void
note_record(struct tally *t, buttress_breaker *br, buttress_ticket *tk, int outcome)
{
  int64_t now = clock_read();
  int rc = buttress_breaker_record(br, tk, outcome, outcome == BUTTRESS_CANCELLED
                                   ? BUTTRESS_NO_CLOCK : MS(1), now);
  if (rc == 0)
    t->recorded[outcome]++;
  else if (rc == BUTTRESS_STALE)
    t->stale++;
  else
    t->unexpected++;
  note_transition(t, tk);
}

/* ---------------------------------------------------- counters exact */

struct counter_arg {
  buttress_breaker *br;
  pthread_barrier_t *start;
  long ops;
  uint64_t seed;
  int manual; /* also forces open, disables and resets now and then */
  struct tally tally;
};

/* Manual transitions race the automatic ones; `out` reports them. */
static void
manual_transition(struct counter_arg *a, long i)
{
  buttress_ticket out;
  int64_t now = clock_read();
  int rc;
  switch ((i / 1000) % 4) {
  case 0: rc = buttress_breaker_force_open(a->br, now, &out); break;
  case 2: rc = buttress_breaker_disable(a->br, now, &out); break;
  default: rc = buttress_breaker_reset(a->br, now, &out); break;
  }
  if (rc != 0)
    a->tally.unexpected++;
  note_transition(&a->tally, &out);
}

static void *
counter_thread(void *p)
{
  struct counter_arg *a = p;
  struct tally *t = &a->tally;
  uint64_t prng = a->seed;
  buttress_ticket held;
  int holding = 0;
  pthread_barrier_wait(a->start);
  for (long i = 0; i < a->ops; i++) {
    if (a->manual && i % 1000 == 999)
      manual_transition(a, i);
    uint64_t r = ref_splitmix64_next(&prng);
    /* 60% success, 30% failure, 5% excluded, 5% cancelled. */
    unsigned pick = (unsigned)(r % 100);
    int outcome = pick < 60 ? BUTTRESS_SUCCESS
                : pick < 90 ? BUTTRESS_FAILURE
                : pick < 95 ? BUTTRESS_EXCLUDED : BUTTRESS_CANCELLED;
    buttress_ticket tk;
    int rc = buttress_breaker_allow(a->br, clock_read(), &tk);
    if (rc == BUTTRESS_OPEN) {
      t->rejected++;
      note_transition(t, &tk);
      continue;
    }
    if (rc != 0) {
      t->unexpected++;
      continue;
    }
    note_transition(t, &tk);
    /* Now and then keep a ticket across other calls, so that it may go
     * stale, and finish the previously kept one. */
    if (((r >> 32) & 31) == 0) {
      if (holding)
        note_record(t, a->br, &held, BUTTRESS_SUCCESS);
      held = tk;
      holding = 1;
      continue;
    }
    note_record(t, a->br, &tk, outcome);
  }
  if (holding)
    note_record(t, a->br, &held, BUTTRESS_FAILURE);
  return NULL;
}

/* The transitions form one path from "closed": into and out of each state
 * differ by at most one, and only the final state has one more in. */
static void
assert_transitions_form_a_path(const buttress_breaker_metrics *m)
{
  for (int s = 0; s < 5; s++) {
    int64_t in = s == BUTTRESS_STATE_CLOSED, out = 0;
    for (int o = 0; o < 5; o++) {
      in += (int64_t)m->transitions[o][s];
      out += (int64_t)m->transitions[s][o];
    }
    assert_i64_eq(in - out, s == m->state ? 1 : 0);
  }
}

static uint64_t
run_counters(int nthreads, long total_ops)
{
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = 3;
  cfg.half_open_calls = 2;
  cfg.success_threshold = 2;
  cfg.reset_timeout_ns = MS(1); /* 20 clock readings: many cycles */
  buttress_breaker *br = breaker_new(&cfg);
  atomic_store(&fake_clock, T0);

  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)nthreads);
  pthread_t *th = calloc((size_t)nthreads, sizeof *th);
  struct counter_arg *args = calloc((size_t)nthreads, sizeof *args);
  assert_non_null(th);
  assert_non_null(args);
  for (int i = 0; i < nthreads; i++) {
    args[i].br = br;
    args[i].start = &start;
    args[i].ops = total_ops / nthreads;
    args[i].seed = (uint64_t)nthreads * 1000 + (uint64_t)i;
    args[i].manual = i == 0;
    assert_int_equal(pthread_create(&th[i], NULL, counter_thread, &args[i]), 0);
  }
  struct tally sum;
  memset(&sum, 0, sizeof sum);
  uint64_t ops = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    const struct tally *t = &args[i].tally;
    sum.rejected += t->rejected;
    sum.need_clock += t->need_clock;
    sum.unexpected += t->unexpected;
    sum.stale += t->stale;
    for (int k = 0; k < 4; k++)
      sum.recorded[k] += t->recorded[k];
    for (int f = 0; f < 5; f++)
      for (int to = 0; to < 5; to++)
        sum.told[f][to] += t->told[f][to];
    ops += (uint64_t)args[i].ops;
  }
  pthread_barrier_destroy(&start);

  buttress_breaker_metrics m = breaker_metrics(br, clock_read());
  assert_int_equal(sum.unexpected, 0);
  assert_int_equal(m.rejected, sum.rejected);
  assert_int_equal(m.successes, sum.recorded[BUTTRESS_SUCCESS]);
  assert_int_equal(m.failures, sum.recorded[BUTTRESS_FAILURE]);
  assert_int_equal(m.excluded, sum.recorded[BUTTRESS_EXCLUDED]);
  assert_int_equal(m.cancelled, sum.recorded[BUTTRESS_CANCELLED]);
  assert_int_equal(m.stale, sum.stale);
  uint64_t records = sum.stale;
  for (int k = 0; k < 4; k++)
    records += sum.recorded[k];
  assert_int_equal(m.calls, records);
  /* Every allow() was either rejected or recorded exactly once. */
  assert_int_equal(records + sum.rejected, ops);
  for (int f = 0; f < 5; f++)
    for (int to = 0; to < 5; to++)
      if (m.transitions[f][to] != sum.told[f][to])
        fail_msg("%d threads: %s -> %s happened %llu times, %llu tickets told",
                 nthreads, buttress_state_name(f), buttress_state_name(to),
                 (unsigned long long)m.transitions[f][to],
                 (unsigned long long)sum.told[f][to]);
  assert_transitions_form_a_path(&m);
  uint64_t moves = 0;
  for (int f = 0; f < 5; f++)
    for (int to = 0; to < 5; to++)
      moves += m.transitions[f][to];
  printf("  %2d threads: %llu allow() calls, %llu rejected, %llu stale, "
         "%llu transitions\n", nthreads, (unsigned long long)ops,
         (unsigned long long)m.rejected, (unsigned long long)m.stale,
         (unsigned long long)moves);
  /* The mix must actually have cycled the breaker. */
  assert_true(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_OPEN] > 0);
  assert_true(m.transitions[BUTTRESS_STATE_OPEN][BUTTRESS_STATE_HALF_OPEN] > 0);
  free(th);
  free(args);
  free(br);
  return ops;
}

static void
test_counters_exact_under_contention(void **state)
{
  (void)state;
  const int thread_counts[] = {2, 4, 8, 16, 32, 64};
  const long per_count = scaled(200000); /* 6 x 200k = 1.2M allow() calls */
  uint64_t total = 0;
  for (size_t i = 0; i < sizeof thread_counts / sizeof thread_counts[0]; i++)
    total += run_counters(thread_counts[i], per_count);
  if (stress_scale() >= 1.0)
    assert_true(total >= 1000000);
}

/* ------------------------------------------- half-open: exactly K */

enum { RACERS = 4, TRIES_PER_RACER = 2 };

struct round_shared {
  buttress_breaker *br;
  pthread_barrier_t barrier; /* RACERS + the main thread */
  long rounds;
  _Atomic int64_t trial_time, record_time;
};

struct racer_arg {
  struct round_shared *s;
  long admitted_total;
  /* Per round, written by the racer before a barrier, read by main after. */
  int admitted, told_half_open, told_closed, unexpected;
};

static void *
racer_thread(void *p)
{
  struct racer_arg *a = p;
  struct round_shared *s = a->s;
  for (long r = 0; r < s->rounds; r++) {
    pthread_barrier_wait(&s->barrier); /* the breaker is open */
    int64_t now = atomic_load_explicit(&s->trial_time, memory_order_relaxed);
    buttress_ticket tk[TRIES_PER_RACER];
    int admitted = 0;
    a->told_half_open = a->told_closed = a->unexpected = 0;
    for (int i = 0; i < TRIES_PER_RACER; i++) {
      buttress_ticket t;
      int rc = buttress_breaker_allow(s->br, now, &t);
      if (rc == 0)
        tk[admitted++] = t;
      else if (rc != BUTTRESS_OPEN)
        a->unexpected++;
      if (t.from == BUTTRESS_STATE_OPEN && t.to == BUTTRESS_STATE_HALF_OPEN)
        a->told_half_open++;
      else if (rc == 0 && (t.from != BUTTRESS_STATE_NONE || t.to != BUTTRESS_STATE_NONE))
        a->unexpected++;
    }
    a->admitted = admitted;
    a->admitted_total += admitted;
    pthread_barrier_wait(&s->barrier); /* all allows done */
    pthread_barrier_wait(&s->barrier); /* main has looked at the state */
    int64_t later = atomic_load_explicit(&s->record_time, memory_order_relaxed);
    for (int i = 0; i < admitted; i++) {
      if (buttress_breaker_record(s->br, &tk[i], BUTTRESS_SUCCESS, MS(1), later) != 0)
        a->unexpected++;
      if (tk[i].from == BUTTRESS_STATE_HALF_OPEN && tk[i].to == BUTTRESS_STATE_CLOSED)
        a->told_closed++;
    }
    pthread_barrier_wait(&s->barrier); /* all records done */
  }
  return NULL;
}

/* Each round: open the breaker at a known time, let RACERS threads race
 * allow() past the open period, count admissions (exactly K), then let the
 * K trials succeed together (success_threshold = K: exactly one of them
 * closes the breaker and is told so). */
static void
run_half_open_rounds(uint32_t k, long rounds)
{
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = 1;
  cfg.half_open_calls = k;
  cfg.success_threshold = k;
  cfg.reset_timeout_ns = SEC(1);
  struct round_shared s;
  s.br = breaker_new(&cfg);
  s.rounds = rounds;
  pthread_barrier_init(&s.barrier, NULL, RACERS + 1);
  pthread_t th[RACERS];
  struct racer_arg args[RACERS];
  memset(args, 0, sizeof args);
  for (int i = 0; i < RACERS; i++) {
    args[i].s = &s;
    assert_int_equal(pthread_create(&th[i], NULL, racer_thread, &args[i]), 0);
  }

  long bad_admitted = 0, bad_told = 0, bad_state = 0, first_bad = -1;
  for (long r = 0; r < rounds; r++) {
    int64_t t_open = T0 + r * SEC(10);
    buttress_ticket opener;
    int ok = buttress_breaker_allow(s.br, t_open, &opener) == 0 &&
             buttress_breaker_record(s.br, &opener, BUTTRESS_FAILURE, MS(1), t_open) == 0 &&
             opener.from == BUTTRESS_STATE_CLOSED && opener.to == BUTTRESS_STATE_OPEN;
    atomic_store_explicit(&s.trial_time, t_open + SEC(1) + MS(1), memory_order_relaxed);
    atomic_store_explicit(&s.record_time, t_open + SEC(1) + MS(2), memory_order_relaxed);
    pthread_barrier_wait(&s.barrier);
    pthread_barrier_wait(&s.barrier);
    int admitted = 0, told_half_open = 0;
    for (int i = 0; i < RACERS; i++) {
      admitted += args[i].admitted;
      told_half_open += args[i].told_half_open;
    }
    int opened = ok;
    ok &= buttress_breaker_state(s.br) == BUTTRESS_STATE_HALF_OPEN;
    int half_open = ok;
    pthread_barrier_wait(&s.barrier);
    pthread_barrier_wait(&s.barrier);
    int told_closed = 0, unexpected = 0;
    for (int i = 0; i < RACERS; i++) {
      told_closed += args[i].told_closed;
      unexpected += args[i].unexpected;
    }
    ok &= buttress_breaker_state(s.br) == BUTTRESS_STATE_CLOSED && unexpected == 0;
    bad_admitted += admitted != (int)k;
    bad_told += told_half_open != 1 || told_closed != 1;
    bad_state += !ok;
    if (first_bad < 0 && (admitted != (int)k || told_half_open != 1 ||
                          told_closed != 1 || !ok)) {
      first_bad = r;
      fprintf(stderr, "K=%u round %ld: %d admitted, %d told open->half_open, "
              "%d told half_open->closed, opened %d, half-open %d, closed %d, "
              "%d unexpected codes\n", k, r, admitted, told_half_open,
              told_closed, opened, half_open,
              buttress_breaker_state(s.br) == BUTTRESS_STATE_CLOSED, unexpected);
    }
  }
  for (int i = 0; i < RACERS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&s.barrier);

  long total_admitted = 0;
  for (int i = 0; i < RACERS; i++)
    total_admitted += args[i].admitted_total;
  buttress_breaker_metrics m = breaker_metrics(s.br, T0 + rounds * SEC(10));
  assert_int_equal(bad_admitted, 0);
  assert_int_equal(bad_told, 0);
  assert_int_equal(bad_state, 0);
  assert_int_equal(total_admitted, (long)k * rounds);
  assert_int_equal(m.transitions[BUTTRESS_STATE_OPEN][BUTTRESS_STATE_HALF_OPEN], rounds);
  assert_int_equal(m.transitions[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_CLOSED], rounds);
  assert_int_equal(m.rejected, (uint64_t)rounds * (RACERS * TRIES_PER_RACER - k));
  free(s.br);
}

static void
test_half_open_exactly_one(void **state)
{
  (void)state;
  run_half_open_rounds(1, scaled(10000));
}

static void
test_half_open_exactly_three(void **state)
{
  (void)state;
  run_half_open_rounds(3, scaled(10000));
}

/* ------------------------------------------------ count window exact */

enum { WINDOW_THREADS = 8 };

struct window_arg {
  buttress_breaker *br;
  pthread_barrier_t *start;
  long ops;
  uint64_t seed;
  long unexpected;
};

static void *
window_thread(void *p)
{
  struct window_arg *a = p;
  uint64_t prng = a->seed;
  pthread_barrier_wait(a->start);
  for (long i = 0; i < a->ops; i++) {
    int outcome = ref_splitmix64_next(&prng) & 1 ? BUTTRESS_FAILURE : BUTTRESS_SUCCESS;
    if (breaker_call(a->br, T0, outcome) != 0)
      a->unexpected++;
  }
  return NULL;
}

/* Racing outcomes must leave the window's running counts exact: after the
 * race, 100 successes push every failure out (rate 0), and the rule
 * "100% of the last 100" then opens at the 100th failure, not before. */
static void
test_count_window_exact_after_contention(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = 0;
  cfg.failure_rate = 1.0;
  cfg.window_size = 100;
  cfg.min_calls = 100;
  buttress_breaker *br = breaker_new(&cfg);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, WINDOW_THREADS);
  pthread_t th[WINDOW_THREADS];
  struct window_arg args[WINDOW_THREADS];
  for (int i = 0; i < WINDOW_THREADS; i++) {
    args[i] = (struct window_arg){br, &start, scaled(50000), 900 + (uint64_t)i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, window_thread, &args[i]), 0);
  }
  for (int i = 0; i < WINDOW_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].unexpected, 0);
  }
  pthread_barrier_destroy(&start);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.state, BUTTRESS_STATE_CLOSED);
  assert_int_equal(m.window_calls, 100);
  assert_true(m.window_failures < 100);

  for (int i = 0; i < 100; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  m = breaker_metrics(br, T0);
  assert_int_equal(m.window_calls, 100);
  assert_int_equal(m.window_failures, 0);
  for (int i = 0; i < 99; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  assert_int_equal(breaker_metrics(br, T0).window_failures, 99);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

/* Time windows: threads race to start each bucket; no call may be lost. */
struct timed_arg {
  buttress_breaker *br;
  pthread_barrier_t *start;
  long ops;
  int64_t bucket;
  long failures, unexpected;
};

static void *
timed_thread(void *p)
{
  struct timed_arg *a = p;
  pthread_barrier_wait(a->start);
  for (long i = 0; i < a->ops; i++) {
    int64_t now = T0 + MS(1) + (i % 10) * a->bucket;
    int outcome = i % 3 == 0 ? BUTTRESS_FAILURE : BUTTRESS_SUCCESS;
    if (breaker_call(a->br, now, outcome) != 0)
      a->unexpected++;
    a->failures += outcome == BUTTRESS_FAILURE;
  }
  return NULL;
}

static void
test_time_window_counts_exact(void **state)
{
  (void)state;
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = 0;
  cfg.failure_rate = 1.0; /* a third fail: never opens, but keeps a window */
  cfg.window_type = BUTTRESS_WINDOW_TIME;
  cfg.window_ns = SEC(10);
  const int64_t bucket = SEC(10) / BUTTRESS_TIME_BUCKETS;
  const int rounds = (int)scaled(100);
  int lost_rounds = 0;
  for (int round = 0; round < rounds; round++) {
    buttress_breaker *br = breaker_new(&cfg);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, WINDOW_THREADS);
    pthread_t th[WINDOW_THREADS];
    struct timed_arg args[WINDOW_THREADS];
    for (int i = 0; i < WINDOW_THREADS; i++) {
      args[i] = (struct timed_arg){br, &start, 300, bucket, 0, 0};
      assert_int_equal(pthread_create(&th[i], NULL, timed_thread, &args[i]), 0);
    }
    uint64_t failures = 0;
    for (int i = 0; i < WINDOW_THREADS; i++) {
      pthread_join(th[i], NULL);
      assert_int_equal(args[i].unexpected, 0);
      failures += (uint64_t)args[i].failures;
    }
    pthread_barrier_destroy(&start);
    buttress_breaker_metrics m = breaker_metrics(br, T0 + MS(1) + 9 * bucket);
    if (m.window_calls != WINDOW_THREADS * 300 || m.window_failures != failures) {
      if (lost_rounds == 0)
        fprintf(stderr, "round %d: window has %llu calls, %llu failures; "
                "recorded %d, %llu\n", round, (unsigned long long)m.window_calls,
                (unsigned long long)m.window_failures, WINDOW_THREADS * 300,
                (unsigned long long)failures);
      lost_rounds++;
    }
    free(br);
  }
  assert_int_equal(lost_rounds, 0);
}

/* ------------------------------------------- retry and budget counters */

enum { RETRY_THREADS = 8 };

struct retry_arg {
  buttress_retry *r;
  buttress_budget *budget;
  pthread_barrier_t *start;
  long calls;
  uint64_t seed;
  uint64_t attempts, retries, successes, failures, giveups[4], unexpected;
};

static void *
retry_thread(void *p)
{
  struct retry_arg *a = p;
  uint64_t prng = a->seed;
  pthread_barrier_wait(a->start);
  for (long c = 0; c < a->calls; c++) {
    buttress_retry_call call;
    int64_t now = clock_read();
    if (buttress_retry_begin(a->r, &call, a->budget, BUTTRESS_NONE, now) != 0) {
      a->unexpected++;
      continue;
    }
    a->attempts++;
    for (;;) {
      uint64_t x = ref_splitmix64_next(&prng) % 10;
      if (x < 3) { /* success */
        buttress_retry_end(a->r, &call, BUTTRESS_SUCCESS);
        a->successes++;
        break;
      }
      if (x < 4) { /* an error that is not retried */
        buttress_retry_end(a->r, &call, BUTTRESS_FAILURE);
        a->failures++;
        break;
      }
      int rc = buttress_retry_next(a->r, &call, a->budget, BUTTRESS_NONE, clock_read());
      if (rc == 0) {
        a->attempts++;
        a->retries++;
        continue;
      }
      if (rc == BUTTRESS_EXHAUSTED || rc == BUTTRESS_BUDGET)
        a->giveups[rc == BUTTRESS_EXHAUSTED ? 0 : 1]++;
      else
        a->unexpected++;
      break;
    }
  }
  return NULL;
}

static void
test_retry_and_budget_counters_exact(void **state)
{
  (void)state;
  buttress_retry_config rc;
  buttress_retry_config_init(&rc);
  rc.attempts = 4;
  rc.backoff.base_ns = 0; /* no deadline: only attempts and budget give up */
  buttress_retry *r = retry_new(&rc, 5);
  buttress_budget_config bc;
  buttress_budget_config_init(&bc);
  bc.ratio = 0.5;
  bc.min_per_second = 0;
  bc.window_ns = BUTTRESS_MAX_DURATION_NS; /* nothing expires: exact totals */
  buttress_budget *budget = budget_new(&bc);
  atomic_store(&fake_clock, T0);

  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, RETRY_THREADS);
  pthread_t th[RETRY_THREADS];
  struct retry_arg args[RETRY_THREADS];
  memset(args, 0, sizeof args);
  const long calls = scaled(20000);
  for (int i = 0; i < RETRY_THREADS; i++) {
    args[i].r = r;
    args[i].budget = budget;
    args[i].start = &start;
    args[i].calls = calls;
    args[i].seed = 500 + (uint64_t)i;
    assert_int_equal(pthread_create(&th[i], NULL, retry_thread, &args[i]), 0);
  }
  struct retry_arg sum;
  memset(&sum, 0, sizeof sum);
  for (int i = 0; i < RETRY_THREADS; i++) {
    pthread_join(th[i], NULL);
    sum.attempts += args[i].attempts;
    sum.retries += args[i].retries;
    sum.successes += args[i].successes;
    sum.failures += args[i].failures;
    sum.giveups[0] += args[i].giveups[0];
    sum.giveups[1] += args[i].giveups[1];
    sum.unexpected += args[i].unexpected;
  }
  pthread_barrier_destroy(&start);

  buttress_retry_metrics m;
  assert_rc(buttress_retry_metrics_get(r, BUTTRESS_NO_CLOCK, &m), 0);
  assert_int_equal(sum.unexpected, 0);
  assert_int_equal(m.calls, (uint64_t)RETRY_THREADS * (uint64_t)calls);
  assert_int_equal(m.attempts, sum.attempts);
  assert_int_equal(m.retries, sum.retries);
  assert_int_equal(m.successes, sum.successes);
  assert_int_equal(m.failures, sum.failures);
  assert_int_equal(m.giveups_attempts, sum.giveups[0]);
  assert_int_equal(m.giveups_budget, sum.giveups[1]);
  assert_int_equal(m.giveups_deadline, 0);
  assert_int_equal(m.calls, m.successes + m.failures + m.giveups_attempts +
                                m.giveups_budget);

  buttress_budget_metrics bm;
  assert_rc(buttress_budget_metrics_get(budget, clock_read(), &bm), 0);
  assert_int_equal(bm.deposits, m.calls);
  assert_int_equal(bm.withdrawals, m.retries);
  assert_int_equal(bm.rejections, m.giveups_budget);
  /* Never more retries than half the calls. */
  assert_true(2 * bm.withdrawals <= bm.deposits);
  assert_true(bm.rejections > 0);
  free(r);
  free(budget);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counters_exact_under_contention),
      cmocka_unit_test(test_half_open_exactly_one),
      cmocka_unit_test(test_half_open_exactly_three),
      cmocka_unit_test(test_count_window_exact_after_contention),
      cmocka_unit_test(test_time_window_counts_exact),
      cmocka_unit_test(test_retry_and_budget_counters_exact),
  };
  return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
