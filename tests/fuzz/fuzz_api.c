/*
 * libFuzzer harness for the public C API (issue 9, hardening).
 *
 * The input bytes are decoded into a breaker configuration, a retry
 * configuration, a budget configuration (each valid or not), then a sequence
 * of steps: allow / record with a small pool of tickets, monotonic time
 * steps (sometimes "no clock"), manual transitions, metrics reads, backoff
 * draws, retry begin/next/end, budget deposit/withdraw and histogram
 * operations.
 *
 * Single-threaded, the documented semantics are deterministic, so the
 * harness keeps a small model written from buttress.h and
 * docs/architecture.md (not from the implementation) and checks after every
 * step: states legal, counters add up and never decrease, tickets honoured
 * and staleness exactly as the generations say, at most half_open_calls
 * permits in flight, NEED_CLOCK changes nothing, transitions reported match
 * the state change, delays in bounds, retries never sleep into the deadline,
 * the budget never grants more than its formula, histogram quantiles within
 * 1/64 of the true order statistic.  A violation prints what broke and
 * aborts, so libFuzzer saves the input.
 *
 * FUZZ_TRACE=1 in the environment prints every step (for minimising a
 * finding into a unit test).
 */
#include "buttress.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS BUTTRESS_NS_PER_MS
#define SEC BUTTRESS_NS_PER_S
#define MAX_DUR BUTTRESS_MAX_DURATION_NS
#define NONE BUTTRESS_NONE
#define NO_CLOCK BUTTRESS_NO_CLOCK

/* The harness clock stays below 2**62 ns (146 years of uptime), so that
 * now + any valid duration does not saturate: at now = INT64_MAX a permit
 * or open period saturating to INT64_MAX would end at the instant it is
 * granted, which no real clock reaches. */
#define TIME_MAX (INT64_C(1) << 62)

#define MAX_STEPS 1024
#define POOL 8      /* tickets kept between steps */
#define CALLS 3     /* retry calls in progress */
#define MAX_EVENTS 4096
#define MAX_HVALS 2048

/* ------------------------------------------------------------ reporting */

static bool trace_on;
static int cur_step;
static const char *cur_op = "setup";

static void
trace(const char *fmt, ...)
{
  if (!trace_on) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "  [%d] ", cur_step);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void
violation(int line, const char *what, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "\nfuzz_api: INVARIANT VIOLATED at fuzz_api.c:%d, step %d (%s)\n  %s\n  ",
          line, cur_step, cur_op, what);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) violation(__LINE__, #cond, __VA_ARGS__);                    \
  } while (0)

#define CHECK_RC(got, want)                                                  \
  do {                                                                       \
    int g_ = (got), w_ = (want);                                             \
    CHECK(g_ == w_, "returned %d %s, expected %d %s", g_, buttress_errname(g_), \
          w_, buttress_errname(w_));                                         \
  } while (0)

/* ------------------------------------------------------- input decoding */

typedef struct src {
  const uint8_t *p;
  size_t n;
} src;

/* Past the end every read is 0: short inputs still decode to something. */
static uint8_t
u8(src *s)
{
  if (s->n == 0) return 0;
  s->n--;
  return *s->p++;
}

static uint16_t
u16(src *s)
{
  uint16_t lo = u8(s);
  return (uint16_t)(lo | (uint16_t)u8(s) << 8);
}

static uint32_t
u32(src *s)
{
  uint32_t lo = u16(s);
  return lo | (uint32_t)u16(s) << 16;
}

static uint64_t
u64(src *s)
{
  uint64_t lo = u32(s);
  return lo | (uint64_t)u32(s) << 32;
}

/* Durations: mostly meaningful magnitudes; `wild` adds invalid ones. */
static int64_t
dur(src *s, bool wild)
{
  uint8_t b = u8(s);
  switch (b % (wild ? 16 : 10)) {
  case 0: return 0;
  case 1: return 1;
  case 2: return u8(s);
  case 3: return (int64_t)u8(s) * 1000;
  case 4: return (int64_t)u8(s) * MS;
  case 5: return (int64_t)u16(s) * MS;
  case 6: return (int64_t)u8(s) * SEC;
  case 7: return MAX_DUR;
  case 8: return INT64_C(1) << (u8(s) % 63);
  case 9: return (int64_t)(u64(s) % ((uint64_t)MAX_DUR + 1));
  case 10: return -1;
  case 11: return -2;
  case 12: return MAX_DUR + 1;
  case 13: return INT64_MAX;
  case 14: return INT64_MIN;
  default: return (int64_t)u64(s);
  }
}

static int64_t
pos_dur(src *s, bool wild)
{
  int64_t d = dur(s, wild);
  return (!wild && d == 0) ? 1 : d;
}

static int64_t
opt_dur(src *s, bool wild)
{
  return (u8(s) & 3) == 0 ? NONE : dur(s, wild);
}

/* A count: usually small (lo..typ), sometimes the hard limit, in wild
 * configs just outside it. */
static uint32_t
count_field(src *s, bool wild, uint32_t lo, uint32_t typ, uint32_t hard)
{
  uint8_t b = u8(s);
  if (b < 240) return lo + b % (typ - lo + 1);
  uint8_t sel = (uint8_t)(b - 240);
  if (!wild) return (sel & 1) ? hard : lo + u32(s) % (hard - lo + 1);
  switch (sel % 4) {
  case 0: return lo - 1;
  case 1: return hard + 1;
  case 2: return UINT32_MAX;
  default: return u32(s);
  }
}

static double
rate(src *s, bool wild)
{
  uint8_t b = u8(s);
  switch (b % (wild ? 12 : 8)) {
  case 0: return 0.0;
  case 1: return 0.1;
  case 2: return 0.5;
  case 3: return 1.0;
  case 4: return 0.25;
  case 5: return (double)u16(s) / 65535.0;
  case 6: return 1.0 / 3.0;
  case 7: return 0.75;
  case 8: return NAN;
  case 9: return -0.1;
  case 10: return nextafter(1.0, 2.0);
  default: return INFINITY;
  }
}

static double
ratio_field(src *s, bool wild)
{
  uint8_t b = u8(s);
  switch (b % (wild ? 11 : 8)) {
  case 0: return 0.0;
  case 1: return 0.1;
  case 2: return 0.2;
  case 3: return 1.0;
  case 4: return (double)u16(s) / 1000.0;
  case 5: return 2.5;
  case 6: return 1e300;
  case 7: return -0.0;
  case 8: return NAN;
  case 9: return -0.5;
  default: return INFINITY;
  }
}

static double
multiplier(src *s, bool wild)
{
  uint8_t b = u8(s);
  switch (b % (wild ? 12 : 8)) {
  case 0: return 1.0;
  case 1: return 1.5;
  case 2: return 2.0;
  case 3: return 3.0;
  case 4: return 10.0;
  case 5: return 1.0 + (double)u16(s) / 1000.0;
  case 6: return 1e300;
  case 7: return nextafter(1.0, 2.0);
  case 8: return 0.5;
  case 9: return NAN;
  case 10: return INFINITY;
  default: return -2.0;
  }
}

static void
gen_backoff_cfg(src *s, bool wild, buttress_backoff_config *c)
{
  memset(c, 0, sizeof *c);
  c->base_ns = dur(s, wild);
  c->cap_ns = dur(s, wild);
  if (!wild && c->cap_ns < c->base_ns) {
    int64_t t = c->cap_ns;
    c->cap_ns = c->base_ns;
    c->base_ns = t;
  }
  c->multiplier = multiplier(s, wild);
  uint8_t j = u8(s);
  c->jitter = j % 4;
  if (wild && j >= 248) {
    static const int32_t bad[] = {-1, 4, INT32_MAX, INT32_MIN};
    c->jitter = bad[j % 4];
  }
}

static void
gen_breaker_cfg(src *s, buttress_breaker_config *c)
{
  bool wild = (u8(s) & 7) == 7;
  memset(c, 0, sizeof *c);
  c->failure_threshold = count_field(s, wild, 0, 8, BUTTRESS_MAX_THRESHOLD);
  c->half_open_calls = count_field(s, wild, 1, 4, BUTTRESS_MAX_HALF_OPEN_CALLS);
  c->success_threshold = count_field(s, wild, 1, 4, BUTTRESS_MAX_THRESHOLD);
  c->window_size = count_field(s, wild, 1, 16, BUTTRESS_MAX_WINDOW_CALLS);
  c->min_calls = count_field(s, wild, 1, 12, UINT32_MAX - 1);
  uint8_t wt = u8(s);
  c->window_type = wt & 1;
  if (wild && wt >= 250) c->window_type = (wt & 1) ? 2 : -1;
  c->window_ns = pos_dur(s, wild);
  c->reset_timeout_ns = pos_dur(s, wild);
  c->trial_timeout_ns = (u8(s) & 3) == 0 ? NONE : pos_dur(s, wild);
  c->slow_call_ns = opt_dur(s, wild);
  c->failure_rate = rate(s, wild);
  c->slow_rate = rate(s, wild);
  if (!wild && c->slow_call_ns < 0) c->slow_rate = 0.0;
  uint8_t rb = u8(s);
  c->use_reset_backoff = rb & 1;
  if (wild && rb >= 250) c->use_reset_backoff = (rb & 1) ? 2 : -1;
  gen_backoff_cfg(s, wild, &c->reset_backoff);
}

static void
gen_retry_cfg(src *s, buttress_retry_config *c)
{
  bool wild = (u8(s) & 7) == 7;
  memset(c, 0, sizeof *c);
  c->attempts = count_field(s, wild, 1, 6, UINT32_MAX - 1);
  c->deadline_ns = opt_dur(s, wild);
  gen_backoff_cfg(s, wild, &c->backoff);
}

static void
gen_budget_cfg(src *s, buttress_budget_config *c)
{
  bool wild = (u8(s) & 7) == 7;
  memset(c, 0, sizeof *c);
  c->ratio = ratio_field(s, wild);
  c->min_per_second = ratio_field(s, wild);
  c->window_ns = pos_dur(s, wild);
}

/* ------------------------------------- validity, written from the header */

static bool
dur_ok(int64_t v, bool none_ok)
{
  return (none_ok && v == NONE) || (v >= 0 && v <= MAX_DUR);
}

static bool
backoff_cfg_ok(const buttress_backoff_config *c)
{
  return dur_ok(c->base_ns, false) && dur_ok(c->cap_ns, false) && c->cap_ns >= c->base_ns &&
         c->multiplier >= 1.0 && isfinite(c->multiplier) && c->jitter >= 0 && c->jitter <= 3;
}

static bool
rate_ok(double r)
{
  return r == 0.0 || (r > 0.0 && r <= 1.0);
}

