/*
 * bench_shared: a breaker in a shared-memory region next to the same
 * breaker in private memory, side by side in one run (issue 7).
 *
 *   make bench        (or: build/bench/bench_shared [-v] [run_ms]; -v prints
 *                      every sample on stderr)
 *
 * 1. allow+record on one thread, success path, no clock: a breaker on the
 *    heap, one in an anonymous region, one in a named region, the thread
 *    pinned to one CPU.  The three are measured in turn within each
 *    repetition (the order rotates), and the shared / private ratio is taken
 *    within each repetition, so drift of the machine's load, which moves
 *    the absolute figures by 2x here, largely cancels out of it.
 * 2. one breaker hammered by two threads (private memory) and by two
 *    processes (an anonymous region, fork()ed workers), each pinned to one
 *    of two CPUs: total pairs per second.  Processes share the breaker the
 *    way threads do, through the same cache lines, so they should scale
 *    alike.
 *
 * Every figure is the median of REPS runs after a warm-up (ratios: the
 * median of the per-repetition ratios).  The breakers' success counters are
 * checked against the pairs completed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "buttress.h"

#define REPS 15
#define REPS1 21 /* single-thread repetitions, each a third of run_ms */
#define REGION_SIZE (1 << 20)

static char region_name[64];

static void
die(const char *what, int rc)
{
  fprintf(stderr, "bench_shared: %s: %d (%s)\n", what, rc, buttress_strerror(rc));
  if (region_name[0] != '\0')
    buttress_region_unlink(region_name);
  exit(1);
}

/* ------------------------------------------------------------ subjects */

static buttress_breaker_config cfg; /* the defaults users get */

static buttress_breaker *
private_breaker(void)
{
  size_t size = buttress_breaker_sizeof(&cfg);
  size_t rounded = (size + 63) / 64 * 64;
  buttress_breaker *br = aligned_alloc(64, rounded);
  if (br == NULL) {
    fprintf(stderr, "bench_shared: out of memory\n");
    exit(1);
  }
  memset(br, 0, rounded);
  int rc = buttress_breaker_init(br, size, &cfg);
  if (rc != 0)
    die("buttress_breaker_init", rc);
  return br;
}

static buttress_breaker *
region_breaker(buttress_region *reg, const char *name)
{
  buttress_breaker *br;
  int rc = buttress_region_breaker(reg, name, &cfg, &br, NULL);
  if (rc != 0)
    die("buttress_region_breaker", rc);
  return br;
}

static uint64_t
successes(buttress_breaker *br)
{
  buttress_breaker_metrics m;
  int rc = buttress_breaker_metrics_get(br, BUTTRESS_NO_CLOCK, &m);
  if (rc != 0)
    die("buttress_breaker_metrics_get", rc);
  return m.successes;
}

/* ns per pair over n pairs */
static double
time_pairs(buttress_breaker *br, uint64_t n)
{
  int64_t t0 = now_ns();
  uint64_t bad = buttress_pairs(br, n);
  int64_t t = now_ns() - t0;
  if (bad != 0) {
    fprintf(stderr, "bench_shared: %" PRIu64 " pairs failed\n", bad);
    exit(1);
  }
  return (double)t / (double)n;
}

/* ------------------------------------------------ two threads, two procs
 * Each returns total pairs per second; *total accumulates the pairs, for
 * the counter check. */


static void
pin(int index)
{
  if (ncpu < 2)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu[index], &set);
  sched_setaffinity(0, sizeof set, &set); /* best effort; 0: this thread */
}

/* What the parent and the two workers share: in a MAP_SHARED mapping for
 * the processes, in plain memory for the threads. */
typedef struct control {
  _Atomic int ready, go, stop;
  char pad_[64];
  uint64_t ops[2], bad[2];
} control;

static void
hammer(control *c, buttress_breaker *br, int index)
{
  pin(index);
  atomic_fetch_add_explicit(&c->ready, 1, memory_order_acq_rel);
  while (!atomic_load_explicit(&c->go, memory_order_acquire))
    sched_yield();
  uint64_t ops = 0, bad = 0;
  /* The stop flag is read once per 256 pairs; the overshoot is counted. */
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    bad += buttress_pairs(br, 256);
    ops += 256;
  }
  c->ops[index] = ops;
  c->bad[index] = bad;
}

