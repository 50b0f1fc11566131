/*
 * One test per line of PITFALLS.md (bugs that shipped in other retry and
 * breaker libraries) that the core can catch, named by the line's number.
 *
 * Lines that are binding-level, tested in the Python, Lua and nginx suites;
 * where the core has a share of the promise, that share is tested here:
 *   #5  no lock held around the user's call (core: outstanding tickets
 *       block no one),
 *   #6  the `with breaker:` form (core: an open breaker admits nothing and a
 *       stale success closes nothing),
 *   #7  a fresh exception object per rejection (core: each rejection is
 *       written into the caller's own ticket),
 *   #8  listener isolation (core: the transition is committed before the
 *       one caller is told, and calling back in works),
 *   #10 per-worker breakers in nginx (core: one state block shared by forked
 *       processes counts and admits for all of them),
 *   #14 BaseException / cancellation never retried (core: CANCELLED is
 *       neutral and gives its permit back),
 *   #20 OpenResty sleeping and clocks (core: the core never sleeps),
 *   #21 CPython reference leaks, GC and fork: no core share, no test here.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define T0 SEC(1000)

static buttress_breaker_config
breaker_cfg(uint32_t failure_threshold, uint32_t half_open_calls,
            uint32_t success_threshold)
{
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg);
  cfg.failure_threshold = failure_threshold;
  cfg.half_open_calls = half_open_calls;
  cfg.success_threshold = success_threshold;
  return cfg;
}

static void
trip(buttress_breaker *br, uint32_t threshold, int64_t now)
{
  for (uint32_t i = 0; i < threshold; i++)
    assert_rc(breaker_call(br, now, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
}

/* ------------------------------------------------------------- #1 */

/* 8 threads race allow() at the moment half-open becomes possible; each
 * round the main thread then fails one trial, which reopens the breaker and
 * makes the other trials stale, so every round races open -> half-open
 * again.  Exactly K admitted in each of 10,000 rounds. */
enum { P1_THREADS = 8, P1_K = 2 };

struct p1_shared {
  buttress_breaker *br;
  pthread_barrier_t barrier;
  long rounds;
  _Atomic int64_t now;
  buttress_ticket tickets[P1_THREADS][2];
  int admitted[P1_THREADS];
  int told[P1_THREADS]; /* open -> half-open, admitted or not */
};

struct p1_arg {
  struct p1_shared *s;
  int id;
};

static void *
p1_thread(void *p)
{
  struct p1_arg *a = p;
  struct p1_shared *s = a->s;
  for (long r = 0; r < s->rounds; r++) {
    pthread_barrier_wait(&s->barrier);
    int64_t now = atomic_load_explicit(&s->now, memory_order_relaxed);
    int n = 0, told = 0;
    for (int i = 0; i < 2; i++) {
      buttress_ticket *t = &s->tickets[a->id][n];
      int rc = buttress_breaker_allow(s->br, now, t);
      /* The caller that moved the breaker is told even if the permits were
       * gone by the time it asked for one. */
      told += t->from == BUTTRESS_STATE_OPEN && t->to == BUTTRESS_STATE_HALF_OPEN;
      if (rc == 0)
        n++;
    }
    s->admitted[a->id] = n;
    s->told[a->id] = told;
    pthread_barrier_wait(&s->barrier);
  }
  return NULL;
}