static bool
breaker_cfg_ok(const buttress_breaker_config *c)
{
  return c->failure_threshold <= BUTTRESS_MAX_THRESHOLD && c->success_threshold >= 1 &&
         c->success_threshold <= BUTTRESS_MAX_THRESHOLD && c->half_open_calls >= 1 &&
         c->half_open_calls <= BUTTRESS_MAX_HALF_OPEN_CALLS && c->window_size >= 1 &&
         c->window_size <= BUTTRESS_MAX_WINDOW_CALLS && c->min_calls >= 1 &&
         (c->window_type == BUTTRESS_WINDOW_COUNT || c->window_type == BUTTRESS_WINDOW_TIME) &&
         c->window_ns >= BUTTRESS_MIN_WINDOW_NS && c->window_ns <= MAX_DUR && c->reset_timeout_ns > 0 &&
         c->reset_timeout_ns <= MAX_DUR &&
         (c->trial_timeout_ns == NONE ||
          (c->trial_timeout_ns > 0 && c->trial_timeout_ns <= MAX_DUR)) &&
         dur_ok(c->slow_call_ns, true) && rate_ok(c->failure_rate) && rate_ok(c->slow_rate) &&
         !(c->slow_rate > 0.0 && c->slow_call_ns < 0) &&
         (c->use_reset_backoff == 0 || c->use_reset_backoff == 1) &&
         (!c->use_reset_backoff || backoff_cfg_ok(&c->reset_backoff));
}

static bool
retry_cfg_ok(const buttress_retry_config *c)
{
  return c->attempts >= 1 && dur_ok(c->deadline_ns, true) && backoff_cfg_ok(&c->backoff);
}

static bool
budget_cfg_ok(const buttress_budget_config *c)
{
  return c->ratio >= 0.0 && isfinite(c->ratio) && c->min_per_second >= 0.0 &&
         isfinite(c->min_per_second) && c->window_ns >= BUTTRESS_MIN_WINDOW_NS && c->window_ns <= MAX_DUR;
}

/* ------------------------------------------------------ time arithmetic */

static int64_t
add_sat(int64_t a, int64_t b)
{
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  return a + b;
}

static int64_t
mul_sat(int64_t a, int64_t k)
{
  return (k != 0 && a > INT64_MAX / k) ? INT64_MAX : a * k;
}

/* "Open periods and trial permits end on whole milliseconds, rounded up:
 * never early, at most 1 ms late": the first whole millisecond at or after t. */
static int64_t
ms_ceil_time(int64_t t)
{
  if (t <= 0) return 0;
  int64_t ms = (t - 1) / MS + 1;
  return ms > INT64_MAX / MS ? INT64_MAX : ms * MS;
}

/* Time windows: BUTTRESS_TIME_BUCKETS buckets of window/10 each; the window
 * at `now` is the buckets of the last 10 epochs, current one included. */
static int64_t
bucket_of(int64_t window_ns)
{
  int64_t b = window_ns / BUTTRESS_TIME_BUCKETS;
  return b > 0 ? b : 1;
}

static bool
in_window(int64_t t, int64_t now, int64_t bucket)
{
  return t / bucket >= now / bucket - (BUTTRESS_TIME_BUCKETS - 1);
}

/* ------------------------------------------------------------- the model */

typedef struct event {
  int64_t t;
  uint8_t failed, slow;
} event;

typedef struct permit_rec {
  uint64_t epoch;
  int64_t expiry;
  int32_t slot;
} permit_rec;

typedef struct pooled {
  bool used;
  buttress_ticket t;
  uint64_t epoch;     /* harness generation it was admitted under */
  int state;          /* state it was admitted under */
  bool has_permit;    /* holds a half-open permit not yet given back */
  permit_rec permit;
} pooled;

typedef struct bmodel {
  buttress_breaker_config cfg;
  int64_t trial_ns;
  int64_t bucket_ns;
  bool timed, rate_rules;
  int state;
  uint64_t epoch; /* counts every generation change the harness caused */
  uint32_t streak, wins, trips;
  int64_t open_until;
  uint64_t successes, failures, excluded, cancelled, stale, rejected, slow;
  uint64_t transitions[5][5];
  int64_t last_transition[5][5];
  uint64_t lat_count;
  int64_t lat_max;
  /* count window: the last window_size outcomes since the breaker closed */
  uint8_t *ring;
  uint64_t ring_n;
  uint64_t ring_pos;
  uint64_t ring_fail, ring_slow;
  /* time window */
  event ev[MAX_EVENTS];
  int nev;
  bool ev_lost;
  /* permits whose ticket was dropped from the pool unrecorded */
  permit_rec orphan[2 * BUTTRESS_MAX_HALF_OPEN_CALLS + POOL];
  int norphan;
} bmodel;

typedef struct rmodel {
  uint64_t calls, attempts, retries, successes, failures, g_attempts, g_deadline, g_budget;
} rmodel;

typedef struct bgmodel {
  buttress_budget_config cfg;
  double reserve;
  int64_t bucket_ns;
  int64_t dep_t[MAX_EVENTS];
  int ndep;
  int64_t wd_t[MAX_EVENTS];
  int nwd;
  bool lost;
  uint64_t deposits, withdrawals, rejections;
} bgmodel;

typedef struct hmodel {
  int64_t v[MAX_HVALS]; /* sorted */
  int n;
  bool lost;
  uint64_t count;
  int64_t max;
  unsigned __int128 sum;
} hmodel;

typedef struct rcall {
  bool active;  /* begun, not given up, not ended */
  bool filled;  /* begin() returned 0 or DEADLINE: the call struct is set */
  bool budgeted;
  buttress_retry_call c;
} rcall;

typedef struct world {
  int64_t now;
  int64_t prev_now; /* the time before the last time step */
  bool stale_step;  /* this step's breaker call uses prev_now */
  buttress_breaker *br;
  size_t br_size;
  bmodel m;
  buttress_breaker_metrics prev;
  pooled pool[POOL];

  buttress_retry_config rcfg;
  buttress_retry *rt;
  rmodel rm;
  rcall calls[CALLS];

  buttress_budget *bg;
  bgmodel bm;

  buttress_backoff *bo, *bo_twin;
  int64_t bo_prev;

  buttress_histogram *h[2];
  hmodel hm[2];
} world;

static world W; /* large: static, reset for every input */
static uint8_t ring_store[BUTTRESS_MAX_WINDOW_CALLS];
static unsigned char snap[1 << 17];

/* ---------------------------------------------------- memory untouched */

enum { GUARD = 0xA5 };

static void *
guarded(size_t n)
{
  unsigned char *p = malloc(n ? n : 1);
  if (p == NULL) abort();
  memset(p, GUARD, n);
  return p;
}

static bool
untouched(const void *p, size_t n)
{
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != GUARD) return false;
  return true;
}

/* ------------------------------------------------------------ setup */

static void
default_breaker_cfg(buttress_breaker_config *c)
{
  buttress_breaker_config_init(c);
  c->failure_threshold = 3;
  c->half_open_calls = 2;
  c->reset_timeout_ns = 10 * MS;
}

/* Invalid configurations: EINVAL from check, 0 from sizeof, EINVAL from
 * init, and the memory offered to init left as it was. */
static void
check_bad_breaker_cfg(const buttress_breaker_config *c)
{
  CHECK_RC(buttress_breaker_config_check(c), BUTTRESS_EINVAL);
  CHECK(buttress_breaker_sizeof(c) == 0, "sizeof of a bad config is %zu",
        buttress_breaker_sizeof(c));
  size_t n = 1 << 12;
  void *mem = guarded(n);
  CHECK_RC(buttress_breaker_init(mem, n, c), BUTTRESS_EINVAL);
  CHECK(untouched(mem, n), "init of a bad breaker config wrote to memory");
  free(mem);
}

static void
setup_breaker(src *s)
{
  buttress_breaker_config c;
  gen_breaker_cfg(s, &c);
  bool ok = breaker_cfg_ok(&c);
  trace("breaker cfg %s: fthr=%u K=%u sthr=%u win=%u min=%u type=%d win_ns=%lld reset=%lld "
        "trial=%lld slow=%lld frate=%g srate=%g rb=%d [%lld %lld %g %d]",
        ok ? "ok" : "BAD", c.failure_threshold, c.half_open_calls, c.success_threshold,
        c.window_size, c.min_calls, c.window_type, (long long)c.window_ns,
        (long long)c.reset_timeout_ns, (long long)c.trial_timeout_ns, (long long)c.slow_call_ns,
        c.failure_rate, c.slow_rate, c.use_reset_backoff, (long long)c.reset_backoff.base_ns,
        (long long)c.reset_backoff.cap_ns, c.reset_backoff.multiplier, c.reset_backoff.jitter);
  CHECK_RC(buttress_breaker_config_check(&c), ok ? 0 : BUTTRESS_EINVAL);
  if (!ok) {
    check_bad_breaker_cfg(&c);
    default_breaker_cfg(&c);
  }
  size_t need = buttress_breaker_sizeof(&c);
  CHECK(need > 0 && need % 8 == 0, "sizeof %zu", need);
  CHECK(need <= sizeof snap, "sizeof %zu larger than expected", need);
  /* too small by one byte, and misaligned: EINVAL, untouched */
  void *mem = guarded(need + 8);
  CHECK_RC(buttress_breaker_init(mem, need - 1, &c), BUTTRESS_EINVAL);
  CHECK_RC(buttress_breaker_init((char *)mem + 4, need, &c), BUTTRESS_EINVAL);
  CHECK(untouched(mem, need + 8), "rejected breaker init wrote to memory");
  free(mem);
  /* exactly `need` bytes, so ASan sees any write past the end */
  W.br = malloc(need);
  if (W.br == NULL) abort();
  W.br_size = need;
  CHECK_RC(buttress_breaker_init(W.br, need, &c), 0);
  buttress_breaker_config back;
  CHECK_RC(buttress_breaker_get_config(W.br, &back), 0);
  CHECK(memcmp(&back, &c, sizeof c) == 0, "get_config differs from the config given");

  bmodel *m = &W.m;
  m->cfg = c;
  m->trial_ns = c.trial_timeout_ns == NONE ? c.reset_timeout_ns : c.trial_timeout_ns;
  m->bucket_ns = bucket_of(c.window_ns);
  m->timed = c.slow_call_ns >= 0 || c.window_type == BUTTRESS_WINDOW_TIME;
  m->rate_rules = c.failure_rate > 0.0 || c.slow_rate > 0.0;
  m->state = BUTTRESS_STATE_CLOSED;
  m->open_until = NONE;
  for (int f = 0; f < 5; f++)
    for (int t = 0; t < 5; t++) m->last_transition[f][t] = NONE;
  m->ring = ring_store;
}

