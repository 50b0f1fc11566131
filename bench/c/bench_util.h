/* What both C benchmarks need: the clock, a sleep, and the median of a set
 * of samples.  Header-only: each benchmark is one program. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int verbose; /* -v: every sample on stderr */

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

#endif