static void
test_pitfall_01_half_open_exact_k(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(1, P1_K, 1);
  cfg.reset_timeout_ns = SEC(1);
  struct p1_shared s;
  memset(&s, 0, sizeof s);
  s.br = breaker_new(&cfg);
  s.rounds = scaled(10000);
  pthread_barrier_init(&s.barrier, NULL, P1_THREADS + 1);
  pthread_t th[P1_THREADS];
  struct p1_arg args[P1_THREADS];
  for (int i = 0; i < P1_THREADS; i++) {
    args[i] = (struct p1_arg){&s, i};
    assert_int_equal(pthread_create(&th[i], NULL, p1_thread, &args[i]), 0);
  }
  int64_t now = T0;
  trip(s.br, 1, now);
  long wrong_rounds = 0, wrong_told = 0, wrong_reopen = 0;
  for (long r = 0; r < s.rounds; r++) {
    now += SEC(1); /* the open period has just ended */
    atomic_store_explicit(&s.now, now, memory_order_relaxed);
    pthread_barrier_wait(&s.barrier);
    pthread_barrier_wait(&s.barrier);
    int admitted = 0, told = 0;
    buttress_ticket *failing = NULL;
    for (int i = 0; i < P1_THREADS; i++) {
      told += s.told[i];
      for (int k = 0; k < s.admitted[i]; k++) {
        admitted++;
        if (failing == NULL)
          failing = &s.tickets[i][k];
      }
    }
    wrong_rounds += admitted != P1_K;
    wrong_told += told != 1;
    if (failing == NULL)
      break;
    /* One trial fails: reopen.  The other trials' outcomes are now stale. */
    wrong_reopen += buttress_breaker_record(s.br, failing, BUTTRESS_FAILURE, MS(1), now) != 0 ||
                    failing->to != BUTTRESS_STATE_OPEN;
    for (int i = 0; i < P1_THREADS; i++)
      for (int k = 0; k < s.admitted[i]; k++)
        if (&s.tickets[i][k] != failing)
          wrong_reopen += buttress_breaker_record(s.br, &s.tickets[i][k], BUTTRESS_SUCCESS,
                                                  MS(1), now) != BUTTRESS_STALE;
  }
  for (int i = 0; i < P1_THREADS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&s.barrier);
  assert_int_equal(wrong_rounds, 0);
  assert_int_equal(wrong_told, 0);
  assert_int_equal(wrong_reopen, 0);
  buttress_breaker_metrics m = breaker_metrics(s.br, now);
  assert_int_equal(m.transitions[BUTTRESS_STATE_OPEN][BUTTRESS_STATE_HALF_OPEN], s.rounds);
  assert_int_equal(m.transitions[BUTTRESS_STATE_HALF_OPEN][BUTTRESS_STATE_OPEN], s.rounds);
  free(s.br);
}

/* ------------------------------------------------------------- #2 */

/* Every trial permit is lost (the calls never report back): after
 * trial_timeout new trials are admitted and can close the breaker. */
static void
test_pitfall_02_lost_trials_expire(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(1, 2, 1);
  cfg.trial_timeout_ns = SEC(3);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  int64_t t1 = T0 + SEC(30);
  buttress_ticket lost1, lost2, t;
  assert_rc(buttress_breaker_allow(br, t1, &lost1), 0);
  assert_rc(buttress_breaker_allow(br, t1, &lost2), 0);
  for (int64_t dt = 0; dt < SEC(3); dt += MS(250))
    assert_rc(buttress_breaker_allow(br, t1 + dt, &t), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, t1 + SEC(3) + 1, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, MS(1), t1 + SEC(4)), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  /* The lost calls turn up much later: ignored. */
  assert_rc(buttress_breaker_record(br, &lost1, BUTTRESS_FAILURE, MS(1), t1 + SEC(9)),
            BUTTRESS_STALE);
  assert_rc(buttress_breaker_record(br, &lost2, BUTTRESS_FAILURE, MS(1), t1 + SEC(9)),
            BUTTRESS_STALE);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  free(br);
}

/* ------------------------------------------------------------- #3 */

/* A slow success admitted while closed must not close a half-open breaker,
 * and a slow failure from then must not reopen it. */
static void
test_pitfall_03_late_result_of_earlier_state(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(3, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket slow_ok, slow_fail, trial;
  assert_rc(buttress_breaker_allow(br, T0, &slow_ok), 0);
  assert_rc(buttress_breaker_allow(br, T0, &slow_fail), 0);
  trip(br, 3, T0 + MS(1));
  assert_rc(buttress_breaker_allow(br, T0 + SEC(31), &trial), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);

  assert_rc(buttress_breaker_record(br, &slow_ok, BUTTRESS_SUCCESS, SEC(31), T0 + SEC(31)),
            BUTTRESS_STALE);
  assert_rc(buttress_breaker_record(br, &slow_fail, BUTTRESS_FAILURE, SEC(31), T0 + SEC(31)),
            BUTTRESS_STALE);
  buttress_breaker_metrics m = breaker_metrics(br, T0 + SEC(31));
  assert_int_equal(m.state, BUTTRESS_STATE_HALF_OPEN);
  assert_int_equal(m.half_open_successes, 0);
  assert_int_equal(m.stale, 2);
  /* The real trial still decides. */
  assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_SUCCESS, MS(1), T0 + SEC(31)), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_CLOSED);
  free(br);
}

