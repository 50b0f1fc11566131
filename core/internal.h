/* Internals shared by the core's files; never installed. */
#ifndef BUTTRESS_INTERNAL_H
#define BUTTRESS_INTERNAL_H

#include "buttress.h"

#include <stdatomic.h>
#include <stdbool.h>

/* State may live in memory shared by processes: atomics must not hide a lock. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(ATOMIC_CHAR_LOCK_FREE == 2, "8-bit atomics must be lock-free");

#define BUTTRESS__ABI 2

/* Leading magic word of each state object: "btBO", "btRT", ... */
#define BUTTRESS__MAGIC_BACKOFF 0x4f427462u
#define BUTTRESS__MAGIC_RETRY 0x54527462u
#define BUTTRESS__MAGIC_BUDGET 0x55427462u
#define BUTTRESS__MAGIC_HIST 0x49487462u
#define BUTTRESS__MAGIC_BREAKER 0x52427462u

/* Keeps hot atomics on cache lines of their own without assuming the
 * block itself is 64-byte aligned (callers guarantee only 8). */
#define BUTTRESS__CACHE_LINE 64
#define BUTTRESS__PAD(name, used) char name[BUTTRESS__CACHE_LINE - (used)]

typedef _Atomic uint64_t buttress__au64;
typedef _Atomic int64_t buttress__ai64;

static inline bool
buttress__aligned8(const void *p)
{
  return ((uintptr_t)p & 7u) == 0;
}

/* ---- random numbers: splitmix64, a counter-based generator, so that one
 * atomic add per draw makes it safe to share between threads. */
#define BUTTRESS__GOLDEN UINT64_C(0x9e3779b97f4a7c15)

