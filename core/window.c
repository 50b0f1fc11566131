/* Sliding windows over time and over the last N calls, lock-free. */
#include "internal.h"

/* ---------------------------------------------------------- time window */

#define TAG_BITS 32
#define COUNT_BITS 32
#define TAG_MASK ((UINT64_C(1) << TAG_BITS) - 1)
#define COUNT_MASK ((UINT64_C(1) << COUNT_BITS) - 1)
#define TW_TAG(w) ((w) >> COUNT_BITS)
#define TW_COUNT(w) ((w) & COUNT_MASK)
#define TW_MAKE(epoch, count) ((((uint64_t)(epoch) & TAG_MASK) << COUNT_BITS) | ((count) & COUNT_MASK))

void
buttress__tring_init(buttress__tring *r, int64_t window_ns)
{
  int64_t b = window_ns / BUTTRESS_TIME_BUCKETS;
  r->bucket_ns = b > 0 ? b : 1;
  buttress__tring_clear(r);
}

/* How many epochs the word's tag is ahead of `tag` (modulo the tag width). */
static uint64_t
tag_ahead(uint64_t word_tag, uint64_t tag)
{
  return (word_tag - tag) & TAG_MASK;
}

int64_t
buttress__tring_add(buttress__tring *r, int64_t now_ns, int counter, uint64_t delta)
{
  int64_t epoch = now_ns / r->bucket_ns;
  buttress__au64 *word = &r->bucket[epoch % BUTTRESS_TIME_BUCKETS].word[counter];
  uint64_t tag = (uint64_t)epoch & TAG_MASK;
  uint64_t w = atomic_load_explicit(word, memory_order_relaxed);
  for (;;) {
    uint64_t next;
    uint64_t ahead = tag_ahead(TW_TAG(w), tag);
    if (TW_COUNT(w) != 0 && (ahead == 0 || ahead <= BUTTRESS_TIME_BUCKETS))
      /* Our epoch, or a caller with a slightly older now whose bucket was
       * already recycled: counting it in the newer bucket keeps it in the
       * window longer, never shorter. */
      next = (w & ~COUNT_MASK) | ((TW_COUNT(w) + delta) & COUNT_MASK);
    else
      next = TW_MAKE(tag, delta); /* empty, or an older epoch: recycle */
    /* release: a reader that sees this count also sees the counts this
     * thread added before it (calls before failures) */
    if (atomic_compare_exchange_weak_explicit(word, &w, next, memory_order_release,
                                              memory_order_relaxed))
      break;
  }
  int64_t latest = atomic_load_explicit(&r->latest, memory_order_relaxed);
  while (epoch > latest && !atomic_compare_exchange_weak_explicit(&r->latest, &latest, epoch,
                                                                  memory_order_relaxed,
                                                                  memory_order_relaxed)) {
  }
  return epoch;
}

void
buttress__tring_undo(buttress__tring *r, int64_t epoch, int counter, uint64_t delta)
{
  buttress__au64 *word = &r->bucket[epoch % BUTTRESS_TIME_BUCKETS].word[counter];
  uint64_t tag = (uint64_t)epoch & TAG_MASK;
  uint64_t w = atomic_load_explicit(word, memory_order_relaxed);
  /* Only while the bucket still holds that epoch: recycling dropped it. */
  while (TW_TAG(w) == tag && TW_COUNT(w) >= delta && TW_COUNT(w) != 0) {
    if (atomic_compare_exchange_weak_explicit(word, &w, w - delta, memory_order_relaxed,
                                              memory_order_relaxed))
      return;
  }
}

void
buttress__tring_sum(const buttress__tring *r, int64_t now_ns, uint64_t out[BUTTRESS__TRING_COUNTERS])
{
  int64_t epoch = now_ns >= 0 ? now_ns / r->bucket_ns
                              : atomic_load_explicit(&r->latest, memory_order_relaxed);
  for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++) out[c] = 0;
  /* Counter 0 (calls) is added before the others and read after them, with
   * acquire/release between, so a sum never shows more failures than calls. */
  for (int c = BUTTRESS__TRING_COUNTERS - 1; c >= 0; c--) {
    for (int i = 0; i < BUTTRESS_TIME_BUCKETS; i++) {
      uint64_t w = atomic_load_explicit(&r->bucket[i].word[c], memory_order_acquire);
      if (TW_COUNT(w) == 0 || epoch < 0) continue;
      /* The one epoch of the window that lives in bucket i. */
      int64_t back = ((epoch - i) % BUTTRESS_TIME_BUCKETS + BUTTRESS_TIME_BUCKETS) %
                     BUTTRESS_TIME_BUCKETS;
      int64_t mine = epoch - back;
      if (mine < 0 || TW_TAG(w) != ((uint64_t)mine & TAG_MASK)) continue;
      out[c] += TW_COUNT(w);
    }
  }
}

void
buttress__tring_clear(buttress__tring *r)
{
  atomic_store_explicit(&r->latest, -1, memory_order_relaxed);
  for (int i = 0; i < BUTTRESS_TIME_BUCKETS; i++)
    for (int c = 0; c < BUTTRESS__TRING_COUNTERS; c++)
      atomic_store_explicit(&r->bucket[i].word[c], 0, memory_order_relaxed);
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

/* release: pairs with the acquire loads of buttress__cring_read, which reads
 * in the opposite order to the writes (calls are adjusted first) */
static void
cring_adjust(buttress__au64 *counter, unsigned now_set, unsigned was_set)
{
  if (now_set && !was_set) atomic_fetch_add_explicit(counter, 1, memory_order_release);
  if (!now_set && was_set) atomic_fetch_sub_explicit(counter, 1, memory_order_release);
}

void
buttress__cring_read(const buttress__cring *r, uint64_t *calls, uint64_t *failures, uint64_t *slow)
{
  *slow = atomic_load_explicit(&r->slow, memory_order_acquire);
  *failures = atomic_load_explicit(&r->failures, memory_order_acquire);
  *calls = atomic_load_explicit(&r->calls, memory_order_acquire);
}

void
buttress__cring_put(buttress__cring *r, _Atomic unsigned char *slots, uint64_t i, unsigned bits)
{
  unsigned char value = (unsigned char)(bits | BUTTRESS__SLOT_USED);
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
  /* pos is kept: it also counts lifetime outcomes */
  for (uint32_t i = 0; i < r->size; i++) atomic_store_explicit(&slots[i], 0, memory_order_relaxed);
  atomic_store_explicit(&r->calls, 0, memory_order_relaxed);
  atomic_store_explicit(&r->failures, 0, memory_order_relaxed);
  atomic_store_explicit(&r->slow, 0, memory_order_relaxed);
}