/* ------------------------------------------------------------- #4 */

static void
test_pitfall_04_excluded_is_neutral(void **state)
{
  (void)state;
  /* The streak: F F excluded F opens at threshold 3. */
  buttress_breaker_config cfg = breaker_cfg(3, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_rc(breaker_call(br, T0, BUTTRESS_EXCLUDED), 0);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  /* A half-open trial that ends excluded neither closes nor reopens. */
  buttress_ticket trial;
  assert_rc(buttress_breaker_allow(br, T0 + SEC(30), &trial), 0);
  assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_EXCLUDED, MS(1), T0 + SEC(30)), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);
  assert_int_equal(breaker_metrics(br, T0 + SEC(30)).successes, 0);
  free(br);

  /* The rate: excluded calls do not dilute the failure rate. */
  cfg = breaker_cfg(0, 1, 1);
  cfg.failure_rate = 0.5;
  cfg.window_size = 4;
  cfg.min_calls = 4;
  br = breaker_new(&cfg);
  assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  for (int i = 0; i < 10; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_EXCLUDED), 0);
  assert_int_equal(breaker_metrics(br, T0).window_calls, 3);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0); /* 2 of 4 */
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  free(br);
}

/* ------------------------------------------------------------- #5 */

/* No lock is held between allow() and record(): with a thousand calls
 * outstanding in one thread, another thread's calls go through. */
struct p5_arg {
  buttress_breaker *br;
  int done;
};

static void *
p5_thread(void *p)
{
  struct p5_arg *a = p;
  for (int i = 0; i < 10000; i++)
    if (breaker_call(a->br, T0, BUTTRESS_SUCCESS) == 0)
      a->done++;
  return NULL;
}

static void
test_pitfall_05_no_lock_around_calls(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(5, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  enum { OUTSTANDING = 1000 };
  buttress_ticket *held = calloc(OUTSTANDING, sizeof *held);
  assert_non_null(held);
  for (int i = 0; i < OUTSTANDING; i++)
    assert_rc(buttress_breaker_allow(br, T0, &held[i]), 0);
  struct p5_arg arg = {br, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, p5_thread, &arg), 0);
  pthread_join(th, NULL);
  assert_int_equal(arg.done, 10000);
  for (int i = 0; i < OUTSTANDING; i++)
    assert_rc(buttress_breaker_record(br, &held[i], BUTTRESS_SUCCESS, MS(1), T0), 0);
  assert_int_equal(breaker_metrics(br, T0).successes, 10000 + OUTSTANDING);
  free(held);
  free(br);
}

/* ------------------------------------------------------------- #6 */

