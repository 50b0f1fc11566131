/*
 * Shared helpers of the C unit tests (header-only: every tests/c file that is
 * not test_*.c would be linked into every test program).
 *
 * The reference PRNG and jitter formulas here are written from the contract
 * (buttress.h and the test brief), not from the implementation: golden
 * values come from them.
 */
#ifndef BUTTRESS_TEST_UTIL_H
#define BUTTRESS_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buttress.h"

#define MS(x) ((int64_t)(x) * BUTTRESS_NS_PER_MS)
#define SEC(x) ((int64_t)(x) * BUTTRESS_NS_PER_S)

/* cmocka's integer asserts are unsigned (LargestIntegralType): negative
 * values would print as huge numbers and ranges would compare wrongly. */
#define assert_i64_eq(a, b)                                                   \
  do {                                                                        \
    int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                             \
    if (a_ != b_)                                                             \
      fail_msg("%s == %lld, expected %lld (%s)", #a, (long long)a_,          \
               (long long)b_, #b);                                            \
  } while (0)

#define assert_i64_range(v, lo, hi)                                           \
  do {                                                                        \
    int64_t v_ = (int64_t)(v), lo_ = (int64_t)(lo), hi_ = (int64_t)(hi);      \
    if (v_ < lo_ || v_ > hi_)                                                 \
      fail_msg("%s == %lld, outside [%lld, %lld]", #v, (long long)v_,        \
               (long long)lo_, (long long)hi_);                               \
  } while (0)

/* Return codes print with their names, which makes failures readable. */
#define assert_rc(expr, expected)                                             \
  do {                                                                        \
    int rc_ = (expr), ex_ = (expected);                                       \
    if (rc_ != ex_)                                                           \
      fail_msg("%s returned %d (%s), expected %d (%s)", #expr, rc_,          \
               buttress_errname(rc_), ex_, buttress_errname(ex_));            \
  } while (0)

#define assert_rel_close(got, want, rel)                                      \
  do {                                                                        \
    double g_ = (double)(got), w_ = (double)(want), r_ = (rel);               \
    if (!(fabs(g_ - w_) <= r_ * fabs(w_)))                                    \
      fail_msg("%s == %.17g, expected %.17g within %g relative (%s)", #got,  \
               g_, w_, r_, #want);                                            \
  } while (0)

/* ------------------------------------------------- reference splitmix64 */

/* splitmix64 as documented: the state advances by the golden gamma, then
 * the standard mix of the new state.  Seeding sets state = seed. */
static inline uint64_t
ref_splitmix64_next(uint64_t *state)
{
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Uniform double in [0, 1) from the top 53 bits. */
static inline double
ref_unit(uint64_t x)
{
  return (double)(x >> 11) * 0x1.0p-53;
}

/* min(cap, base * multiplier**retry).  Exact for the integral cases the
 * golden tests use (base * 2**k well below 2**53). */
static inline int64_t
ref_ceiling(int64_t base, double multiplier, int64_t cap, uint32_t retry)
{
  if (base == 0)
    return 0;
  double exact = (double)base * pow(multiplier, (double)retry);
  if (!(exact < (double)cap))
    return cap;
  return (int64_t)exact;
}

static inline int64_t
ref_full(double u, int64_t capped)
{
  return (int64_t)(u * (double)capped);
}

static inline int64_t
ref_equal(double u, int64_t capped)
{
  int64_t half = capped / 2;
  return half + (int64_t)(u * (double)(capped - half));
}

/* prev is the previous delay; the first retry uses prev = base.  3*prev is
 * compared as a division so that it cannot overflow. */
static inline int64_t
ref_decorrelated(double u, int64_t base, int64_t cap, int64_t prev)
{
  int64_t hi = prev > cap / 3 ? cap : 3 * prev;
  if (hi > cap)
    hi = cap;
  return base + (int64_t)(u * (double)(hi - base));
}

/* ------------------------------------------------------------- memory */

/* State blocks: aligned to 64 as the header recommends.  The last blocks
 * stay referenced here so that a failed assertion, which longjmps past the
 * test's free(), is not also reported by LeakSanitizer as a leak. */
static inline void *
test_alloc(size_t size)
{
  static void *recent[256];
  static unsigned next;
  size_t rounded = (size + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  assert_non_null(p);
  memset(p, 0, rounded ? rounded : 64);
  unsigned slot = next++ % 256;
  recent[slot] = p;
  return recent[slot];
}

static inline buttress_breaker *
breaker_new(const buttress_breaker_config *cfg)
{
  size_t size = buttress_breaker_sizeof(cfg);
  assert_true(size > 0);
  void *mem = test_alloc(size);
  assert_rc(buttress_breaker_init(mem, size, cfg), 0);
  return mem;
}

static inline buttress_budget *
budget_new(const buttress_budget_config *cfg)
{
  size_t size = buttress_budget_sizeof();
  void *mem = test_alloc(size);
  assert_rc(buttress_budget_init(mem, size, cfg), 0);
  return mem;
}

static inline buttress_backoff *
backoff_new(const buttress_backoff_config *cfg, uint64_t seed)
{
  size_t size = buttress_backoff_sizeof();
  void *mem = test_alloc(size);
  assert_rc(buttress_backoff_init(mem, size, cfg, seed), 0);
  return mem;
}

static inline buttress_retry *
retry_new(const buttress_retry_config *cfg, uint64_t seed)
{
  size_t size = buttress_retry_sizeof();
  void *mem = test_alloc(size);
  assert_rc(buttress_retry_init(mem, size, cfg, seed), 0);
  return mem;
}

static inline buttress_histogram *
histogram_new(void)
{
  size_t size = buttress_histogram_sizeof();
  void *mem = test_alloc(size);
  assert_rc(buttress_histogram_init(mem, size), 0);
  return mem;
}

/* ------------------------------------------------------ breaker calls */

/* One admitted call that ends with `outcome` at `now` (duration 1 ms);
 * returns allow()'s code, or record()'s when the call was admitted. */
static inline int
breaker_call(buttress_breaker *br, int64_t now, int outcome)
{
  buttress_ticket t;
  int rc = buttress_breaker_allow(br, now, &t);
  if (rc != 0)
    return rc;
  return buttress_breaker_record(br, &t, outcome, MS(1), now);
}

static inline buttress_breaker_metrics
breaker_metrics(buttress_breaker *br, int64_t now)
{
  buttress_breaker_metrics m;
  memset(&m, 0, sizeof m);
  assert_rc(buttress_breaker_metrics_get(br, now, &m), 0);
  return m;
}

/* ------------------------------------------------------------ stress */

/* BUTTRESS_STRESS_SCALE (a positive number, default 1) multiplies the
 * amount of work of the stress tests: < 1 shrinks them for slow sanitizer
 * runs; the default meets the documented figures. */
static inline double
stress_scale(void)
{
  const char *s = getenv("BUTTRESS_STRESS_SCALE");
  if (s == NULL || *s == '\0')
    return 1.0;
  double v = strtod(s, NULL);
  return v > 0 && isfinite(v) ? v : 1.0;
}

static inline long
scaled(long n)
{
  long v = (long)((double)n * stress_scale());
  return v > 0 ? v : 1;
}

#endif /* BUTTRESS_TEST_UTIL_H */