typedef struct thread_arg {
  control *c;
  buttress_breaker *br;
  int index;
} thread_arg;

static void *
thread_main(void *p)
{
  thread_arg *a = p;
  hammer(a->c, a->br, a->index);
  return NULL;
}

/* Once both workers are ready: start them, let them run for run_ns, tell
 * them to stop.  Returns the start time. */
static int64_t
start_run(control *c)
{
  while (atomic_load_explicit(&c->ready, memory_order_acquire) < 2)
    sched_yield();
  int64_t t0 = now_ns();
  atomic_store_explicit(&c->go, 1, memory_order_release);
  sleep_ns(run_ns);
  atomic_store_explicit(&c->stop, 1, memory_order_relaxed);
  return t0;
}

static double
run_threads(buttress_breaker *br, uint64_t *total)
{
  control c;
  memset(&c, 0, sizeof c);
  pthread_t th[2];
  thread_arg a[2];
  for (int i = 0; i < 2; i++) {
    a[i] = (thread_arg){&c, br, i};
    if (pthread_create(&th[i], NULL, thread_main, &a[i]) != 0) {
      fprintf(stderr, "bench_shared: pthread_create failed\n");
      exit(1);
    }
  }
  int64_t t0 = start_run(&c);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  int64_t elapsed = now_ns() - t0;
  if (c.bad[0] + c.bad[1] != 0)
    die("two threads: pairs failed", 0);
  *total += c.ops[0] + c.ops[1];
  return (double)(c.ops[0] + c.ops[1]) * 1e9 / (double)elapsed;
}

static double
run_processes(control *c, buttress_breaker *br, uint64_t *total)
{
  memset(c, 0, sizeof *c);
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    pid[i] = fork();
    if (pid[i] < 0) {
      perror("bench_shared: fork");
      exit(1);
    }
    if (pid[i] == 0) {
      hammer(c, br, i);
      _exit(0);
    }
  }
  int64_t t0 = start_run(c);
  int ok = 1;
  for (int i = 0; i < 2; i++) {
    int status;
    while (waitpid(pid[i], &status, 0) < 0 && errno == EINTR) {
    }
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  int64_t elapsed = now_ns() - t0;
  if (!ok || c->bad[0] + c->bad[1] != 0)
    die("two processes: pairs failed", 0);
  *total += c->ops[0] + c->ops[1];
  return (double)(c->ops[0] + c->ops[1]) * 1e9 / (double)elapsed;
}

