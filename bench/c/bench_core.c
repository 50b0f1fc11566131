/*
 * bench_core: hot-path costs of the buttress core next to a mutex-based
 * breaker (mutex_breaker.c), printed as one Markdown table.
 *
 *   make bench        (or: build/bench/bench_core [-v] [run_ms]; -v prints
 *                      every sample on stderr)
 *
 * Every figure is the median of REPS runs after a warm-up.  Single-thread
 * figures time a calibrated loop (~run_ms per run) with CLOCK_MONOTONIC;
 * two-thread figures let two pinned threads hammer one breaker for run_ms and
 * count the operations both completed.  No clock is read on the measured
 * breaker path: a closed breaker with the default config needs none.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buttress.h"
#include "bench_util.h"
#include "mutex_breaker.h"

#define REPS 7
#define HIST_VALUES 4096

static volatile int64_t sink; /* keeps results alive */

static void
die(const char *what, int rc)
{
  fprintf(stderr, "bench_core: %s: %d (%s)\n", what, rc, buttress_strerror(rc));
  exit(1);
}

static void *
place(size_t size)
{
  size_t rounded = (size + 63) / 64 * 64;
  void *mem = aligned_alloc(64, rounded);
  if (mem == NULL) {
    fprintf(stderr, "bench_core: out of memory\n");
    exit(1);
  }
  memset(mem, 0, rounded);
  return mem;
}

/* ------------------------------------------------------------ subjects */

static buttress_breaker *
new_breaker(void)
{
  buttress_breaker_config cfg;
  buttress_breaker_config_init(&cfg); /* the defaults users get */
  size_t size = buttress_breaker_sizeof(&cfg);
  buttress_breaker *br = place(size);
  int rc = buttress_breaker_init(br, size, &cfg);
  if (rc != 0)
    die("buttress_breaker_init", rc);
  return br;
}

static mutex_breaker *
new_mutex_breaker(void)
{
  mutex_breaker *mb = place(sizeof *mb);
  mutex_breaker_init(mb, 5, 30 * BUTTRESS_NS_PER_S);
  return mb;
}

static uint64_t
mutex_pairs(mutex_breaker *mb, uint64_t n)
{
  uint64_t bad = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t gen;
    int rc = mutex_breaker_allow(mb, BUTTRESS_NO_CLOCK, &gen);
    rc |= mutex_breaker_record(mb, gen, 1, BUTTRESS_NO_CLOCK);
    bad += rc != 0;
  }
  return bad;
}

/* ------------------------------------------------- single-thread loops */

enum subject { S_BUTTRESS, S_MUTEX, S_BACKOFF, S_HISTOGRAM, S_CLOCK, S_ATOMIC };

typedef struct single {
  const char *name;
  enum subject what;
  void *obj;
  const int64_t *values; /* histogram inputs */
} single;

/* Run n operations; returns elapsed ns. */
static int64_t
run_single(const single *s, uint64_t n)
{
  uint64_t bad = 0;
  int64_t acc = 0;
  int64_t t0 = now_ns();
  switch (s->what) {
  case S_BUTTRESS:
    bad = buttress_pairs(s->obj, n);
    break;
  case S_MUTEX:
    bad = mutex_pairs(s->obj, n);
    break;
  case S_BACKOFF:
    for (uint64_t i = 0; i < n; i++) {
      int64_t d;
      /* retries 0..31: below, at and past the cap (100 ms * 2**7 > 10 s) */
      bad += buttress_backoff_next(s->obj, (uint32_t)(i & 31), BUTTRESS_NONE,
                                   &d) != 0;
      acc += d;
    }
    break;
  case S_HISTOGRAM:
    for (uint64_t i = 0; i < n; i++)
      bad += buttress_histogram_record(s->obj, s->values[i % HIST_VALUES]) != 0;
    break;
  case S_CLOCK:
    for (uint64_t i = 0; i < n; i++)
      acc += buttress_monotonic_ns();
    break;
  case S_ATOMIC: /* measured with two threads only */
    break;
  }
  int64_t elapsed = now_ns() - t0;
  sink = acc;
  if (bad != 0) {
    fprintf(stderr, "bench_core: %" PRIu64 " operations failed\n", bad);
    exit(1);
  }
  return elapsed;
}

/* ns per operation: calibrate n to ~run_ns (this is also the warm-up), then
 * REPS timed runs. */
static stat3
bench_single(const single *s)
{
  uint64_t n = 1024;
  int64_t t;
  while ((t = run_single(s, n)) < run_ns / 5)
    n *= 2;
  n = (uint64_t)((double)n * (double)run_ns / (double)t) + 1;
  run_single(s, n);
  double v[REPS];
  for (int r = 0; r < REPS; r++)
    v[r] = (double)run_single(s, n) / (double)n;
  return summarize(s->name, v, REPS);
}

