/* What both C benchmarks need: the clock, a sleep, and the median of a set
 * of samples.  Header-only: each benchmark is one program. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buttress.h"

static int verbose;                                /* -v: every sample on stderr */
static int64_t run_ns = 100 * INT64_C(1000000);   /* one run's length */
static int ncpu;                                   /* CPUs to pin to: 0 to 2 */
static int cpu[2];

/* [-v] [run_ms]: 0, or 2 after printing the usage. */
static int
parse_args(int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    long ms = strtol(argv[i], NULL, 10);
    if (strcmp(argv[i], "-v") == 0) {
      verbose = 1;
    } else if (ms >= 1 && ms <= 10000) {
      run_ns = ms * INT64_C(1000000);
    } else {
      fprintf(stderr, "usage: %s [-v] [run_ms (1..10000, default 100)]\n", argv[0]);
      return 2;
    }
  }
  return 0;
}

/* The first two CPUs this process may run on, for pinning. */
static void
find_cpus(void)
{
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return;
  for (int c = 0; c < CPU_SETSIZE && ncpu < 2; c++)
    if (CPU_ISSET(c, &set))
      cpu[ncpu++] = c;
}

static const char *
verdict(int met)
{
  return met ? "met" : "MISSED";
}

static int64_t
now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
sleep_ns(int64_t ns)
{
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median, min and max of a set of samples. */
typedef struct stat3 {
  double median, min, max;
} stat3;

/* Sorts v (n samples) in place; with -v prints them first. */
static stat3
summarize(const char *name, double *v, int n)
{
  if (verbose) {
    fprintf(stderr, "%-26s", name);
    for (int r = 0; r < n; r++)
      fprintf(stderr, " %.4g", v[r]);
    fprintf(stderr, "\n");
  }
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return (stat3){v[n / 2], v[0], v[n - 1]};
}

/* (max - min) / median, in percent. */
static double
spread(stat3 s)
{
  return s.median > 0 ? 100.0 * (s.max - s.min) / s.median : 0.0;
}

/* n allow+record pairs on the success path, no clock: the measured loop of
 * both benchmarks.  Returns the number of pairs that did not return 0 from
 * both calls (must be none). */
static uint64_t
buttress_pairs(buttress_breaker *br, uint64_t n)
{
  uint64_t bad = 0;
  for (uint64_t i = 0; i < n; i++) {
    buttress_ticket t;
    int rc = buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t);
    rc |= buttress_breaker_record(br, &t, BUTTRESS_SUCCESS, BUTTRESS_NO_CLOCK,
                                  BUTTRESS_NO_CLOCK);
    bad += rc != 0;
  }
  return bad;
}

#endif