static void
setup_retry_budget(src *s)
{
  buttress_retry_config rc;
  gen_retry_cfg(s, &rc);
  bool ok = retry_cfg_ok(&rc);
  trace("retry cfg %s: attempts=%u deadline=%lld backoff [%lld %lld %g %d]", ok ? "ok" : "BAD",
        rc.attempts, (long long)rc.deadline_ns, (long long)rc.backoff.base_ns,
        (long long)rc.backoff.cap_ns, rc.backoff.multiplier, rc.backoff.jitter);
  CHECK_RC(buttress_retry_config_check(&rc), ok ? 0 : BUTTRESS_EINVAL);
  CHECK_RC(buttress_backoff_config_check(&rc.backoff),
           backoff_cfg_ok(&rc.backoff) ? 0 : BUTTRESS_EINVAL);
  size_t rn = buttress_retry_sizeof(), bn = buttress_backoff_sizeof();
  uint64_t seed = u64(s);
  if (!ok) {
    void *mem = guarded(rn);
    CHECK_RC(buttress_retry_init(mem, rn, &rc, seed), BUTTRESS_EINVAL);
    CHECK(untouched(mem, rn), "init of a bad retry config wrote to memory");
    free(mem);
    buttress_retry_config_init(&rc);
    rc.backoff.base_ns = MS;
    rc.backoff.cap_ns = 50 * MS;
  }
  if (!backoff_cfg_ok(&rc.backoff)) {
    void *mem = guarded(bn);
    CHECK_RC(buttress_backoff_init(mem, bn, &rc.backoff, seed), BUTTRESS_EINVAL);
    CHECK(untouched(mem, bn), "init of a bad backoff config wrote to memory");
    free(mem);
  }
  W.rcfg = rc;
  void *mem = guarded(rn);
  CHECK_RC(buttress_retry_init(mem, rn - 1, &rc, seed), BUTTRESS_EINVAL);
  CHECK(untouched(mem, rn), "rejected retry init wrote to memory");
  CHECK_RC(buttress_retry_init(mem, rn, &rc, seed), 0);
  W.rt = mem;
  buttress_retry_config back;
  CHECK_RC(buttress_retry_get_config(W.rt, &back), 0);
  CHECK(memcmp(&back, &rc, sizeof rc) == 0, "retry get_config differs");

  /* two backoffs with one seed: the same draws must come out of both */
  W.bo = malloc(bn);
  W.bo_twin = malloc(bn);
  if (!W.bo || !W.bo_twin) abort();
  CHECK_RC(buttress_backoff_init(W.bo, bn, &rc.backoff, seed), 0);
  CHECK_RC(buttress_backoff_init(W.bo_twin, bn, &rc.backoff, seed), 0);
  W.bo_prev = NONE;
  CHECK_RC(buttress_backoff_init(W.bo_twin, bn - 1, &rc.backoff, seed), BUTTRESS_EINVAL);
  buttress_backoff_config bback;
  CHECK_RC(buttress_backoff_get_config(W.bo, &bback), 0);
  CHECK(memcmp(&bback, &rc.backoff, sizeof bback) == 0, "backoff get_config differs");

  buttress_budget_config bc;
  gen_budget_cfg(s, &bc);
  ok = budget_cfg_ok(&bc);
  trace("budget cfg %s: ratio=%g min/s=%g window=%lld", ok ? "ok" : "BAD", bc.ratio,
        bc.min_per_second, (long long)bc.window_ns);
  CHECK_RC(buttress_budget_config_check(&bc), ok ? 0 : BUTTRESS_EINVAL);
  size_t gn = buttress_budget_sizeof();
  if (!ok) {
    void *g = guarded(gn);
    CHECK_RC(buttress_budget_init(g, gn, &bc), BUTTRESS_EINVAL);
    CHECK(untouched(g, gn), "init of a bad budget config wrote to memory");
    free(g);
    buttress_budget_config_init(&bc);
  }
  void *g = guarded(gn);
  CHECK_RC(buttress_budget_init(g, gn - 1, &bc), BUTTRESS_EINVAL);
  CHECK(untouched(g, gn), "rejected budget init wrote to memory");
  CHECK_RC(buttress_budget_init(g, gn, &bc), 0);
  W.bg = g;
  W.bm.cfg = bc;
  W.bm.reserve = bc.min_per_second * ((double)bc.window_ns / (double)SEC);
  W.bm.bucket_ns = bucket_of(bc.window_ns);

  size_t hn = buttress_histogram_sizeof();
  for (int i = 0; i < 2; i++) {
    void *hm = guarded(hn);
    CHECK_RC(buttress_histogram_init(hm, hn - 1), BUTTRESS_EINVAL);
    CHECK(untouched(hm, hn), "rejected histogram init wrote to memory");
    CHECK_RC(buttress_histogram_init(hm, hn), 0);
    W.h[i] = hm;
  }
}

static void
setup_time(src *s)
{
  uint8_t b = u8(s);
  switch (b % 8) {
  case 0: W.now = 0; break;
  case 1: W.now = u8(s); break;
  case 2: W.now = u32(s); break;
  case 3: W.now = (int64_t)(u64(s) & ((UINT64_C(1) << 48) - 1)); break;
  case 4: W.now = INT64_C(1) << (u8(s) % 63); break;
  case 5: W.now = TIME_MAX - (int64_t)u32(s); break;
  case 6: W.now = (int64_t)(u64(s) >> 1); break;
  default: W.now = (int64_t)u16(s) * SEC; break;
  }
  if (W.now > TIME_MAX) W.now = TIME_MAX;
}

static void
teardown(void)
{
  free(W.br);
  free(W.rt);
  free(W.bg);
  free(W.bo);
  free(W.bo_twin);
  free(W.h[0]);
  free(W.h[1]);
}

/* --------------------------------------------------- breaker model: windows */

static void
window_clear(bmodel *m)
{
  m->ring_n = m->ring_pos = m->ring_fail = m->ring_slow = 0;
  m->nev = 0;
  m->ev_lost = false;
}

static void
time_window_prune(bmodel *m, int64_t now)
{
  int k = 0;
  for (int i = 0; i < m->nev; i++)
    if (in_window(m->ev[i].t, now, m->bucket_ns)) m->ev[k++] = m->ev[i];
  m->nev = k;
}

static void
window_counts(bmodel *m, int64_t now, uint64_t *calls, uint64_t *fails, uint64_t *slows)
{
  if (m->cfg.window_type == BUTTRESS_WINDOW_COUNT) {
    *calls = m->ring_n < m->cfg.window_size ? m->ring_n : m->cfg.window_size;
    *fails = m->ring_fail;
    *slows = m->ring_slow;
    return;
  }
  *calls = *fails = *slows = 0;
  for (int i = 0; i < m->nev; i++) {
    if (!in_window(m->ev[i].t, now, m->bucket_ns)) continue;
    (*calls)++;
    *fails += m->ev[i].failed;
    *slows += m->ev[i].slow;
  }
}

static void
window_add(bmodel *m, bool failed, bool slow, int64_t now)
{
  if (m->cfg.window_type == BUTTRESS_WINDOW_COUNT) {
    uint32_t n = m->cfg.window_size;
    uint64_t i = m->ring_pos++ % n;
    if (m->ring_n >= n) {
      m->ring_fail -= m->ring[i] & 1;
      m->ring_slow -= (m->ring[i] >> 1) & 1;
    }
    m->ring[i] = (uint8_t)(failed | slow << 1);
    m->ring_fail += failed;
    m->ring_slow += slow;
    m->ring_n++;
    return;
  }
  time_window_prune(m, now);
  if (m->nev == MAX_EVENTS) {
    m->ev_lost = true;
    return;
  }
  m->ev[m->nev++] = (event){now, failed, slow};
}

/* Does a rate rule say "open"?  -1 when the two readings of ">= rate"
 * (failures >= rate * calls, failures / calls >= rate) disagree in floating
 * point: either answer is then accepted. */
static int
rate_trips(bmodel *m, int64_t now)
{
  if (m->ev_lost) return -1;
  uint64_t calls, fails, slows;
  window_counts(m, now, &calls, &fails, &slows);
  if (calls == 0 || calls < m->cfg.min_calls) return 0;
  int a = 0, b = 0;
  if (m->cfg.failure_rate > 0.0) {
    a |= (double)fails >= m->cfg.failure_rate * (double)calls;
    b |= (double)fails / (double)calls >= m->cfg.failure_rate;
  }
  if (m->cfg.slow_rate > 0.0) {
    a |= (double)slows >= m->cfg.slow_rate * (double)calls;
    b |= (double)slows / (double)calls >= m->cfg.slow_rate;
  }
  return a == b ? a : -1;
}

/* --------------------------------------------------- breaker model: permits */

static bool
permit_held(const bmodel *m, const permit_rec *p, int64_t now)
{
  return p->epoch == m->epoch && p->expiry > now;
}

/* Permits held now in the current half-open generation. */
static int
held_permits(const bmodel *m, int64_t now, int64_t *earliest, bool *slots_distinct)
{
  int n = 0;
  bool seen[BUTTRESS_MAX_HALF_OPEN_CALLS] = {0};
  *slots_distinct = true;
  *earliest = INT64_MAX;
  for (int i = 0; i < POOL + m->norphan; i++) {
    const permit_rec *p;
    if (i < POOL) {
      if (!W.pool[i].used || !W.pool[i].has_permit) continue;
      p = &W.pool[i].permit;
    } else {
      p = &m->orphan[i - POOL];
    }
    if (!permit_held(m, p, now)) continue;
    n++;
    if (p->expiry < *earliest) *earliest = p->expiry;
    if (p->slot >= 0 && p->slot < BUTTRESS_MAX_HALF_OPEN_CALLS) {
      if (seen[p->slot]) *slots_distinct = false;
      seen[p->slot] = true;
    }
  }
  return n;
}

static void
orphans_prune(bmodel *m, int64_t now)
{
  int k = 0;
  for (int i = 0; i < m->norphan; i++)
    if (permit_held(m, &m->orphan[i], now)) m->orphan[k++] = m->orphan[i];
  m->norphan = k;
}

/* A claim of slot `slot` at `now` must not take a permit still held then;
 * whatever permit the slot held is gone from the core (its late outcome will
 * still be counted, but it no longer keeps the slot). */
static void
take_slot(bmodel *m, int32_t slot, int64_t now)
{
  for (int i = 0; i < POOL; i++) {
    pooled *p = &W.pool[i];
    if (!p->used || !p->has_permit || p->permit.slot != slot) continue;
    CHECK(!permit_held(m, &p->permit, now), "slot %d handed out while its permit is held", slot);
    p->permit.expiry = INT64_MIN;
  }
  int k = 0;
  for (int i = 0; i < m->norphan; i++) {
    if (m->orphan[i].slot != slot) {
      m->orphan[k++] = m->orphan[i];
      continue;
    }
    CHECK(!permit_held(m, &m->orphan[i], now), "slot %d handed out while its permit is held",
          slot);
  }
  m->norphan = k;
}