static void
test_pitfall_06_open_admits_nothing(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(2, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket before, t;
  assert_rc(buttress_breaker_allow(br, T0, &before), 0);
  trip(br, 2, T0);
  for (int i = 0; i < 1000; i++)
    assert_rc(buttress_breaker_allow(br, T0 + i * MS(10), &t), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_record(br, &before, BUTTRESS_SUCCESS, MS(1), T0 + SEC(1)),
            BUTTRESS_STALE);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  assert_int_equal(breaker_metrics(br, T0 + SEC(10)).rejected, 1000);
  free(br);
}

/* ------------------------------------------------------------- #7 */

/* The rejection is written into the caller's own ticket: two rejections
 * at different times each carry their own retry_after. */
static void
test_pitfall_07_each_rejection_its_own(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(1, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  trip(br, 1, T0);
  buttress_ticket a, b;
  assert_rc(buttress_breaker_allow(br, T0 + SEC(10), &a), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_allow(br, T0 + SEC(20), &b), BUTTRESS_OPEN);
  assert_i64_eq(a.retry_after_ns, SEC(20));
  assert_i64_eq(b.retry_after_ns, SEC(10));
  free(br);
}

/* ------------------------------------------------------------- #8 */

/* Listeners run after the transition is committed, and may call straight
 * back into the breaker: the state already shows the transition, the
 * counters count it, and re-entrant calls neither block nor fail. */
static void
test_pitfall_08_transition_committed_before_told(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(2, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  buttress_ticket t, again;
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_rc(buttress_breaker_allow(br, T0, &t), 0);
  assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), T0), 0);
  assert_int_equal(t.from, BUTTRESS_STATE_CLOSED);
  assert_int_equal(t.to, BUTTRESS_STATE_OPEN);
  /* "The listener" runs now. */
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.transitions[BUTTRESS_STATE_CLOSED][BUTTRESS_STATE_OPEN], 1);
  assert_rc(buttress_breaker_allow(br, T0, &again), BUTTRESS_OPEN);
  assert_rc(buttress_breaker_reset(br, T0, &again), 0);
  assert_int_equal(again.from, BUTTRESS_STATE_OPEN);
  assert_int_equal(again.to, BUTTRESS_STATE_CLOSED);
  assert_rc(breaker_call(br, T0, BUTTRESS_SUCCESS), 0);
  free(br);
}

/* ------------------------------------------------------------- #9 */

/* The breaker named "payments" of region r, found or created. */
static buttress_breaker *
region_payments(buttress_region *r, const buttress_breaker_config *cfg, int *created)
{
  buttress_breaker *br = NULL;
  assert_rc(buttress_region_breaker(r, "payments", cfg, &br, created), 0);
  assert_non_null(br);
  return br;
}

/* A child process attaches and reports what it found: exit code 0 when the
 * breaker was found (not created), still open, with its failures. */
static int
attach_and_check(buttress_region *r, const buttress_breaker_config *cfg, uint64_t failures)
{
  buttress_breaker *br = NULL;
  int created = -1;
  if (buttress_region_breaker(r, "payments", cfg, &br, &created) != 0)
    return 1;
  if (created != 0)
    return 2;
  if (buttress_breaker_state(br) != BUTTRESS_STATE_OPEN)
    return 3;
  buttress_breaker_metrics m;
  if (buttress_breaker_metrics_get(br, T0, &m) != 0 || m.failures != failures)
    return 4;
  buttress_ticket t;
  if (buttress_breaker_allow(br, T0 + SEC(1), &t) != BUTTRESS_OPEN)
    return 5;
  return 0;
}

