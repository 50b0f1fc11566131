/* Calls per second, without a clock read per call.
 *
 * Callers that hold a clock reading anyway (a timed call, a clocked
 * transition, a metrics read) stamp the lifetime call count with the time,
 * at most once per second.  The rate is the calls made between the oldest
 * stamp of the last minute and now.  One word per second of the minute:
 *
 *   valid (1 bit) | second (19 bits) | millisecond (10 bits) | count (34 bits)
 *
 * The count is kept modulo 2**34: a difference over one minute is exact up
 * to 286 million calls a second.  A second tag repeats after 2**19 s (six
 * days); a slot left untouched for exactly that long reads as current. */
#include "internal.h"

#define COUNT_BITS 34
#define MS_BITS 10
#define SEC_BITS 19
#define COUNT_MASK ((UINT64_C(1) << COUNT_BITS) - 1)
#define MS_SHIFT COUNT_BITS
#define SEC_SHIFT (COUNT_BITS + MS_BITS)
#define SEC_MASK ((UINT64_C(1) << SEC_BITS) - 1)
#define VALID (UINT64_C(1) << 63)

/* A stamp this old is still in its slot: 64 slots, 60 s. */
#define HORIZON_MS ((int64_t)(BUTTRESS__RATE_SLOTS - 4) * 1000)

static uint64_t
seconds_of(int64_t now_ns)
{
  return (uint64_t)(now_ns / BUTTRESS_NS_PER_S);
}

void
buttress__rate_init(buttress__rate *m)
{
  for (int i = 0; i < BUTTRESS__RATE_SLOTS; i++) atomic_init(&m->slot[i], 0);
}

bool
buttress__rate_due(const buttress__rate *m, int64_t now_ns)
{
  if (now_ns < 0) return false;
  uint64_t sec = seconds_of(now_ns);
  uint64_t w = atomic_load_explicit(&m->slot[sec % BUTTRESS__RATE_SLOTS], memory_order_relaxed);
  return !(w & VALID) || ((w >> SEC_SHIFT) & SEC_MASK) != (sec & SEC_MASK);
}

void
buttress__rate_stamp(buttress__rate *m, int64_t now_ns, uint64_t count)
{
  if (now_ns < 0) return;
  uint64_t sec = seconds_of(now_ns);
  uint64_t ms = (uint64_t)(now_ns % BUTTRESS_NS_PER_S) / BUTTRESS_NS_PER_MS;
  buttress__au64 *slot = &m->slot[sec % BUTTRESS__RATE_SLOTS];
  uint64_t mine = VALID | ((sec & SEC_MASK) << SEC_SHIFT) | (ms << MS_SHIFT) | (count & COUNT_MASK);
  uint64_t w = atomic_load_explicit(slot, memory_order_relaxed);
  /* The first stamp of a second stays: it is the oldest, the widest base.
   * A loser of the race finds the slot current and leaves it. */
  while (!(w & VALID) || ((w >> SEC_SHIFT) & SEC_MASK) != (sec & SEC_MASK)) {
    if (atomic_compare_exchange_weak_explicit(slot, &w, mine, memory_order_relaxed,
                                              memory_order_relaxed))
      return;
  }
}

double
buttress__rate_per_second(const buttress__rate *m, int64_t now_ns, uint64_t count)
{
  if (now_ns < 0) return 0.0;
  uint64_t now_sec = seconds_of(now_ns);
  int64_t now_ms = now_ns / BUTTRESS_NS_PER_MS;
  int64_t best_age = 0;
  uint64_t best_count = 0;
  for (int i = 0; i < BUTTRESS__RATE_SLOTS; i++) {
    uint64_t w = atomic_load_explicit(&m->slot[i], memory_order_relaxed);
    if (!(w & VALID)) continue;
    uint64_t behind = (now_sec - ((w >> SEC_SHIFT) & SEC_MASK)) & SEC_MASK;
    if (behind > now_sec) continue; /* a tag from before time 0: not ours */
    int64_t stamp_ms = (int64_t)(now_sec - behind) * 1000 + (int64_t)((w >> MS_SHIFT) & 1023u);
    int64_t age = now_ms - stamp_ms;
    if (age > 0 && age <= HORIZON_MS && age > best_age) {
      best_age = age;
      best_count = w & COUNT_MASK;
    }
  }
  if (best_age == 0) return 0.0;
  uint64_t calls = (count - best_count) & COUNT_MASK;
  return (double)calls * 1000.0 / (double)best_age;
}