static void
check_permits(bmodel *m, int64_t now)
{
  if (now < 0) return;
  int64_t earliest;
  bool distinct;
  int held = held_permits(m, now, &earliest, &distinct);
  CHECK(held <= (int)m->cfg.half_open_calls, "%d half-open permits in flight, limit %u", held,
        m->cfg.half_open_calls);
  CHECK(distinct, "two permits in flight hold the same slot");
}

/* ------------------------------------------------ breaker model: transitions */

static void
model_transition(bmodel *m, int from, int to, int64_t now)
{
  m->transitions[from][to]++;
  m->last_transition[from][to] = now;
}

static int64_t
ceiling_of(const buttress_backoff_config *c, uint32_t n)
{
  int64_t v = -1;
  CHECK_RC(buttress_backoff_ceiling(c, n, &v), 0);
  return v;
}

/* Bounds of the n-th jittered delay, from the documented jitter formulas. */
static void
jitter_bounds(const buttress_backoff_config *c, uint32_t n, int64_t prev, int64_t *lo,
              int64_t *hi)
{
  int64_t ceil = ceiling_of(c, n);
  switch (c->jitter) {
  case BUTTRESS_JITTER_NONE: *lo = *hi = ceil; break;
  case BUTTRESS_JITTER_FULL: *lo = 0; *hi = ceil; break;
  case BUTTRESS_JITTER_EQUAL: *lo = ceil / 2; *hi = ceil; break;
  default: {
    /* uniform in [base, min(cap, 3 * prev)], prev at least base */
    int64_t p = prev < c->base_ns ? c->base_ns : prev;
    int64_t up = p > c->cap_ns / 3 ? c->cap_ns : 3 * p;
    if (up < c->base_ns) up = c->base_ns;
    *lo = c->base_ns;
    *hi = up;
  }
  }
}

/* The breaker has just opened at `now` (this harness's call did it). */
static void
model_opened(bmodel *m, int from, int64_t now)
{
  CHECK(now >= 0, "the breaker opened (%s -> open) in a call given no clock (now=%lld): its "
        "open period is measured from a time that was never read",
        buttress_state_name(from), (long long)now);
  uint32_t trip = m->trips++;
  m->epoch++;
  m->state = BUTTRESS_STATE_OPEN;
  m->streak = m->wins = 0;
  model_transition(m, from, BUTTRESS_STATE_OPEN, now);
  buttress_breaker_metrics x;
  CHECK_RC(buttress_breaker_metrics_get(W.br, now, &x), 0);
  int64_t lo, hi;
  if (m->cfg.use_reset_backoff) {
    jitter_bounds(&m->cfg.reset_backoff, trip, NONE, &lo, &hi);
    if (lo < 1) lo = 1;
    if (hi < 1) hi = 1;
  } else {
    lo = hi = m->cfg.reset_timeout_ns;
  }
  lo = ms_ceil_time(add_sat(now, lo));
  hi = ms_ceil_time(add_sat(now, hi));
  CHECK(x.open_until_ns >= lo && x.open_until_ns <= hi,
        "opened at %lld: open_until %lld outside [%lld, %lld]", (long long)now,
        (long long)x.open_until_ns, (long long)lo, (long long)hi);
  m->open_until = x.open_until_ns;
}

static void
model_closed(bmodel *m, int from, int64_t now)
{
  m->epoch++;
  m->state = BUTTRESS_STATE_CLOSED;
  m->streak = m->wins = m->trips = 0;
  m->open_until = NONE;
  window_clear(m);
  if (from != BUTTRESS_STATE_CLOSED) model_transition(m, from, BUTTRESS_STATE_CLOSED, now);
}

static void
check_ticket_transition(const buttress_ticket *t, int from, int to)
{
  CHECK(t->from == from && t->to == to, "ticket reports transition %d->%d, expected %d->%d",
        t->from, t->to, from, to);
}

/* ---------------------------------------------------- breaker metrics check */

static void
check_breaker(int64_t read_now)
{
  bmodel *m = &W.m;
  int st = buttress_breaker_state(W.br);
  CHECK(st >= 0 && st < BUTTRESS_STATE_COUNT, "state %d is not one of the five", st);
  CHECK(st == m->state, "state %s, model says %s", buttress_state_name(st),
        buttress_state_name(m->state));

  buttress_breaker_metrics x;
  CHECK_RC(buttress_breaker_metrics_get(W.br, read_now, &x), 0);
  CHECK(x.state == st, "metrics state %d, state() %d", x.state, st);
  CHECK(x.calls == x.successes + x.failures + x.excluded + x.cancelled + x.stale,
        "calls %llu != sum of outcomes", (unsigned long long)x.calls);
#define EQ(field, want)                                                      \
  CHECK(x.field == (want), #field " = %llu, model %llu", (unsigned long long)x.field, \
        (unsigned long long)(want))
  EQ(successes, m->successes);
  EQ(failures, m->failures);
  EQ(excluded, m->excluded);
  EQ(cancelled, m->cancelled);
  EQ(stale, m->stale);
  EQ(rejected, m->rejected);
  EQ(slow, m->slow);
  EQ(trips, m->trips);
  EQ(consecutive_failures, m->state == BUTTRESS_STATE_CLOSED ? m->streak : 0);
  EQ(half_open_successes, m->state == BUTTRESS_STATE_HALF_OPEN ? m->wins : 0);
  EQ(latency.count, m->lat_count);
  for (int f = 0; f < 5; f++)
    for (int t = 0; t < 5; t++) {
      CHECK(x.transitions[f][t] == m->transitions[f][t], "transitions[%s][%s] = %llu, model %llu",
            buttress_state_name(f), buttress_state_name(t),
            (unsigned long long)x.transitions[f][t], (unsigned long long)m->transitions[f][t]);
      CHECK(x.last_transition_ns[f][t] == m->last_transition[f][t],
            "last_transition_ns[%s][%s] = %lld, model %lld", buttress_state_name(f),
            buttress_state_name(t), (long long)x.last_transition_ns[f][t],
            (long long)m->last_transition[f][t]);
    }
  /* counters never decrease (also implied by the model, checked for itself) */
  const buttress_breaker_metrics *p = &W.prev;
  CHECK(x.calls >= p->calls && x.successes >= p->successes && x.failures >= p->failures &&
          x.excluded >= p->excluded && x.cancelled >= p->cancelled && x.stale >= p->stale &&
          x.rejected >= p->rejected && x.slow >= p->slow && x.latency.count >= p->latency.count,
        "a lifetime counter decreased");
  for (int f = 0; f < 5; f++)
    for (int t = 0; t < 5; t++)
      CHECK(x.transitions[f][t] >= p->transitions[f][t], "transitions[%d][%d] decreased", f, t);
  W.prev = x;

  if (m->state == BUTTRESS_STATE_OPEN)
    CHECK(x.open_until_ns == m->open_until, "open_until %lld, at opening %lld",
          (long long)x.open_until_ns, (long long)m->open_until);
  else
    CHECK(x.open_until_ns == NONE, "open_until %lld while %s", (long long)x.open_until_ns,
          buttress_state_name(m->state));

  CHECK(x.window_failures <= x.window_calls && x.window_slow <= x.window_calls,
        "window: %llu failures, %llu slow of %llu calls", (unsigned long long)x.window_failures,
        (unsigned long long)x.window_slow, (unsigned long long)x.window_calls);
  CHECK(x.failure_rate >= 0.0 && x.failure_rate <= 1.0 && x.slow_rate >= 0.0 &&
          x.slow_rate <= 1.0,
        "rates %g %g", x.failure_rate, x.slow_rate);
  bool exact = read_now >= 0 && !m->ev_lost &&
               (m->cfg.window_type == BUTTRESS_WINDOW_COUNT || read_now >= W.now);
  if (exact) {
    uint64_t calls, fails, slows;
    window_counts(m, read_now, &calls, &fails, &slows);
    EQ(window_calls, calls);
    EQ(window_failures, fails);
    EQ(window_slow, slows);
  }
#undef EQ

  const buttress_latency *l = &x.latency;
  if (l->count == 0) {
    CHECK(l->p50_ns == 0 && l->p99_ns == 0 && l->max_ns == 0, "empty latency not zero");
  } else {
    CHECK(l->max_ns == m->lat_max, "latency max %lld, model %lld", (long long)l->max_ns,
          (long long)m->lat_max);
    CHECK(0 <= l->p50_ns && l->p50_ns <= l->p95_ns && l->p95_ns <= l->p99_ns &&
            l->p99_ns <= l->max_ns,
          "latency quantiles %lld %lld %lld max %lld", (long long)l->p50_ns,
          (long long)l->p95_ns, (long long)l->p99_ns, (long long)l->max_ns);
  }
  check_permits(m, W.now);
}

/* -------------------------------------------------------- breaker steps */

static int64_t
step_now(bool noclock)
{
  return noclock ? NO_CLOCK : W.now;
}

/* Breaker calls sometimes pass the time of one step ago: another thread
 * read its clock earlier and reports later.  Only with a count window:
 * where a late add lands in a time window is an approximation the model
 * does not follow. */
static int64_t
br_now(bool noclock)
{
  if (!noclock && W.stale_step && W.m.cfg.window_type == BUTTRESS_WINDOW_COUNT) return W.prev_now;
  return step_now(noclock);
}

/* For "NEED_CLOCK changes nothing": the whole state block, byte for byte.
 * Copying a large block (a 64k-call window) at every step costs more than
 * the step; then it is copied only when the step is expected to be a no-op
 * because of its arguments. */
static bool snapped;

static void
snapshot(bool expect_noop)
{
  snapped = expect_noop || W.br_size <= 16384;
  if (snapped) memcpy(snap, W.br, W.br_size);
}

static void
check_unchanged(const char *what)
{
  if (snapped)
    CHECK(memcmp(snap, W.br, W.br_size) == 0, "%s changed the breaker's state", what);
}

static void
drop_ticket(pooled *pt)
{
  bmodel *m = &W.m;
  if (pt->used && pt->has_permit) {
    /* a later call may pass prev_now: keep what is still held then */
    orphans_prune(m, W.prev_now);
    if (permit_held(m, &pt->permit, W.prev_now)) {
      CHECK(m->norphan < (int)(sizeof m->orphan / sizeof m->orphan[0]), "too many orphans");
      m->orphan[m->norphan++] = pt->permit;
    }
  }
  memset(pt, 0, sizeof *pt);
}