/* ---------------------------------------------------- two-thread loops */


typedef struct worker {
  pthread_t thread;
  int index;
  enum subject what;
  void *obj;
  pthread_barrier_t *start;
  atomic_int *stop;
  uint64_t ops, bad;
} worker;

static void *
worker_main(void *arg)
{
  worker *w = arg;
  if (ncpu >= 2) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu[w->index], &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set); /* best effort */
  }
  pthread_barrier_wait(w->start);
  uint64_t ops = 0, bad = 0;
  /* The stop flag is read once per 256 pairs: its cost stays out of the
   * figure, and the overshoot (< 256 pairs) is counted in ops. */
  while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
    if (w->what == S_BUTTRESS) {
      bad += buttress_pairs(w->obj, 256);
    } else if (w->what == S_MUTEX) {
      bad += mutex_pairs(w->obj, 256);
    } else { /* S_ATOMIC: the price of one contended cache line */
      _Atomic uint64_t *counter = w->obj;
      for (int i = 0; i < 256; i++)
        atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    }
    ops += 256;
  }
  w->ops = ops;
  w->bad = bad;
  return NULL;
}

/* Two threads on one breaker for run_ns: total pairs per second.  *total
 * accumulates the pairs completed, for the counter check; *fair is the
 * slower thread's share of the faster one's (1: even, near 0: one thread
 * did nearly all the work). */
static double
run_pair(enum subject what, void *obj, uint64_t *total, double *fair)
{
  pthread_barrier_t start;
  atomic_int stop = 0;
  worker w[2];
  pthread_barrier_init(&start, NULL, 3);
  for (int i = 0; i < 2; i++) {
    w[i] = (worker){.index = i, .what = what, .obj = obj, .start = &start,
                    .stop = &stop};
    if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "bench_core: pthread_create failed\n");
      exit(1);
    }
  }
  pthread_barrier_wait(&start);
  int64_t t0 = now_ns();
  sleep_ns(run_ns);
  atomic_store_explicit(&stop, 1, memory_order_relaxed);
  for (int i = 0; i < 2; i++)
    pthread_join(w[i].thread, NULL);
  int64_t elapsed = now_ns() - t0;
  pthread_barrier_destroy(&start);
  if (w[0].bad + w[1].bad != 0) {
    fprintf(stderr, "bench_core: %" PRIu64 " operations failed\n",
            w[0].bad + w[1].bad);
    exit(1);
  }
  *total += w[0].ops + w[1].ops;
  uint64_t lo = w[0].ops < w[1].ops ? w[0].ops : w[1].ops;
  uint64_t hi = w[0].ops < w[1].ops ? w[1].ops : w[0].ops;
  *fair = hi > 0 ? (double)lo / (double)hi : 0.0;
  return (double)(w[0].ops + w[1].ops) * 1e9 / (double)elapsed;
}

static stat3
bench_pair(const char *name, enum subject what, void *obj, uint64_t *total,
           stat3 *fairness)
{
  double v[REPS], f[REPS];
  run_pair(what, obj, total, &f[0]); /* warm-up */
  for (int r = 0; r < REPS; r++)
    v[r] = run_pair(what, obj, total, &f[r]);
  *fairness = summarize("  fairness", f, REPS);
  return summarize(name, v, REPS);
}