static void
assert_child_attaches(buttress_region *r, const buttress_breaker_config *cfg, uint64_t failures)
{
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(attach_and_check(r, cfg, failures));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* Attaching to live shared state, from this process or another, anonymous
 * or named region, never resets it. */
static void
test_pitfall_09_attach_never_resets(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(3, 1, 1);

  buttress_region *anon = NULL;
  assert_rc(buttress_region_anonymous(BUTTRESS_REGION_MIN_SIZE, &anon), 0);
  int created = -1;
  buttress_breaker *br = region_payments(anon, &cfg, &created);
  assert_int_equal(created, 1);
  trip(br, 3, T0);
  buttress_breaker *again = region_payments(anon, &cfg, &created);
  assert_int_equal(created, 0);
  assert_int_equal(buttress_breaker_state(again), BUTTRESS_STATE_OPEN);
  assert_child_attaches(anon, &cfg, 3);
  /* The children's rejected calls landed in the same state. */
  assert_int_equal(breaker_metrics(br, T0).rejected, 1);
  assert_rc(buttress_region_close(anon), 0);

  char name[64];
  snprintf(name, sizeof name, "/buttress-test-p09-%ld", (long)getpid());
  buttress_region_unlink(name); /* a leftover of an earlier crashed run */
  buttress_region *first = NULL, *second = NULL;
  assert_rc(buttress_region_open(name, BUTTRESS_REGION_MIN_SIZE, BUTTRESS_REGION_CREATE, 0600,
                                 &first), 0);
  br = region_payments(first, &cfg, &created);
  assert_int_equal(created, 1);
  trip(br, 3, T0);
  /* A second opener, with CREATE as every worker would pass it. */
  assert_rc(buttress_region_open(name, BUTTRESS_REGION_MIN_SIZE, BUTTRESS_REGION_CREATE, 0600,
                                 &second), 0);
  again = region_payments(second, &cfg, &created);
  assert_int_equal(created, 0);
  assert_int_equal(buttress_breaker_state(again), BUTTRESS_STATE_OPEN);
  assert_int_equal(breaker_metrics(again, T0).failures, 3);
  assert_child_attaches(second, &cfg, 3);
  /* Attaching with another config is refused, and resets nothing either. */
  buttress_breaker_config other = breaker_cfg(4, 1, 1);
  buttress_breaker *wrong = NULL;
  assert_rc(buttress_region_breaker(second, "payments", &other, &wrong, &created),
            BUTTRESS_ECONFIG);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  assert_rc(buttress_region_close(second), 0);
  assert_rc(buttress_region_close(first), 0);
  assert_rc(buttress_region_unlink(name), 0);
}

/* ------------------------------------------------------------ #10 */

/* One breaker state in memory shared by forked "workers": failures add up
 * across processes (threshold 4 with 4 processes failing once each) and the
 * half-open trials are K for all of them together, not K per worker. */
struct p10_shared {
  _Atomic int go;
  _Atomic int admitted, told_open, told_half_open;
};

enum { P10_WORKERS = 4, P10_ROUNDS = 20 };

static void
p10_worker(buttress_breaker *br, struct p10_shared *sh, int outcome_failure, int64_t now)
{
  while (!atomic_load_explicit(&sh->go, memory_order_acquire))
    ;
  buttress_ticket t;
  int rc = buttress_breaker_allow(br, now, &t);
  /* the caller that moved the breaker to half-open is told so even when
   * another one took the permit first and it was rejected */
  atomic_fetch_add(&sh->told_half_open,
                   t.from == BUTTRESS_STATE_OPEN && t.to == BUTTRESS_STATE_HALF_OPEN);
  if (rc != 0)
    _exit(0);
  atomic_fetch_add(&sh->admitted, 1);
  if (outcome_failure) {
    if (buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), now) != 0)
      _exit(2);
    atomic_fetch_add(&sh->told_open, t.to == BUTTRESS_STATE_OPEN);
  }
  _exit(0);
}

static void
run_workers(buttress_breaker *br, struct p10_shared *sh, int outcome_failure, int64_t now)
{
  atomic_store(&sh->go, 0);
  atomic_store(&sh->admitted, 0);
  atomic_store(&sh->told_open, 0);
  atomic_store(&sh->told_half_open, 0);
  pid_t pids[P10_WORKERS];
  for (int i = 0; i < P10_WORKERS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0)
      p10_worker(br, sh, outcome_failure, now);
  }
  atomic_store_explicit(&sh->go, 1, memory_order_release);
  for (int i = 0; i < P10_WORKERS; i++) {
    int status = 0;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
}

static void
test_pitfall_10_one_state_for_all_workers(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(P10_WORKERS, 1, 1);
  cfg.reset_timeout_ns = SEC(1);
  size_t size = buttress_breaker_sizeof(&cfg);
  size_t total = (size + 63) / 64 * 64 + sizeof(struct p10_shared);
  void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(mem != MAP_FAILED);
  buttress_breaker *br = mem;
  struct p10_shared *sh = (void *)((char *)mem + (size + 63) / 64 * 64);
  assert_rc(buttress_breaker_init(mem, size, &cfg), 0);

  /* Each worker fails once: together they reach the threshold. */
  int64_t now = T0;
  run_workers(br, sh, 1, now);
  assert_int_equal(atomic_load(&sh->admitted), P10_WORKERS);
  assert_int_equal(atomic_load(&sh->told_open), 1);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  assert_int_equal(breaker_metrics(br, now).failures, P10_WORKERS);

  for (int r = 0; r < P10_ROUNDS; r++) {
    now += SEC(1);
    run_workers(br, sh, 0, now); /* all race for the one trial */
    assert_int_equal(atomic_load(&sh->admitted), 1);
    assert_int_equal(atomic_load(&sh->told_half_open), 1);
    /* Reopen for the next round: fail a fresh trial once the permit has
     * expired (trial_timeout = reset_timeout; whole milliseconds keep this
     * test about sharing, test_breaker.c checks sub-millisecond times). */
    buttress_ticket t;
    now += SEC(1) + MS(1);
    assert_rc(buttress_breaker_allow(br, now, &t), 0);
    assert_rc(buttress_breaker_record(br, &t, BUTTRESS_FAILURE, MS(1), now), 0);
    assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);
  }
  munmap(mem, total);
}