static void
op_allow(src *s, bool noclock)
{
  bmodel *m = &W.m;
  pooled *pt = &W.pool[u8(s) % POOL];
  int64_t now = br_now(noclock);
  drop_ticket(pt);
  snapshot(now < 0);
  buttress_ticket t;
  memset(&t, 0x5a, sizeof t);
  int rc = buttress_breaker_allow(W.br, now, &t);
  int from = m->state;
  trace("allow now=%lld -> %s permit=%d from=%d to=%d retry_after=%lld", (long long)now,
        buttress_errname(rc), t.permit, t.from, t.to, (long long)t.retry_after_ns);

  switch (from) {
  case BUTTRESS_STATE_CLOSED:
  case BUTTRESS_STATE_DISABLED:
    CHECK_RC(rc, 0);
    check_unchanged("allow() of a closed or disabled breaker");
    check_ticket_transition(&t, NONE, NONE);
    CHECK(t.permit == -1, "closed/disabled ticket holds permit %d", t.permit);
    /* Closed and disabled tickets are TIMED when durations matter (slow
     * calls, a time window); a rate rule may also ask for the clock, since
     * any outcome can then open the breaker. */
    if (m->timed)
      CHECK(t.flags == BUTTRESS_TICKET_TIMED, "ticket flags %d, want TIMED", t.flags);
    else if (m->rate_rules)
      CHECK(t.flags == 0 || t.flags == BUTTRESS_TICKET_TIMED, "ticket flags %d", t.flags);
    else
      CHECK(t.flags == 0, "ticket flags %d, want 0", t.flags);
    break;
  case BUTTRESS_STATE_FORCED_OPEN:
    CHECK_RC(rc, BUTTRESS_OPEN);
    check_ticket_transition(&t, NONE, NONE);
    CHECK(t.retry_after_ns == NONE, "forced open retry_after %lld", (long long)t.retry_after_ns);
    m->rejected++;
    return;
  case BUTTRESS_STATE_OPEN:
  case BUTTRESS_STATE_HALF_OPEN:
    if (now < 0) {
      CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
      check_unchanged("allow() answering NEED_CLOCK");
      return;
    }
    if (from == BUTTRESS_STATE_OPEN) {
      if (now < m->open_until) {
        CHECK_RC(rc, BUTTRESS_OPEN);
        check_ticket_transition(&t, NONE, NONE);
        CHECK(t.retry_after_ns == m->open_until - now, "retry_after %lld, open for %lld more",
              (long long)t.retry_after_ns, (long long)(m->open_until - now));
        m->rejected++;
        return;
      }
      /* the period is over: this caller moves it to half-open and is told */
      check_ticket_transition(&t, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN);
      m->epoch++;
      m->state = BUTTRESS_STATE_HALF_OPEN;
      m->wins = 0;
      m->open_until = NONE;
      model_transition(m, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN, now);
    } else {
      check_ticket_transition(&t, NONE, NONE);
    }
    int64_t earliest;
    bool distinct;
    int held = held_permits(m, now, &earliest, &distinct);
    if (held >= (int)m->cfg.half_open_calls) {
      CHECK_RC(rc, BUTTRESS_OPEN);
      CHECK(t.retry_after_ns == earliest - now ||
              (earliest == INT64_MAX && t.retry_after_ns == m->trial_ns),
            "half-open full: retry_after %lld, first permit frees in %lld",
            (long long)t.retry_after_ns, (long long)(earliest - now));
      m->rejected++;
      return;
    }
    /* fewer than K trials in flight: a permit must be granted */
    CHECK_RC(rc, 0);
    CHECK(t.permit >= 0 && (uint32_t)t.permit < m->cfg.half_open_calls, "permit slot %d",
          t.permit);
    CHECK(t.flags == BUTTRESS_TICKET_TIMED, "trial ticket flags %d", t.flags);
    take_slot(m, t.permit, now);
    pt->has_permit = true;
    pt->permit = (permit_rec){m->epoch, ms_ceil_time(add_sat(now, m->trial_ns)), t.permit};
    break;
  }
  pt->used = true;
  pt->t = t;
  pt->epoch = m->epoch;
  pt->state = m->state;
}

static void
op_record(src *s, bool noclock)
{
  bmodel *m = &W.m;
  pooled *pt = &W.pool[u8(s) % POOL];
  uint8_t ob = u8(s);
  int outcome = ob % 4;
  if (ob >= 252) outcome = (ob & 1) ? 4 : -1; /* invalid */
  int64_t d;
  uint8_t db = u8(s);
  switch (db % 8) {
  case 0: d = NO_CLOCK; break;
  case 1: d = m->cfg.slow_call_ns >= 0 ? m->cfg.slow_call_ns : 0; break;
  case 2: d = m->cfg.slow_call_ns > 0 ? m->cfg.slow_call_ns - 1 : 1; break;
  case 3: d = (db >= 248) ? -2 - (int64_t)u8(s) : (int64_t)u8(s) * 1000; break;
  default: d = dur(s, false); break;
  }
  int64_t now = br_now(noclock);
  if (!pt->used) return;
  buttress_ticket before = pt->t;
  snapshot(now < 0 || outcome < 0 || outcome > 3 || d < NO_CLOCK);
  int rc = buttress_breaker_record(W.br, &pt->t, outcome, d, now);
  buttress_ticket *t = &pt->t;
  trace("record ticket(state=%s epoch=%llu permit=%d) outcome=%d dur=%lld now=%lld -> %s "
        "from=%d to=%d",
        buttress_state_name(pt->state), (unsigned long long)pt->epoch, before.permit, outcome,
        (long long)d, (long long)now, buttress_errname(rc), t->from, t->to);

  if (outcome < 0 || outcome > 3 || d < NO_CLOCK) {
    CHECK_RC(rc, BUTTRESS_EINVAL);
    check_unchanged("record() with bad arguments");
    CHECK(memcmp(&before, t, sizeof before) == 0, "record() with bad arguments changed the ticket");
    return;
  }
  /* the documented cases where the outcome needs the time */
  bool needs_clock = pt->state != BUTTRESS_STATE_DISABLED &&
                     (outcome == BUTTRESS_FAILURE || (before.flags & BUTTRESS_TICKET_TIMED));
  if (needs_clock && now < 0) {
    CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
    check_unchanged("record() answering NEED_CLOCK");
    CHECK(memcmp(&before, t, sizeof before) == 0, "record() answering NEED_CLOCK changed the ticket");
    return;
  }
  pt->has_permit = false; /* any outcome gives the permit back */
  if (pt->epoch != m->epoch) {
    /* a generation has passed since admission: stale, ignored */
    CHECK_RC(rc, BUTTRESS_STALE);
    check_ticket_transition(t, NONE, NONE);
    m->stale++;
    return;
  }
  CHECK_RC(rc, 0);
  if (d >= 0) {
    m->lat_count++;
    if (d > m->lat_max) m->lat_max = d;
  }
  switch (outcome) {
  case BUTTRESS_SUCCESS: m->successes++; break;
  case BUTTRESS_FAILURE: m->failures++; break;
  case BUTTRESS_EXCLUDED: m->excluded++; break;
  default: m->cancelled++; break;
  }
  if (outcome == BUTTRESS_EXCLUDED || outcome == BUTTRESS_CANCELLED) {
    /* neutral: no streak, no window, no transition */
    check_ticket_transition(t, NONE, NONE);
    return;
  }
  bool slow = d >= 0 && m->cfg.slow_call_ns >= 0 && d >= m->cfg.slow_call_ns;
  if (slow) m->slow++;
  bool failed = outcome == BUTTRESS_FAILURE;
  /* Successes and failures enter the window in every state (a disabled
   * breaker's untimed call cannot enter a time window); rate rules are
   * evaluated only while closed. */
  if (m->cfg.window_type == BUTTRESS_WINDOW_COUNT || now >= 0) window_add(m, failed, slow, now);
  int from = m->state;
  switch (from) {
  case BUTTRESS_STATE_CLOSED: {
    int by_rate = m->rate_rules ? rate_trips(m, now) : 0;
    uint32_t streak = m->streak + failed;
    if (streak > 0xffff) streak = 0xffff;
    bool by_streak = failed && m->cfg.failure_threshold && streak >= m->cfg.failure_threshold;
    bool opened = t->to == BUTTRESS_STATE_OPEN;
    if (by_streak || by_rate == 1)
      CHECK(opened, "closed breaker did not open (streak %u/%u, rate rule %d)", streak,
            m->cfg.failure_threshold, by_rate);
    else if (by_rate == 0)
      CHECK(!opened, "closed breaker opened without cause (streak %u/%u)", streak,
            m->cfg.failure_threshold);
    if (opened) {
      check_ticket_transition(t, BUTTRESS_STATE_CLOSED, BUTTRESS_STATE_OPEN);
      model_opened(m, BUTTRESS_STATE_CLOSED, now);
    } else {
      check_ticket_transition(t, NONE, NONE);
      m->streak = failed ? streak : 0;
    }
    break;
  }
  case BUTTRESS_STATE_HALF_OPEN:
    if (failed || (slow && m->cfg.slow_rate > 0.0)) {
      check_ticket_transition(t, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_OPEN);
      model_opened(m, BUTTRESS_STATE_HALF_OPEN, now);
    } else if (m->wins + 1 >= m->cfg.success_threshold) {
      check_ticket_transition(t, BUTTRESS_STATE_HALF_OPEN, BUTTRESS_STATE_CLOSED);
      model_closed(m, BUTTRESS_STATE_HALF_OPEN, now);
    } else {
      check_ticket_transition(t, NONE, NONE);
      m->wins++;
    }
    break;
  default: /* disabled: counted only */
    check_ticket_transition(t, NONE, NONE);
    break;
  }
}

static void
op_manual(src *s, bool noclock)
{
  bmodel *m = &W.m;
  uint8_t b = u8(s);
  int64_t now = br_now(noclock);
  buttress_ticket out;
  memset(&out, 0x5a, sizeof out);
  buttress_ticket *o = (b & 4) ? NULL : &out;
  int rc, to;
  switch (b % 3) {
  case 0: rc = buttress_breaker_force_open(W.br, now, o); to = BUTTRESS_STATE_FORCED_OPEN; break;
  case 1: rc = buttress_breaker_disable(W.br, now, o); to = BUTTRESS_STATE_DISABLED; break;
  default: rc = buttress_breaker_reset(W.br, now, o); to = BUTTRESS_STATE_CLOSED; break;
  }
  trace("manual -> %s now=%lld rc=%s", buttress_state_name(to), (long long)now,
        buttress_errname(rc));
  CHECK_RC(rc, 0);
  int from = m->state;
  if (o != NULL) {
    if (from != to)
      check_ticket_transition(o, from, to);
    else
      check_ticket_transition(o, NONE, NONE);
  }
  if (to == BUTTRESS_STATE_CLOSED) {
    model_closed(m, from, now);
  } else {
    m->epoch++;
    m->state = to;
    m->streak = m->wins = 0;
    m->open_until = NONE;
    if (from != to) model_transition(m, from, to, now);
  }
}