int
main(int argc, char **argv)
{
  if (parse_args(argc, argv) != 0)
    return 2;
  find_cpus();
  double load = -1; /* other work on the machine skews every figure */
  getloadavg(&load, 1);

  /* subjects */
  buttress_breaker *br = new_breaker();
  mutex_breaker *mb = new_mutex_breaker();

  buttress_backoff_config bcfg;
  buttress_backoff_config_init(&bcfg);
  buttress_backoff *bo = place(buttress_backoff_sizeof());
  int rc = buttress_backoff_init(bo, buttress_backoff_sizeof(), &bcfg, 42);
  if (rc != 0)
    die("buttress_backoff_init", rc);

  buttress_histogram *h = place(buttress_histogram_sizeof());
  if ((rc = buttress_histogram_init(h, buttress_histogram_sizeof())) != 0)
    die("buttress_histogram_init", rc);
  /* latencies spread log-uniformly over 1 us .. 1 s */
  static int64_t values[HIST_VALUES];
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (int i = 0; i < HIST_VALUES; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    values[i] = (int64_t)(1e3 * pow(1e6, (double)(x >> 11) / 9007199254740992.0));
  }

  stat3 b1 = bench_single(&(single){"breaker ns/op", S_BUTTRESS, br, NULL});
  stat3 m1 = bench_single(&(single){"mutex ns/op", S_MUTEX, mb, NULL});
  stat3 bo1 = bench_single(&(single){"backoff ns/op", S_BACKOFF, bo, NULL});
  stat3 h1 = bench_single(&(single){"histogram ns/op", S_HISTOGRAM, h, values});
  stat3 c1 = bench_single(&(single){"clock ns/op", S_CLOCK, NULL, NULL});

  /* Fresh breakers for the two-thread runs, so their counters can be
   * checked against the pairs the threads completed. */
  buttress_breaker *br2 = new_breaker();
  mutex_breaker *mb2 = new_mutex_breaker();
  uint64_t bt_total = 0, mx_total = 0;
  stat3 b2f, m2f, a2f;
  stat3 b2 = bench_pair("breaker 2T ops/s", S_BUTTRESS, br2, &bt_total, &b2f);
  stat3 m2 = bench_pair("mutex 2T ops/s", S_MUTEX, mb2, &mx_total, &m2f);
  _Atomic uint64_t *counter = place(sizeof *counter);
  uint64_t add_total = 0;
  stat3 a2 = bench_pair("atomic add 2T ops/s", S_ATOMIC, counter, &add_total, &a2f);
  int exact_adds = atomic_load_explicit(counter, memory_order_relaxed) == add_total;

  buttress_breaker_metrics met;
  if ((rc = buttress_breaker_metrics_get(br2, BUTTRESS_NO_CLOCK, &met)) != 0)
    die("buttress_breaker_metrics_get", rc);
  int exact = met.successes == bt_total && met.calls == bt_total &&
              mb2->successes == mx_total && exact_adds;

  double speed1 = m1.median / b1.median;
  double speed2 = b2.median / m2.median;

  printf("## C core\n\n");
  printf("buttress %s; %ld CPUs online%s; load average %.2f at the start; "
         "compiler %s; median of %d runs of %" PRId64 " ms after a warm-up.\n\n",
         BUTTRESS_VERSION, sysconf(_SC_NPROCESSORS_ONLN),
         ncpu >= 2 ? ", the two threads pinned to two of them" : "",
         load, __VERSION__, REPS, run_ns / 1000000);
  printf("| operation | buttress | mutex baseline | ratio | target |\n");
  printf("|---|---:|---:|---:|---|\n");
  printf("| breaker allow+record, 1 thread (ns/op) | %.1f | %.1f | %.2fx "
         "| <= 25 ns: %s |\n",
         b1.median, m1.median, speed1, verdict(b1.median <= 25.0));
  printf("| breaker allow+record, 2 threads on one breaker (M ops/s total) "
         "| %.2f | %.2f | %.2fx | >= 3x mutex: %s |\n",
         b2.median / 1e6, m2.median / 1e6, speed2, verdict(speed2 >= 3.0));
  printf("| backoff_next, full jitter (ns/op) | %.1f | | | |\n", bo1.median);
  printf("| histogram_record (ns/op) | %.1f | | | |\n", h1.median);
  printf("| monotonic clock read, for scale (ns/op) | %.1f | | | |\n",
         c1.median);
  printf("| one shared atomic counter, 2 threads adding, for scale "
         "(M adds/s total) | %.2f | | | |\n",
         a2.median / 1e6);
  printf("\nratio: 1 thread, mutex ns / buttress ns; 2 threads, buttress "
         "ops/s / mutex ops/s (above 1: buttress is faster).\n");
  printf("spread (max - min) / median: breaker 1 thread %.0f%% / mutex %.0f%%; "
         "2 threads %.0f%% / %.0f%%; backoff %.0f%%; histogram %.0f%%; "
         "clock %.0f%%; atomic add %.0f%%.\n",
         spread(b1), spread(m1), spread(b2), spread(m2), spread(bo1),
         spread(h1), spread(c1), spread(a2));
  printf("2 threads, slower thread's work / faster thread's (1 = even): "
         "buttress %.2f, mutex %.2f, atomic add %.2f.\n",
         b2f.median, m2f.median, a2f.median);
  if (a2f.median < 0.5)
    printf("WARNING: two threads adding to one counter did not share the work "
           "evenly: other processes were probably using a CPU, so the "
           "2-thread figures are not reliable; run again on an idle "
           "machine.\n");
  printf("counters after the 2-thread runs: buttress %" PRIu64
         " successes for %" PRIu64 " pairs, mutex %" PRIu64 " for %" PRIu64
         ": %s.\n",
         met.successes, bt_total, mb2->successes, mx_total,
         exact ? "exact" : "MISMATCH");

  mutex_breaker_destroy(mb);
  mutex_breaker_destroy(mb2);
  free(br);
  free(br2);
  free(mb);
  free(mb2);
  free(bo);
  free(h);
  free(counter);
  return exact ? 0 : 1;
}