/* ------------------------------------------------------------ #11 */

static void
test_pitfall_11_no_overflow_at_huge_attempts(void **state)
{
  (void)state;
  const uint32_t retries[] = {1023, 1024, 1025, 4096, UINT32_MAX - 1, UINT32_MAX};
  for (int jitter = BUTTRESS_JITTER_NONE; jitter <= BUTTRESS_JITTER_DECORRELATED; jitter++) {
    buttress_backoff_config cfg;
    buttress_backoff_config_init(&cfg);
    cfg.jitter = jitter;
    buttress_backoff *b = backoff_new(&cfg, 11);
    for (size_t i = 0; i < sizeof retries / sizeof retries[0]; i++) {
      int64_t ceiling, d;
      assert_rc(buttress_backoff_ceiling(&cfg, retries[i], &ceiling), 0);
      assert_i64_eq(ceiling, SEC(10)); /* saturated at the cap, not wrapped */
      for (int k = 0; k < 100; k++) {
        assert_rc(buttress_backoff_next(b, retries[i], SEC(10), &d), 0);
        assert_i64_range(d, 0, SEC(10));
      }
    }
    free(b);
  }
  /* Through the retry API: thousands of retries never leave [0, cap]. */
  buttress_retry_config rc;
  buttress_retry_config_init(&rc);
  rc.attempts = UINT32_MAX;
  rc.backoff.base_ns = 1;
  rc.backoff.jitter = BUTTRESS_JITTER_NONE;
  buttress_retry *r = retry_new(&rc, 1);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  for (int i = 0; i < 3000; i++) {
    assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    assert_i64_range(call.delay_ns, 1, SEC(10));
    if (i >= 40) /* 2**34 ns > 10 s */
      assert_i64_eq(call.delay_ns, SEC(10));
  }
  free(r);
}

/* ------------------------------------------------------------ #12 */

static void
test_pitfall_12_jitter_after_cap(void **state)
{
  (void)state;
  buttress_backoff_config cfg;
  buttress_backoff_config_init(&cfg); /* full jitter, cap 10 s */
  buttress_backoff *b = backoff_new(&cfg, 12);
  int at_cap = 0, below_half = 0;
  for (int i = 0; i < 1000; i++) {
    int64_t d;
    assert_rc(buttress_backoff_next(b, 100, BUTTRESS_NONE, &d), 0);
    assert_i64_range(d, 0, SEC(10));
    at_cap += d == SEC(10);
    below_half += d < SEC(5);
  }
  assert_true(at_cap <= 1);
  assert_true(below_half > 400 && below_half < 600);
  free(b);
}

/* ------------------------------------------------------------ #13 */

static void
test_pitfall_13_bounded_by_default(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  assert_int_equal(cfg.attempts, 3);
  buttress_retry *r = retry_new(&cfg, 13);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), BUTTRESS_EXHAUSTED);
  free(r);
}

/* ------------------------------------------------------------ #14 */

/* A cancelled call is neither success nor failure, and a cancelled trial
 * gives its permit back. */