int
main(int argc, char **argv)
{
  if (parse_args(argc, argv) != 0)
    return 2;
  find_cpus();
  double load = -1;
  getloadavg(&load, 1);
  buttress_breaker_config_init(&cfg);

  buttress_region *anon, *named;
  int rc = buttress_region_anonymous(REGION_SIZE, &anon);
  if (rc != 0)
    die("buttress_region_anonymous", rc);
  snprintf(region_name, sizeof region_name, "/buttress-bench-%ld", (long)getpid());
  rc = buttress_region_open(region_name, REGION_SIZE, BUTTRESS_REGION_CREATE, 0600, &named);
  if (rc != 0)
    die("buttress_region_open", rc);

  /* 1. one thread, the three placements in turn */
  buttress_breaker *subject[3] = {private_breaker(), region_breaker(anon, "one-thread"),
                                  region_breaker(named, "one-thread")};
  const char *label[3] = {"private ns/op", "anonymous region ns/op", "named region ns/op"};
  cpu_set_t all;
  int pinned = sched_getaffinity(0, sizeof all, &all) == 0;
  pin(0);
  uint64_t n = 1024;
  while (time_pairs(subject[0], n) * (double)n < (double)run_ns / 15)
    n *= 2;
  n = (uint64_t)((double)n * (double)run_ns / 3 / (time_pairs(subject[0], n) * (double)n)) + 1;
  for (int s = 0; s < 3; s++)
    time_pairs(subject[s], n); /* warm-up */
  double v[3][REPS1], ratio[2][REPS1];
  for (int r = 0; r < REPS1; r++) {
    for (int k = 0; k < 3; k++) {
      int s = (r + k) % 3;
      v[s][r] = time_pairs(subject[s], n);
    }
    ratio[0][r] = v[1][r] / v[0][r];
    ratio[1][r] = v[2][r] / v[0][r];
  }
  if (pinned)
    sched_setaffinity(0, sizeof all, &all);
  stat3 one[3];
  for (int s = 0; s < 3; s++)
    one[s] = summarize(label[s], v[s], REPS1);
  stat3 anon_r = summarize("anonymous / private", ratio[0], REPS1);
  stat3 named_r = summarize("named / private", ratio[1], REPS1);

  /* 2. two threads vs two processes, alternating */
  buttress_breaker *two_t = private_breaker();
  buttress_breaker *two_p = region_breaker(anon, "two-processes");
  control *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (c == MAP_FAILED) {
    perror("bench_shared: mmap");
    return 1;
  }
  uint64_t total_t = 0, total_p = 0;
  run_threads(two_t, &total_t); /* warm-up */
  run_processes(c, two_p, &total_p);
  double vt[REPS], vp[REPS], vr[REPS];
  for (int r = 0; r < REPS; r++) {
    if (r % 2) {
      vt[r] = run_threads(two_t, &total_t);
      vp[r] = run_processes(c, two_p, &total_p);
    } else {
      vp[r] = run_processes(c, two_p, &total_p);
      vt[r] = run_threads(two_t, &total_t);
    }
    vr[r] = vp[r] / vt[r];
  }
  stat3 st = summarize("2 threads ops/s", vt, REPS);
  stat3 sp = summarize("2 processes ops/s", vp, REPS);
  stat3 sr = summarize("processes / threads", vr, REPS);

  int exact = successes(two_t) == total_t && successes(two_p) == total_p;
  double anon_ratio = anon_r.median, named_ratio = named_r.median;
  double scale = sr.median;

  printf("## Shared region\n\n");
  printf("buttress %s; %ld CPUs online%s; load average %.2f at the start; "
         "compiler %s; 1 thread: median of %d runs of %" PRId64 " ms, 2 workers: "
         "median of %d runs of %" PRId64 " ms, after a warm-up.\n\n",
         BUTTRESS_VERSION, sysconf(_SC_NPROCESSORS_ONLN),
         ncpu >= 2 ? ", the two threads or processes pinned to two of them" : "", load,
         __VERSION__, REPS1, run_ns / 3000000, REPS, run_ns / 1000000);
  printf("| operation | private memory | shared region | shared / private | target |\n");
  printf("|---|---:|---:|---:|---|\n");
  printf("| breaker allow+record, 1 thread, anonymous region (ns/op) | %.1f | %.1f "
         "| %.2f | within 10%%: %s |\n",
         one[0].median, one[1].median, anon_ratio, verdict(anon_ratio <= 1.10));
  printf("| breaker allow+record, 1 thread, named region (ns/op) | %.1f | %.1f "
         "| %.2f | within 10%%: %s |\n",
         one[0].median, one[2].median, named_ratio, verdict(named_ratio <= 1.10));
  printf("| one breaker, 2 threads (private) vs 2 processes (region) (M ops/s total) "
         "| %.2f | %.2f | %.2f | alike (0.9 to 1.1): %s |\n",
         st.median / 1e6, sp.median / 1e6, scale, verdict(scale >= 0.9 && scale <= 1.1));
  printf("\nshared / private is the median of the ratios within each repetition "
         "(range: 1 thread %.2f to %.2f anonymous, %.2f to %.2f named; 2 workers "
         "%.2f to %.2f).\n",
         anon_r.min, anon_r.max, named_r.min, named_r.max, sr.min, sr.max);
  printf("spread (max - min) / median: 1 thread private %.0f%%, anonymous %.0f%%, "
         "named %.0f%%; 2 threads %.0f%%, 2 processes %.0f%%.\n",
         spread(one[0]), spread(one[1]), spread(one[2]), spread(st), spread(sp));
  printf("counters after the 2-worker runs: threads %" PRIu64 " successes for %" PRIu64
         " pairs, processes %" PRIu64 " for %" PRIu64 ": %s.\n",
         successes(two_t), total_t, successes(two_p), total_p,
         exact ? "exact" : "MISMATCH");

  free(subject[0]);
  free(two_t);
  munmap(c, sizeof *c);
  buttress_region_close(anon);
  buttress_region_close(named);
  buttress_region_unlink(region_name);
  return exact ? 0 : 1;
}