static inline uint64_t
buttress__mix64(uint64_t z)
{
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static inline uint64_t
buttress__rand_next(buttress__au64 *state)
{
  /* relaxed: the draws need uniqueness, not ordering with other memory */
  uint64_t s = atomic_fetch_add_explicit(state, BUTTRESS__GOLDEN, memory_order_relaxed);
  return buttress__mix64(s + BUTTRESS__GOLDEN);
}

/* [0, 1) with 53 bits */
static inline double
buttress__unit(uint64_t x)
{
  return (double)(x >> 11) * 0x1.0p-53;
}

/* ---- saturating time arithmetic */
static inline int64_t
buttress__add_sat(int64_t a, int64_t b)
{
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
  return a + b;
}

/* Durations in scenario and state words are whole milliseconds, rounded up
 * so that nothing expires early. */
static inline int64_t
buttress__ceil_ms(int64_t ns)
{
  return ns <= 0 ? 0 : (ns - 1) / BUTTRESS_NS_PER_MS + 1;
}

/* ---- backoff arithmetic (backoff.c), shared by retry and breaker */
int64_t buttress__backoff_ceiling(const buttress_backoff_config *cfg, uint32_t retry);
int64_t buttress__backoff_draw(const buttress_backoff_config *cfg, uint32_t retry,
                               int64_t prev_ns, uint64_t random);
int buttress__check_duration(int64_t ns, bool none_allowed);

int buttress__budget_get_config(const buttress_budget *b, buttress_budget_config *out);

/* ---- sliding time window (window.c): BUTTRESS_TIME_BUCKETS buckets of
 * window/BUTTRESS_TIME_BUCKETS each, three counters a bucket.  Each counter
 * is one word holding the bucket's epoch (low 32 bits) and the count (32
 * bits), so recycling a bucket and adding to it are the same CAS: no add is
 * ever lost, and no half-done reset can be left behind by a killed process.
 * The one ambiguity: a bucket left untouched for an exact multiple of 2**32
 * bucket lengths reads as current. */
#define BUTTRESS__TRING_COUNTERS 3
typedef struct buttress__tbucket {
  buttress__au64 word[BUTTRESS__TRING_COUNTERS];
} buttress__tbucket;

typedef struct buttress__tring {
  int64_t bucket_ns;
  buttress__ai64 latest; /* newest epoch added: the window's end when a
                            reader has no clock */
  buttress__tbucket bucket[BUTTRESS_TIME_BUCKETS];
} buttress__tring;

void buttress__tring_init(buttress__tring *r, int64_t window_ns);
/* Adds delta to counter `counter` of now's bucket; returns now's epoch so
 * that buttress__tring_undo can take it back from the same bucket. */
int64_t buttress__tring_add(buttress__tring *r, int64_t now_ns, int counter, uint64_t delta);
void buttress__tring_undo(buttress__tring *r, int64_t epoch, int counter, uint64_t delta);
void buttress__tring_sum(const buttress__tring *r, int64_t now_ns,
                         uint64_t out[BUTTRESS__TRING_COUNTERS]);
void buttress__tring_clear(buttress__tring *r);

/* ---- sliding count window (window.c): the last `size` outcomes.  The slots
 * (one byte each) follow the struct in memory. */
enum { BUTTRESS__SLOT_USED = 1, BUTTRESS__SLOT_FAILED = 2, BUTTRESS__SLOT_SLOW = 4 };
typedef struct buttress__cring {
  uint32_t size;     /* 0: positions are counted, no slots are kept */
  uint32_t reserved_;
  buttress__au64 pos; /* outcomes ever added: never cleared */
  buttress__au64 calls, failures, slow;
} buttress__cring;

void buttress__cring_init(buttress__cring *r, _Atomic unsigned char *slots, uint32_t size);
/* Slot i takes the outcome `bits`; the running counts follow (window.c). */
void buttress__cring_put(buttress__cring *r, _Atomic unsigned char *slots, uint64_t i,
                         unsigned bits);
/* Adds an outcome.  Inline: on a closed breaker's success path this is most
 * of the work, and a call there costs measurably (bench/lua). */
static inline void
buttress__cring_add(buttress__cring *r, _Atomic unsigned char *slots, unsigned bits)
{
  uint64_t position = atomic_fetch_add_explicit(&r->pos, 1, memory_order_relaxed);
  if (r->size == 0) return;
  uint64_t i = position % r->size;
  /* Same outcome as the one it replaces (a run of successes): the counts do
   * not change, so skip the write. */
  if (atomic_load_explicit(&slots[i], memory_order_relaxed) ==
      (unsigned char)(bits | BUTTRESS__SLOT_USED))
    return;
  buttress__cring_put(r, slots, i, bits);
}
void buttress__cring_clear(buttress__cring *r, _Atomic unsigned char *slots);
/* Consistent enough for rates: never more failures or slow calls than calls. */
void buttress__cring_read(const buttress__cring *r, uint64_t *calls, uint64_t *failures,
                          uint64_t *slow);

/* ---- calls per second (rate.c): stamps of the lifetime call count, one
 * slot per second of the last minute, written only by callers that have a
 * clock reading anyway.  rate_due() is one load: stamp only when it says so. */
#define BUTTRESS__RATE_SLOTS 64
typedef struct buttress__rate {
  buttress__au64 slot[BUTTRESS__RATE_SLOTS];
} buttress__rate;

void buttress__rate_init(buttress__rate *m);
bool buttress__rate_due(const buttress__rate *m, int64_t now_ns);
void buttress__rate_stamp(buttress__rate *m, int64_t now_ns, uint64_t count);
/* Calls between the oldest stamp of the last minute and now (count), per
 * second; 0 when there is no stamp at least 1 ms old. */
double buttress__rate_per_second(const buttress__rate *m, int64_t now_ns, uint64_t count);

/* ---- histogram layout (histogram.c): embedded in breakers */
#define BUTTRESS__HIST_SUB_BITS 5
#define BUTTRESS__HIST_SUB (1 << BUTTRESS__HIST_SUB_BITS)
#define BUTTRESS__HIST_MAX_MSB 37
#define BUTTRESS__HIST_BUCKETS (BUTTRESS__HIST_SUB * (BUTTRESS__HIST_MAX_MSB - BUTTRESS__HIST_SUB_BITS) + 2 * BUTTRESS__HIST_SUB)

struct buttress_histogram {
  uint32_t magic;
  uint32_t abi;
  buttress__au64 count;
  buttress__au64 sum;
  buttress__ai64 max;
  buttress__au64 bucket[BUTTRESS__HIST_BUCKETS];
};

void buttress__histogram_init(buttress_histogram *h);

#endif