static void
test_pitfall_14_cancelled_is_neutral(void **state)
{
  (void)state;
  buttress_breaker_config cfg = breaker_cfg(2, 1, 1);
  buttress_breaker *br = breaker_new(&cfg);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  for (int i = 0; i < 10; i++)
    assert_rc(breaker_call(br, T0, BUTTRESS_CANCELLED), 0);
  buttress_breaker_metrics m = breaker_metrics(br, T0);
  assert_int_equal(m.consecutive_failures, 1);
  assert_int_equal(m.cancelled, 10);
  assert_int_equal(m.successes + m.failures, 1);
  assert_rc(breaker_call(br, T0, BUTTRESS_FAILURE), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_OPEN);

  buttress_ticket trial, next;
  assert_rc(buttress_breaker_allow(br, T0 + SEC(30), &trial), 0);
  assert_rc(buttress_breaker_record(br, &trial, BUTTRESS_CANCELLED, BUTTRESS_NO_CLOCK,
                                    T0 + SEC(30)), 0);
  assert_int_equal(buttress_breaker_state(br), BUTTRESS_STATE_HALF_OPEN);
  assert_rc(buttress_breaker_allow(br, T0 + SEC(30), &next), 0);
  free(br);
}

/* ------------------------------------------------------------ #15 */

static int64_t
clock_ns(clockid_t id)
{
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * BUTTRESS_NS_PER_S + ts.tv_nsec;
}

/* The clock the core offers is the monotonic one, and decisions depend on
 * the time passed in only: the same calls after a real pause decide the
 * same. */
static void
test_pitfall_15_monotonic_time_only(void **state)
{
  (void)state;
  int64_t before = clock_ns(CLOCK_MONOTONIC);
  int64_t mine = buttress_monotonic_ns();
  int64_t after = clock_ns(CLOCK_MONOTONIC);
  assert_i64_range(mine, before, after);
  int64_t last = mine;
  for (int i = 0; i < 1000; i++) {
    int64_t now = buttress_monotonic_ns();
    assert_true(now >= last);
    last = now;
  }

  buttress_breaker_config cfg = breaker_cfg(1, 1, 1);
  for (int pass = 0; pass < 2; pass++) {
    buttress_breaker *br = breaker_new(&cfg);
    trip(br, 1, T0);
    buttress_ticket t;
    assert_rc(buttress_breaker_allow(br, T0 + SEC(29), &t), BUTTRESS_OPEN);
    assert_i64_eq(t.retry_after_ns, SEC(1));
    free(br);
    if (pass == 0)
      nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
  }
}

/* ------------------------------------------------------------ #16 */

/* Two overlapping calls of one retry policy each keep their own backoff
 * progress. */