static void
op_metrics(src *s, bool noclock)
{
  uint8_t b = u8(s);
  int64_t t = noclock ? NO_CLOCK : W.now;
  if (!noclock && (b & 3) == 3) t = add_sat(W.now, dur(s, false)); /* a read from later on */
  check_breaker(t);
}

/* ------------------------------------------------------------------ time */

static void
op_time(src *s)
{
  bmodel *m = &W.m;
  uint8_t b = u8(s);
  int64_t d;
  int64_t earliest;
  bool distinct;
  switch (b % 16) {
  case 0: d = 1; break;
  case 1: d = u8(s); break;
  case 2: d = (int64_t)u8(s) * 1000; break;
  case 3: d = (int64_t)u8(s) * MS; break;
  case 4: d = (int64_t)u16(s) * MS; break;
  case 5: d = (int64_t)u8(s) * SEC; break;
  case 6: /* to the end of the open period, and just before it */
  case 7:
    d = m->state == BUTTRESS_STATE_OPEN ? m->open_until - W.now - (b % 16 == 7) : MS;
    break;
  case 8: d = m->cfg.reset_timeout_ns; break;
  case 9: d = m->trial_ns; break;
  case 10:
    held_permits(m, W.now, &earliest, &distinct);
    d = earliest == INT64_MAX ? m->trial_ns : earliest - W.now;
    break;
  case 11: d = mul_sat(W.bm.bucket_ns, u8(s)); break;
  case 12: d = mul_sat(m->bucket_ns, u8(s)); break;
  case 13: d = INT64_C(1) << (u8(s) % 63); break;
  case 14: {
    uint64_t raw = u64(s);
    d = (int64_t)(raw >> (1 + u8(s) % 63));
    break;
  }
  default: d = m->cfg.window_ns; break;
  }
  if (d < 0) d = 0;
  W.prev_now = W.now;
  W.now = add_sat(W.now, d);
  if (W.now > TIME_MAX) W.now = TIME_MAX;
  trace("time +%lld -> %lld", (long long)d, (long long)W.now);
}

/* --------------------------------------------------------------- backoff */

static uint32_t
retry_number(src *s)
{
  uint8_t b = u8(s);
  switch (b % 8) {
  case 0: return b >> 3;
  case 1: return 1023 + (b >> 3) % 4;
  case 2: return UINT32_MAX - (b >> 3);
  case 3: return UINT32_C(1) << ((b >> 3) % 32);
  case 4: return 60 + (b >> 3);
  default: return u32(s);
  }
}

static void
op_backoff(src *s)
{
  const buttress_backoff_config *c = &W.rcfg.backoff;
  uint32_t n = retry_number(s);
  uint8_t pb = u8(s);
  int64_t prev = (pb % 4 == 0) ? NONE : (pb % 4 == 1) ? (int64_t)u64(s) : W.bo_prev;
  int64_t a = -7, b = -7;
  CHECK_RC(buttress_backoff_next(W.bo, n, prev, &a), 0);
  CHECK_RC(buttress_backoff_next(W.bo_twin, n, prev, &b), 0);
  trace("backoff n=%u prev=%lld -> %lld", n, (long long)prev, (long long)a);
  CHECK(a == b, "one seed, two sequences: %lld != %lld", (long long)a, (long long)b);
  int64_t ceil = ceiling_of(c, n);
  CHECK(ceil >= 0 && ceil <= c->cap_ns, "ceiling(%u) = %lld outside [0, cap %lld]", n,
        (long long)ceil, (long long)c->cap_ns);
  /* base * multiplier**n with multiplier >= 1: never (much) below base,
   * never decreasing in n (slack for double rounding of huge values) */
  int64_t slack = ceil / (INT64_C(1) << 40) + 1;
  int64_t floor_ = c->base_ns - c->base_ns / (INT64_C(1) << 40); /* base <= cap */
  CHECK(ceil + slack >= floor_, "ceiling(%u) = %lld below base %lld", n, (long long)ceil,
        (long long)c->base_ns);
  if (n < UINT32_MAX) {
    int64_t next = ceiling_of(c, n + 1);
    CHECK(next + slack >= ceil, "ceiling(%u) = %lld < ceiling(%u) = %lld", n + 1,
          (long long)next, n, (long long)ceil);
  }
  int64_t lo, hi;
  jitter_bounds(c, n, prev, &lo, &hi);
  CHECK(a >= 0 && a <= c->cap_ns, "delay %lld outside [0, cap %lld]", (long long)a,
        (long long)c->cap_ns);
  CHECK(a >= lo && a <= hi, "jitter %d delay(%u) = %lld outside [%lld, %lld]", c->jitter, n,
        (long long)a, (long long)lo, (long long)hi);
  W.bo_prev = a;
}

/* ----------------------------------------------------------------- budget */

static void
budget_prune(bgmodel *b, int64_t now)
{
  int k = 0;
  for (int i = 0; i < b->ndep; i++)
    if (in_window(b->dep_t[i], now, b->bucket_ns)) b->dep_t[k++] = b->dep_t[i];
  b->ndep = k;
  k = 0;
  for (int i = 0; i < b->nwd; i++)
    if (in_window(b->wd_t[i], now, b->bucket_ns)) b->wd_t[k++] = b->wd_t[i];
  b->nwd = k;
}

static void
budget_deposited(int64_t now)
{
  bgmodel *b = &W.bm;
  b->deposits++;
  budget_prune(b, now);
  if (b->ndep == MAX_EVENTS) b->lost = true;
  else b->dep_t[b->ndep++] = now;
}

/* Would a withdrawal at `now` be granted?  1 yes, 0 no, -1 too close to call
 * in floating point (either answer accepted). */
static int
budget_would_grant(int64_t now)
{
  bgmodel *b = &W.bm;
  if (b->lost) return -1;
  budget_prune(b, now);
  /* retries may number at most reserve + ratio * calls, this one included */
  double lhs = (double)(b->nwd + 1);
  double rhs = b->reserve + b->cfg.ratio * (double)b->ndep;
  double tol = 1e-9 * (fabs(lhs) + fabs(rhs));
  if (lhs <= rhs - tol) return 1;
  if (lhs > rhs + tol) return 0;
  return -1;
}

static void
budget_withdrew(int64_t now, bool granted)
{
  bgmodel *b = &W.bm;
  if (!granted) {
    b->rejections++;
    return;
  }
  b->withdrawals++;
  if (b->nwd == MAX_EVENTS) b->lost = true;
  else b->wd_t[b->nwd++] = now;
  if (b->lost) return;
  /* Independent of the bucket arithmetic: the window covers at least the
   * last 9 buckets, so the retries granted in them may not pass the formula
   * over the calls the window can hold. */
  uint64_t recent = 0;
  for (int i = 0; i < b->nwd; i++) recent += b->wd_t[i] > now - 9 * b->bucket_ns;
  double allow = b->reserve + b->cfg.ratio * (double)b->ndep;
  CHECK((double)recent <= allow * (1 + 1e-9) + 1e-9,
        "%llu retries granted in the last 9/10 of the window; %d calls allow %g",
        (unsigned long long)recent, b->ndep, allow);
}

static void
check_budget(int64_t read_now)
{
  bgmodel *b = &W.bm;
  buttress_budget_metrics x;
  CHECK_RC(buttress_budget_metrics_get(W.bg, read_now, &x), 0);
  CHECK(x.deposits == b->deposits && x.withdrawals == b->withdrawals &&
          x.rejections == b->rejections,
        "budget counters %llu/%llu/%llu, model %llu/%llu/%llu", (unsigned long long)x.deposits,
        (unsigned long long)x.withdrawals, (unsigned long long)x.rejections,
        (unsigned long long)b->deposits, (unsigned long long)b->withdrawals,
        (unsigned long long)b->rejections);
  CHECK(x.available >= 0.0 && !isnan(x.available), "available %g", x.available);
  if (read_now >= W.now && !b->lost) {
    budget_prune(b, W.now);
    uint64_t calls = 0, retries = 0;
    for (int i = 0; i < b->ndep; i++) calls += in_window(b->dep_t[i], read_now, b->bucket_ns);
    for (int i = 0; i < b->nwd; i++) retries += in_window(b->wd_t[i], read_now, b->bucket_ns);
    CHECK(x.window_calls == calls && x.window_retries == retries,
          "budget window %llu calls %llu retries at %lld, model %llu %llu",
          (unsigned long long)x.window_calls, (unsigned long long)x.window_retries,
          (long long)read_now, (unsigned long long)calls, (unsigned long long)retries);
  }
}

static void
op_budget(src *s, bool noclock)
{
  uint8_t b = u8(s);
  int64_t now = step_now(noclock);
  if (b & 1) {
    int rc = buttress_budget_deposit(W.bg, now);
    trace("budget deposit now=%lld -> %s", (long long)now, buttress_errname(rc));
    if (now < 0) {
      CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
    } else {
      CHECK_RC(rc, 0);
      budget_deposited(now);
    }
  } else {
    int want = now < 0 ? 0 : budget_would_grant(now);
    int rc = buttress_budget_withdraw(W.bg, now);
    trace("budget withdraw now=%lld -> %s (model %d)", (long long)now, buttress_errname(rc), want);
    if (now < 0) {
      CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
    } else {
      CHECK(rc == 0 || rc == BUTTRESS_BUDGET, "withdraw returned %d", rc);
      if (want == 1) CHECK(rc == 0, "withdraw refused, the formula allows it");
      if (want == 0) CHECK(rc == BUTTRESS_BUDGET, "withdraw granted beyond the formula");
      budget_withdrew(now, rc == 0);
    }
  }
  if (b & 2) check_budget(noclock ? NO_CLOCK : add_sat(W.now, (b & 4) ? dur(s, false) : 0));
}

/* ------------------------------------------------------------------ retry */

static void
check_retry_metrics(void)
{
  buttress_retry_metrics x;
  CHECK_RC(buttress_retry_metrics_get(W.rt, BUTTRESS_NO_CLOCK, &x), 0);
  const rmodel *r = &W.rm;
  CHECK(x.calls == r->calls && x.attempts == r->attempts && x.retries == r->retries &&
          x.successes == r->successes && x.failures == r->failures &&
          x.giveups_attempts == r->g_attempts && x.giveups_deadline == r->g_deadline &&
          x.giveups_budget == r->g_budget,
        "retry metrics calls=%llu attempts=%llu retries=%llu ok=%llu fail=%llu give-ups "
        "%llu/%llu/%llu; model %llu %llu %llu %llu %llu %llu/%llu/%llu",
        (unsigned long long)x.calls, (unsigned long long)x.attempts,
        (unsigned long long)x.retries, (unsigned long long)x.successes,
        (unsigned long long)x.failures, (unsigned long long)x.giveups_attempts,
        (unsigned long long)x.giveups_deadline, (unsigned long long)x.giveups_budget,
        (unsigned long long)r->calls, (unsigned long long)r->attempts,
        (unsigned long long)r->retries, (unsigned long long)r->successes,
        (unsigned long long)r->failures, (unsigned long long)r->g_attempts,
        (unsigned long long)r->g_deadline, (unsigned long long)r->g_budget);
}

