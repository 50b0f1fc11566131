/* Sliding windows over time and over the last N calls, lock-free. */
#include "internal.h"

/* ---------------------------------------------------------- time window */

void
buttress__tring_init(buttress__tring *r, int64_t window_ns)
{
  int64_t b = window_ns / BUTTRESS_TIME_BUCKETS;
  r->bucket_ns = b > 0 ? b : 1;
  for (int i = 0; i < BUTTRESS_TIME_BUCKETS; i++) {
    atomic_init(&r->bucket[i].epoch, -1);
    for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++) atomic_init(&r->bucket[i].count[c], 0);
  }
}

static buttress__tbucket *
tring_bucket(buttress__tring *r, int64_t epoch)
{
  return &r->bucket[epoch % BUTTRESS_TIME_BUCKETS];
}

int64_t
buttress__tring_add(buttress__tring *r, int64_t now_ns, int counter, uint64_t delta)
{
  int64_t epoch = now_ns / r->bucket_ns;
  buttress__tbucket *b = tring_bucket(r, epoch);
  int64_t seen = atomic_load_explicit(&b->epoch, memory_order_acquire);
  while (seen < epoch) {
    /* The bucket holds an old epoch: whoever swaps the epoch clears it. */
    if (atomic_compare_exchange_weak_explicit(&b->epoch, &seen, epoch, memory_order_acq_rel,
                                              memory_order_acquire)) {
      for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++)
        atomic_store_explicit(&b->count[c], 0, memory_order_relaxed);
      seen = epoch;
    }
  }
  /* seen > epoch: a caller with an older now; counting it in the newer
   * bucket keeps it in the window longer, never shorter. */
  atomic_fetch_add_explicit(&b->count[counter], delta, memory_order_relaxed);
  return seen;
}

void
buttress__tring_undo(buttress__tring *r, int64_t epoch, int counter, uint64_t delta)
{
  buttress__tbucket *b = tring_bucket(r, epoch);
  /* Only if the bucket was not recycled meanwhile, which already dropped it. */
  if (atomic_load_explicit(&b->epoch, memory_order_acquire) == epoch)
    atomic_fetch_sub_explicit(&b->count[counter], delta, memory_order_relaxed);
}

void
buttress__tring_sum(const buttress__tring *r, int64_t now_ns, uint64_t out[BUTTRESS__TRING_COUNTERS])
{
  int64_t epoch = now_ns < 0 ? INT64_MAX : now_ns / r->bucket_ns;
  for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++) out[c] = 0;
  for (int i = 0; i < BUTTRESS_TIME_BUCKETS; i++) {
    const buttress__tbucket *b = &r->bucket[i];
    int64_t e = atomic_load_explicit(&b->epoch, memory_order_acquire);
    bool live = now_ns < 0 ? e >= 0 : (e >= 0 && e <= epoch && e > epoch - BUTTRESS_TIME_BUCKETS);
    if (!live) continue;
    for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++)
      out[c] += atomic_load_explicit(&b->count[c], memory_order_relaxed);
  }
}

void
buttress__tring_clear(buttress__tring *r)
{
  for (int i = 0; i < BUTTRESS_TIME_BUCKETS; i++) {
    atomic_store_explicit(&r->bucket[i].epoch, -1, memory_order_release);
    for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++)
      atomic_store_explicit(&r->bucket[i].count[c], 0, memory_order_relaxed);
  }
}

/* --------------------------------------------------------- count window */

void
buttress__cring_init(buttress__cring *r, _Atomic unsigned char *slots, uint32_t size)
{
  r->size = size;
  r->reserved_ = 0;
  atomic_init(&r->pos, 0);
  atomic_init(&r->calls, 0);
  atomic_init(&r->failures, 0);
  atomic_init(&r->slow, 0);
  for (uint32_t i = 0; i < size; i++) atomic_init(&slots[i], 0);
}

static void
cring_adjust(buttress__au64 *counter, unsigned now_set, unsigned was_set)
{
  if (now_set && !was_set) atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
  if (!now_set && was_set) atomic_fetch_sub_explicit(counter, 1, memory_order_relaxed);
}

void
buttress__cring_add(buttress__cring *r, _Atomic unsigned char *slots, unsigned bits)
{
  uint64_t i = atomic_fetch_add_explicit(&r->pos, 1, memory_order_relaxed) % r->size;
  unsigned char value = (unsigned char)(bits | BUTTRESS__SLOT_USED);
  /* Same outcome as the one it replaces (a run of successes): the counts do
   * not change, so skip the write. */
  if (atomic_load_explicit(&slots[i], memory_order_relaxed) == value) return;
  /* The exchange tells exactly which outcome this one pushed out of the
   * window, so the running counts stay exact. */
  unsigned old = atomic_exchange_explicit(&slots[i], value, memory_order_relaxed);
  cring_adjust(&r->calls, 1, old & BUTTRESS__SLOT_USED);
  cring_adjust(&r->failures, bits & BUTTRESS__SLOT_FAILED, old & BUTTRESS__SLOT_FAILED);
  cring_adjust(&r->slow, bits & BUTTRESS__SLOT_SLOW, old & BUTTRESS__SLOT_SLOW);
}

void
buttress__cring_clear(buttress__cring *r, _Atomic unsigned char *slots)
{
  for (uint32_t i = 0; i < r->size; i++) atomic_store_explicit(&slots[i], 0, memory_order_relaxed);
  atomic_store_explicit(&r->pos, 0, memory_order_relaxed);
  atomic_store_explicit(&r->calls, 0, memory_order_relaxed);
  atomic_store_explicit(&r->failures, 0, memory_order_relaxed);
  atomic_store_explicit(&r->slow, 0, memory_order_relaxed);
}