static void
test_pitfall_16_per_call_state(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.attempts = 5;
  cfg.backoff.jitter = BUTTRESS_JITTER_NONE;
  buttress_retry *r = retry_new(&cfg, 16);
  buttress_retry_call a, b;
  assert_rc(buttress_retry_begin(r, &a, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &a, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &a, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(a.delay_ns, MS(200));
  assert_rc(buttress_retry_begin(r, &b, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &b, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(b.delay_ns, MS(100)); /* b starts from the beginning */
  assert_rc(buttress_retry_next(r, &a, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(a.delay_ns, MS(400)); /* a is not disturbed by b */
  assert_rc(buttress_retry_next(r, &b, NULL, BUTTRESS_NONE, T0), 0);
  assert_i64_eq(b.delay_ns, MS(200));
  buttress_retry_metrics m;
  assert_rc(buttress_retry_metrics_get(r, BUTTRESS_NO_CLOCK, &m), 0);
  assert_int_equal(m.calls, 2);
  assert_int_equal(m.retries, 5);
  free(r);
}

/* ------------------------------------------------------------ #17 */

static void
test_pitfall_17_zero_delay_is_zero(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.attempts = 10;
  cfg.backoff.base_ns = 0;
  buttress_retry *r = retry_new(&cfg, 17);
  buttress_retry_call call;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  for (int i = 0; i < 5; i++) {
    assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    assert_i64_eq(call.delay_ns, 0);
  }
  free(r);
  /* A Retry-After of 0 too. */
  buttress_retry_config_init(&cfg);
  r = retry_new(&cfg, 17);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &call, NULL, 0, T0), 0);
  assert_i64_eq(call.delay_ns, 0);
  free(r);
}

/* ------------------------------------------------------------ #18 */

/* Retries waiting in backoff have already spent budget: with a budget of
 * 3, three calls that decide to retry (none has slept yet) use it up and
 * the fourth is refused. */
static void
test_pitfall_18_budget_spent_when_decided(void **state)
{
  (void)state;
  buttress_budget_config bc;
  buttress_budget_config_init(&bc);
  bc.ratio = 0;
  bc.min_per_second = 3;
  bc.window_ns = SEC(1);
  buttress_budget *budget = budget_new(&bc);
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  buttress_retry *r = retry_new(&cfg, 18);
  buttress_retry_call calls[4];
  for (int i = 0; i < 4; i++)
    assert_rc(buttress_retry_begin(r, &calls[i], budget, BUTTRESS_NONE, T0), 0);
  for (int i = 0; i < 3; i++)
    assert_rc(buttress_retry_next(r, &calls[i], budget, BUTTRESS_NONE, T0), 0);
  assert_rc(buttress_retry_next(r, &calls[3], budget, BUTTRESS_NONE, T0), BUTTRESS_BUDGET);
  free(r);
  free(budget);
}

/* ------------------------------------------------------------ #19 */

static void
test_pitfall_19_never_sleep_past_deadline(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.attempts = 100;
  cfg.deadline_ns = SEC(5);
  cfg.backoff.jitter = BUTTRESS_JITTER_NONE; /* 0.1 0.2 0.4 0.8 1.6 3.2 ... */
  buttress_retry *r = retry_new(&cfg, 19);
  buttress_retry_call call;
  int64_t now = T0;
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, now), 0);
  int rc;
  int retries = 0;
  while ((rc = buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, now)) == 0) {
    now += call.delay_ns;
    assert_true(now < T0 + SEC(5));
    retries++;
  }
  assert_rc(rc, BUTTRESS_DEADLINE);
  /* 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 s; the next 3.2 s would end past 5 s. */
  assert_int_equal(retries, 5);
  free(r);
}

/* ------------------------------------------------------------ #20 */

/* The core decides and returns at once: a 10 s delay is handed back, not
 * slept. */
static void
test_pitfall_20_core_never_sleeps(void **state)
{
  (void)state;
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.backoff.base_ns = SEC(10);
  cfg.backoff.jitter = BUTTRESS_JITTER_NONE;
  cfg.attempts = 50;
  buttress_retry *r = retry_new(&cfg, 20);
  buttress_retry_call call;
  int64_t start = clock_ns(CLOCK_MONOTONIC);
  assert_rc(buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, T0), 0);
  for (int i = 0; i < 40; i++) {
    assert_rc(buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, T0), 0);
    assert_i64_eq(call.delay_ns, SEC(10));
  }
  assert_true(clock_ns(CLOCK_MONOTONIC) - start < SEC(2));
  free(r);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pitfall_01_half_open_exact_k),
      cmocka_unit_test(test_pitfall_02_lost_trials_expire),
      cmocka_unit_test(test_pitfall_03_late_result_of_earlier_state),
      cmocka_unit_test(test_pitfall_04_excluded_is_neutral),
      cmocka_unit_test(test_pitfall_05_no_lock_around_calls),
      cmocka_unit_test(test_pitfall_06_open_admits_nothing),
      cmocka_unit_test(test_pitfall_07_each_rejection_its_own),
      cmocka_unit_test(test_pitfall_08_transition_committed_before_told),
      cmocka_unit_test(test_pitfall_09_attach_never_resets),
      cmocka_unit_test(test_pitfall_10_one_state_for_all_workers),
      cmocka_unit_test(test_pitfall_11_no_overflow_at_huge_attempts),
      cmocka_unit_test(test_pitfall_12_jitter_after_cap),
      cmocka_unit_test(test_pitfall_13_bounded_by_default),
      cmocka_unit_test(test_pitfall_14_cancelled_is_neutral),
      cmocka_unit_test(test_pitfall_15_monotonic_time_only),
      cmocka_unit_test(test_pitfall_16_per_call_state),
      cmocka_unit_test(test_pitfall_17_zero_delay_is_zero),
      cmocka_unit_test(test_pitfall_18_budget_spent_when_decided),
      cmocka_unit_test(test_pitfall_19_never_sleep_past_deadline),
      cmocka_unit_test(test_pitfall_20_core_never_sleeps),
  };
  return cmocka_run_group_tests_name("pitfalls", tests, NULL, NULL);
}