static unsigned char rsnap[1 << 15], gsnap[1 << 12];

static void
retry_snapshot(void)
{
  CHECK(buttress_retry_sizeof() <= sizeof rsnap && buttress_budget_sizeof() <= sizeof gsnap,
        "snapshot buffers too small: retry %zu, budget %zu bytes", buttress_retry_sizeof(),
        buttress_budget_sizeof());
  memcpy(rsnap, W.rt, buttress_retry_sizeof());
  memcpy(gsnap, W.bg, buttress_budget_sizeof());
}

static void
retry_unchanged(const char *what)
{
  CHECK(memcmp(rsnap, W.rt, buttress_retry_sizeof()) == 0, "%s changed the retry", what);
  CHECK(memcmp(gsnap, W.bg, buttress_budget_sizeof()) == 0, "%s changed the budget", what);
}

static void
op_retry_begin(src *s, bool noclock)
{
  rcall *rc_ = &W.calls[u8(s) % CALLS];
  uint8_t b = u8(s);
  int64_t now = step_now(noclock);
  int64_t outer;
  switch ((b >> 1) % 8) {
  case 0: case 1: case 2: outer = NONE; break;
  case 3: outer = add_sat(W.now, dur(s, false)); break;
  case 4: outer = W.now > 0 ? W.now - 1 : 0; break;
  case 5: outer = W.now; break;
  case 6: outer = dur(s, false); break;
  default: outer = -2 - (int64_t)u8(s); break; /* invalid */
  }
  buttress_budget *bg = (b & 1) ? W.bg : NULL;
  buttress_retry_call before;
  memset(&rc_->c, 0x5a, sizeof rc_->c);
  before = rc_->c;
  retry_snapshot();
  int rc = buttress_retry_begin(W.rt, &rc_->c, bg, outer, now);
  trace("retry begin outer=%lld budget=%d now=%lld -> %s deadline=%lld", (long long)outer,
        bg != NULL, (long long)now, buttress_errname(rc), (long long)rc_->c.deadline_ns);
  rc_->active = rc_->filled = false;
  if (outer < NONE) {
    CHECK_RC(rc, BUTTRESS_EINVAL);
    retry_unchanged("begin() with a bad deadline");
    memset(&rc_->c, 0, sizeof rc_->c);
    return;
  }
  bool timed = W.rcfg.deadline_ns >= 0 || outer >= 0 || bg != NULL;
  if (timed && now < 0) {
    CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
    retry_unchanged("begin() answering NEED_CLOCK");
    CHECK(memcmp(&before, &rc_->c, sizeof before) == 0, "begin() answering NEED_CLOCK wrote the call");
    memset(&rc_->c, 0, sizeof rc_->c);
    return;
  }
  int64_t deadline = NONE;
  if (W.rcfg.deadline_ns >= 0) deadline = add_sat(now, W.rcfg.deadline_ns);
  if (outer >= 0 && (deadline < 0 || outer < deadline)) deadline = outer;
  CHECK(rc_->c.deadline_ns == deadline, "deadline %lld, expected %lld",
        (long long)rc_->c.deadline_ns, (long long)deadline);
  W.rm.calls++;
  rc_->filled = true;
  rc_->budgeted = bg != NULL;
  if (bg) budget_deposited(now);
  if (deadline >= 0 && now >= deadline) {
    CHECK_RC(rc, BUTTRESS_DEADLINE);
    CHECK(rc_->c.reason == BUTTRESS_DEADLINE && rc_->c.attempt == 0, "reason %d attempt %u",
          rc_->c.reason, rc_->c.attempt);
    W.rm.g_deadline++;
    return;
  }
  CHECK_RC(rc, 0);
  CHECK(rc_->c.attempt == 1 && rc_->c.reason == 0 && rc_->c.delay_ns == NONE &&
          rc_->c.prev_delay_ns == NONE && rc_->c.started_ns == now,
        "fresh call: attempt %u reason %d delay %lld", rc_->c.attempt, rc_->c.reason,
        (long long)rc_->c.delay_ns);
  W.rm.attempts++;
  rc_->active = true;
}

static void
op_retry_next(src *s, bool noclock)
{
  rcall *rc_ = &W.calls[u8(s) % CALLS];
  uint8_t b = u8(s);
  int64_t now = step_now(noclock);
  int64_t override;
  switch ((b >> 1) % 8) {
  case 0: case 1: case 2: case 3: override = NONE; break;
  case 4: override = 0; break;
  case 5: override = dur(s, false); break;
  case 6:
    override = rc_->c.deadline_ns >= 0 && rc_->c.deadline_ns > W.now
                 ? rc_->c.deadline_ns - W.now - (int64_t)(u8(s) % 2) : (int64_t)u8(s);
    break;
  default: override = -2 - (int64_t)u8(s); break;
  }
  /* the budget, if any, is the one the call was begun with */
  buttress_budget *bg = ((b & 1) && rc_->budgeted) ? W.bg : NULL;
  if (!rc_->active) {
    /* never begun, or begun into a passed deadline: attempt is 0; a call
     * that gave up or ended is not asked again (the caller stopped) */
    if (rc_->c.attempt == 0) {
      retry_snapshot();
      int rc = buttress_retry_next(W.rt, &rc_->c, bg, override, now);
      CHECK_RC(rc, BUTTRESS_EINVAL);
      retry_unchanged("next() on a call with no attempt");
    }
    return;
  }
  buttress_retry_call before = rc_->c;
  retry_snapshot();
  int want_budget = (bg && now >= 0) ? budget_would_grant(now) : 1;
  int rc = buttress_retry_next(W.rt, &rc_->c, bg, override, now);
  buttress_retry_call *c = &rc_->c;
  trace("retry next attempt=%u override=%lld budget=%d now=%lld -> %s delay=%lld (budget model "
        "%d)",
        before.attempt, (long long)override, bg != NULL, (long long)now, buttress_errname(rc),
        (long long)c->delay_ns, want_budget);
  if (override < NONE) {
    CHECK_RC(rc, BUTTRESS_EINVAL);
    retry_unchanged("next() with a bad override");
    return;
  }
  if ((before.deadline_ns >= 0 || bg != NULL) && now < 0) {
    CHECK_RC(rc, BUTTRESS_NEED_CLOCK);
    retry_unchanged("next() answering NEED_CLOCK");
    CHECK(memcmp(&before, c, sizeof before) == 0, "next() answering NEED_CLOCK wrote the call");
    return;
  }
  if (before.attempt >= W.rcfg.attempts) {
    CHECK_RC(rc, BUTTRESS_EXHAUSTED);
    CHECK(c->reason == BUTTRESS_EXHAUSTED, "reason %d", c->reason);
    W.rm.g_attempts++;
    rc_->active = false;
    return;
  }
  if (rc == BUTTRESS_DEADLINE) {
    CHECK(before.deadline_ns >= 0, "DEADLINE without a deadline");
    if (override >= 0)
      CHECK(add_sat(now, override) >= before.deadline_ns,
            "DEADLINE, but now %lld + delay %lld < deadline %lld", (long long)now,
            (long long)override, (long long)before.deadline_ns);
    CHECK(c->reason == BUTTRESS_DEADLINE, "reason %d", c->reason);
    W.rm.g_deadline++;
    rc_->active = false;
    return;
  }
  CHECK(rc == 0 || rc == BUTTRESS_BUDGET, "next() returned %s", buttress_errname(rc));
  if (rc == BUTTRESS_BUDGET) {
    CHECK(bg != NULL, "BUDGET without a budget");
    CHECK(want_budget != 1, "next() gave up for the budget, the formula allows a retry");
    budget_withdrew(now, false);
    CHECK(c->reason == BUTTRESS_BUDGET, "reason %d", c->reason);
    W.rm.g_budget++;
    rc_->active = false;
    return;
  }
  /* a retry: check its delay */
  int64_t delay = c->delay_ns;
  if (override >= 0) {
    CHECK(delay == override, "delay %lld, override %lld", (long long)delay, (long long)override);
  } else {
    int64_t lo, hi;
    jitter_bounds(&W.rcfg.backoff, before.attempt - 1, before.prev_delay_ns, &lo, &hi);
    CHECK(delay >= 0 && delay <= W.rcfg.backoff.cap_ns && delay >= lo && delay <= hi,
          "retry delay %lld outside [%lld, %lld] (cap %lld)", (long long)delay, (long long)lo,
          (long long)hi, (long long)W.rcfg.backoff.cap_ns);
  }
  if (before.deadline_ns >= 0)
    CHECK(add_sat(now, delay) < before.deadline_ns,
          "retry sleeps into the deadline: now %lld + delay %lld >= %lld", (long long)now,
          (long long)delay, (long long)before.deadline_ns);
  if (bg) {
    CHECK(want_budget != 0, "next() spent a retry the budget does not allow");
    budget_withdrew(now, true);
  }
  CHECK(c->attempt == before.attempt + 1 && c->prev_delay_ns == delay,
        "attempt %u -> %u, prev %lld", before.attempt, c->attempt, (long long)c->prev_delay_ns);
  CHECK(c->attempt <= W.rcfg.attempts, "attempt %u past the limit %u", c->attempt,
        W.rcfg.attempts);
  W.rm.retries++;
  W.rm.attempts++;
}

static void
op_retry_end(src *s, bool noclock)
{
  rcall *rc_ = &W.calls[u8(s) % CALLS];
  uint8_t b = u8(s);
  int outcome = (b & 1) ? BUTTRESS_FAILURE : BUTTRESS_SUCCESS;
  if (b >= 250) outcome = (b & 1) ? 2 : -1; /* not an end outcome */
  int64_t rem = -7;
  int rrc = buttress_retry_remaining(&rc_->c, step_now(noclock), &rem);
  if (rc_->filled) {
    if (rc_->c.deadline_ns < 0) {
      CHECK(rrc == 0 && rem == NONE, "remaining without deadline: %d %lld", rrc, (long long)rem);
    } else if (noclock) {
      CHECK_RC(rrc, BUTTRESS_NEED_CLOCK);
    } else {
      int64_t want = rc_->c.deadline_ns > W.now ? rc_->c.deadline_ns - W.now : 0;
      CHECK(rrc == 0 && rem == want, "remaining %lld, want %lld", (long long)rem,
            (long long)want);
    }
  }
  if (!rc_->active) return;
  retry_snapshot();
  int rc = buttress_retry_end(W.rt, &rc_->c, outcome);
  trace("retry end outcome=%d -> %s", outcome, buttress_errname(rc));
  if (outcome != BUTTRESS_SUCCESS && outcome != BUTTRESS_FAILURE) {
    CHECK_RC(rc, BUTTRESS_EINVAL);
    retry_unchanged("end() with a bad outcome");
    return;
  }
  CHECK_RC(rc, 0);
  if (outcome == BUTTRESS_SUCCESS) W.rm.successes++;
  else W.rm.failures++;
  rc_->active = false;
}

/* -------------------------------------------------------------- histogram */

/* The sorted values, for exact order statistics (while they fit). */
static void
hm_insert(hmodel *h, int64_t v)
{
  if (h->n == MAX_HVALS) {
    h->lost = true;
    return;
  }
  int i = h->n++;
  while (i > 0 && h->v[i - 1] > v) {
    h->v[i] = h->v[i - 1];
    i--;
  }
  h->v[i] = v;
}

static void
hm_add(hmodel *h, int64_t v)
{
  h->count++;
  h->sum += (uint64_t)v;
  if (v > h->max) h->max = v;
  hm_insert(h, v);
}

/* Within the histogram's precision of the exact order statistic. */
static void
check_quantile(const hmodel *h, double q, int64_t got)
{
  if (h->count == 0) {
    CHECK(got == 0, "quantile of an empty histogram %lld", (long long)got);
    return;
  }
  CHECK(got >= 0 && got <= h->max, "quantile(%g) = %lld outside [0, max %lld]", q,
        (long long)got, (long long)h->max);
  if (h->lost) return;
  uint64_t rank = (uint64_t)ceil(q * (double)h->count);
  if (rank < 1) rank = 1;
  if (rank > h->count) rank = h->count;
  int64_t v = h->v[rank - 1];
  if (v >= (INT64_C(1) << 38)) return; /* the top bucket: only [0, max] */
  int64_t tol = v / 64;
  CHECK(got >= v - tol && got <= v + tol, "quantile(%g) = %lld, true value %lld (rank %llu of %llu)",
        q, (long long)got, (long long)v, (unsigned long long)rank, (unsigned long long)h->count);
}

static double
pick_q(src *s)
{
  uint8_t b = u8(s);
  switch (b % 8) {
  case 0: return 0.0;
  case 1: return 1.0;
  case 2: return 0.5;
  case 3: return 0.99;
  case 4: return (double)u16(s) / 65535.0;
  case 5: return nextafter(0.0, 1.0);
  case 6: return nextafter(1.0, 0.0);
  default: return (double)b / 255.0;
  }
}

static void
op_hist(src *s)
{
  uint8_t b = u8(s);
  int i = b & 1;
  buttress_histogram *h = W.h[i];
  hmodel *m = &W.hm[i];
  switch ((b >> 1) % 6) {
  case 0:
  case 1: {
    int64_t v = (b >> 4) == 15 ? -1 - (int64_t)u8(s) : dur(s, false);
    int rc = buttress_histogram_record(h, v);
    trace("hist[%d] record %lld -> %s", i, (long long)v, buttress_errname(rc));
    if (v < 0) {
      CHECK_RC(rc, BUTTRESS_EINVAL);
    } else {
      CHECK_RC(rc, 0);
      hm_add(m, v);
    }
    break;
  }
  case 2: {
    double q1 = pick_q(s), q2 = pick_q(s);
    if (q1 > q2) {
      double t = q1;
      q1 = q2;
      q2 = t;
    }
    int64_t a = -7, c = -7;
    CHECK_RC(buttress_histogram_quantile(h, q1, &a), 0);
    CHECK_RC(buttress_histogram_quantile(h, q2, &c), 0);
    trace("hist[%d] quantile %g -> %lld, %g -> %lld", i, q1, (long long)a, q2, (long long)c);
    CHECK(a <= c, "quantile not monotone: q(%g) = %lld > q(%g) = %lld", q1, (long long)a, q2,
          (long long)c);
    check_quantile(m, q1, a);
    check_quantile(m, q2, c);
    static const double bad[] = {-0.0001, 1.0001, NAN, INFINITY, -INFINITY};
    int64_t keep = 12345;
    CHECK_RC(buttress_histogram_quantile(h, bad[(b >> 4) % 5], &keep), BUTTRESS_EINVAL);
    break;
  }
  case 3: {
    buttress_latency l;
    CHECK_RC(buttress_histogram_summary(h, &l), 0);
    CHECK(l.count == m->count, "summary count %llu, model %llu", (unsigned long long)l.count,
          (unsigned long long)m->count);
    if (m->count == 0) {
      CHECK(l.p50_ns == 0 && l.max_ns == 0 && l.mean_ns == 0.0, "empty summary not zero");
      break;
    }
    CHECK(l.max_ns == m->max, "summary max %lld, model %lld", (long long)l.max_ns,
          (long long)m->max);
    CHECK(0 <= l.p50_ns && l.p50_ns <= l.p95_ns && l.p95_ns <= l.p99_ns && l.p99_ns <= l.max_ns,
          "summary quantiles %lld %lld %lld max %lld", (long long)l.p50_ns, (long long)l.p95_ns,
          (long long)l.p99_ns, (long long)l.max_ns);
    check_quantile(m, 0.50, l.p50_ns);
    check_quantile(m, 0.95, l.p95_ns);
    check_quantile(m, 0.99, l.p99_ns);
    /* the mean is exact while the sum fits its 64-bit counter */
    if (m->sum <= UINT64_MAX) {
      double mean = (double)m->sum / (double)m->count;
      CHECK(fabs(l.mean_ns - mean) <= 1e-9 * mean + 1e-9, "mean %g, model %g", l.mean_ns, mean);
    }
    break;
  }
  case 4: {
    /* h[i] += h[1-i] */
    CHECK_RC(buttress_histogram_merge(h, W.h[1 - i]), 0);
    const hmodel *o = &W.hm[1 - i];
    trace("hist[%d] += hist[%d]", i, 1 - i);
    m->count += o->count;
    m->sum += o->sum;
    if (o->max > m->max) m->max = o->max;
    for (int k = 0; k < o->n; k++) hm_insert(m, o->v[k]);
    if (o->lost) m->lost = true;
    break;
  }
  default:
    CHECK_RC(buttress_histogram_reset(h), 0);
    trace("hist[%d] reset", i);
    memset(m, 0, sizeof *m);
    break;
  }
}

/* ------------------------------------------------------------------ names */

/* Names of codes, states and jitters: never NULL, and parse(name(j)) == j. */
static void
op_names(src *s)
{
  int code = (int)u32(s);
  if ((code & 0x100) == 0) code = (int8_t)(code & 0xff); /* often near the table */
  CHECK(buttress_strerror(code) != NULL && buttress_errname(code) != NULL, "NULL name of %d",
        code);
  CHECK(buttress_state_name(code) != NULL && buttress_jitter_name(code) != NULL,
        "NULL state/jitter name of %d", code);
  if (code >= 0 && code <= 3) {
    CHECK_RC(buttress_jitter_parse(buttress_jitter_name(code)), code);
  }
  char name[16];
  size_t n = u8(s) % sizeof name;
  for (size_t i = 0; i < n; i++) name[i] = (char)u8(s);
  name[n] = '\0';
  int j = buttress_jitter_parse(name);
  CHECK(j == BUTTRESS_EINVAL || (j >= 0 && j <= 3 && strcmp(buttress_jitter_name(j), name) == 0),
        "jitter_parse(\"%s\") = %d", name, j);
  CHECK_RC(buttress_jitter_parse(NULL), BUTTRESS_EINVAL);
}

/* ----------------------------------------------------------------- driver */

/* Objects that are not what they claim (a zeroed block) are refused. */
static void
check_bad_objects(void)
{
  static uint64_t zero[64];
  memset(zero, 0, sizeof zero);
  buttress_ticket t;
  buttress_breaker_metrics bm;
  CHECK_RC(buttress_breaker_allow((buttress_breaker *)zero, 0, &t), BUTTRESS_EINVAL);
  CHECK_RC(buttress_breaker_metrics_get((buttress_breaker *)zero, 0, &bm), BUTTRESS_EINVAL);
  CHECK_RC(buttress_breaker_state((buttress_breaker *)zero), BUTTRESS_EINVAL);
  CHECK_RC(buttress_budget_withdraw((buttress_budget *)zero, 0), BUTTRESS_EINVAL);
  CHECK_RC(buttress_histogram_record((buttress_histogram *)zero, 1), BUTTRESS_EINVAL);
  buttress_retry_call c;
  CHECK_RC(buttress_retry_begin((buttress_retry *)zero, &c, NULL, NONE, 0), BUTTRESS_EINVAL);
  int64_t out;
  CHECK_RC(buttress_backoff_next((buttress_backoff *)zero, 0, NONE, &out), BUTTRESS_EINVAL);
  for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
    CHECK(zero[i] == 0, "a call on a bad object wrote to it");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  const char *t = getenv("FUZZ_TRACE");
  trace_on = t != NULL && *t != '\0' && *t != '0';
  check_bad_objects();
  return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  src s = {data, size};
  memset(&W, 0, sizeof W);
  cur_step = 0;
  cur_op = "setup";
  setup_breaker(&s);
  setup_retry_budget(&s);
  setup_time(&s);
  W.prev_now = W.now;
  cur_op = "initial metrics";
  check_breaker(W.now);
  check_retry_metrics();
  check_budget(W.now);

  for (cur_step = 1; s.n > 0 && cur_step <= MAX_STEPS; cur_step++) {
    uint8_t op = u8(&s);
    bool noclock = (op >> 5) == 7; /* one step in eight gives no clock */
    W.stale_step = (op >> 5) == 6;  /* and one an earlier time */
    static const char *const names[16] = {
      "allow", "record", "allow", "record", "time", "allow+record", "manual", "metrics",
      "backoff", "retry_begin", "retry_next", "retry_next", "retry_end", "budget", "histogram",
      "names"};
    cur_op = names[op & 15];
    switch (op & 15) {
    case 0: case 2: op_allow(&s, noclock); break;
    case 1: case 3: op_record(&s, noclock); break;
    case 4: op_time(&s); break;
    case 15: op_names(&s); break;
    case 5: {
      /* the common pattern: a call admitted and reported at once */
      const uint8_t *p = s.p;
      size_t n = s.n;
      op_allow(&s, noclock);
      s.p = p;
      s.n = n;
      op_record(&s, noclock);
      break;
    }
    case 6: op_manual(&s, noclock); break;
    case 7: op_metrics(&s, noclock); break;
    case 8: op_backoff(&s); break;
    case 9: op_retry_begin(&s, noclock); break;
    case 10: case 11: op_retry_next(&s, noclock); break;
    case 12: op_retry_end(&s, noclock); break;
    case 13: op_budget(&s, noclock); break;
    default: op_hist(&s); break;
    }
    /* after every step */
    check_breaker(W.now);
    check_retry_metrics();
  }
  cur_op = "final";
  check_budget(W.now);
  teardown();
  return 0;
}
