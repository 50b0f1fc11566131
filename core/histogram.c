/* Log-linear latency histogram: values below 64 ns have a bucket each; above,
 * every power of two is split into 32 buckets, so a bucket's midpoint is
 * within 1/64 of any value in it. */
#include "internal.h"

#include <math.h>
#include <string.h>

static int
bucket_index(uint64_t v)
{
  if (v < 2 * BUTTRESS__HIST_SUB) return (int)v;
  int msb = 63 - __builtin_clzll(v);
  if (msb > BUTTRESS__HIST_MAX_MSB) return BUTTRESS__HIST_BUCKETS - 1;
  int shift = msb - BUTTRESS__HIST_SUB_BITS;
  return BUTTRESS__HIST_SUB * shift + (int)(v >> shift);
}

/* The value a bucket stands for: its midpoint. */
static int64_t
bucket_value(int idx)
{
  if (idx < 2 * BUTTRESS__HIST_SUB) return idx;
  int shift = idx / BUTTRESS__HIST_SUB - 1;
  int64_t sub = idx % BUTTRESS__HIST_SUB + BUTTRESS__HIST_SUB;
  int64_t lower = sub << shift;
  return lower + (((int64_t)1 << shift) / 2);
}

void
buttress__histogram_init(buttress_histogram *h)
{
  memset(h, 0, sizeof *h);
  h->magic = BUTTRESS__MAGIC_HIST;
  h->abi = BUTTRESS__ABI;
}

size_t
buttress_histogram_sizeof(void)
{
  return sizeof(buttress_histogram);
}

int
buttress_histogram_init(void *mem, size_t size)
{
  if (mem == NULL || !buttress__aligned8(mem) || size < sizeof(buttress_histogram))
    return BUTTRESS_EINVAL;
  buttress__histogram_init(mem);
  return BUTTRESS_OK;
}

static bool
valid(const buttress_histogram *h)
{
  return h != NULL && h->magic == BUTTRESS__MAGIC_HIST;
}

int
buttress_histogram_record(buttress_histogram *h, int64_t value_ns)
{
  if (!valid(h) || value_ns < 0) return BUTTRESS_EINVAL;
  /* relaxed throughout: statistics, read back only as a snapshot */
  atomic_fetch_add_explicit(&h->bucket[bucket_index((uint64_t)value_ns)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum, (uint64_t)value_ns, memory_order_relaxed);
  int64_t max = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (value_ns > max &&
         !atomic_compare_exchange_weak_explicit(&h->max, &max, value_ns, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
  return BUTTRESS_OK;
}

static int64_t
quantile_of(const buttress_histogram *h, double q, uint64_t total)
{
  if (total == 0) return 0;
  uint64_t rank = (uint64_t)ceil(q * (double)total);
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  int64_t max = atomic_load_explicit(&h->max, memory_order_relaxed);
  for (int i = 0; i < BUTTRESS__HIST_BUCKETS; i++) {
    seen += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    if (seen >= rank) {
      int64_t v = bucket_value(i);
      return v > max ? max : v;
    }
  }
  return max;
}

static uint64_t
bucket_total(const buttress_histogram *h)
{
  uint64_t total = 0;
  for (int i = 0; i < BUTTRESS__HIST_BUCKETS; i++)
    total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
  return total;
}

int
buttress_histogram_quantile(const buttress_histogram *h, double q, int64_t *out_ns)
{
  if (!valid(h) || out_ns == NULL || !(q >= 0.0 && q <= 1.0)) return BUTTRESS_EINVAL;
  *out_ns = quantile_of(h, q, bucket_total(h));
  return BUTTRESS_OK;
}

int
buttress_histogram_summary(const buttress_histogram *h, buttress_latency *out)
{
  if (!valid(h) || out == NULL) return BUTTRESS_EINVAL;
  /* quantiles use the bucket total, which is consistent with the buckets
   * walked even while other threads record */
  uint64_t total = bucket_total(h);
  out->count = total;
  out->p50_ns = quantile_of(h, 0.50, total);
  out->p95_ns = quantile_of(h, 0.95, total);
  out->p99_ns = quantile_of(h, 0.99, total);
  out->max_ns = total ? atomic_load_explicit(&h->max, memory_order_relaxed) : 0;
  uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
  out->mean_ns = count ? (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / (double)count : 0.0;
  return BUTTRESS_OK;
}

int
buttress_histogram_merge(buttress_histogram *dst, const buttress_histogram *src)
{
  if (!valid(dst) || !valid(src)) return BUTTRESS_EINVAL;
  for (int i = 0; i < BUTTRESS__HIST_BUCKETS; i++) {
    uint64_t n = atomic_load_explicit(&src->bucket[i], memory_order_relaxed);
    if (n) atomic_fetch_add_explicit(&dst->bucket[i], n, memory_order_relaxed);
  }
  atomic_fetch_add_explicit(&dst->count, atomic_load_explicit(&src->count, memory_order_relaxed),
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&dst->sum, atomic_load_explicit(&src->sum, memory_order_relaxed),
                            memory_order_relaxed);
  int64_t smax = atomic_load_explicit(&src->max, memory_order_relaxed);
  int64_t max = atomic_load_explicit(&dst->max, memory_order_relaxed);
  while (smax > max &&
         !atomic_compare_exchange_weak_explicit(&dst->max, &max, smax, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
  return BUTTRESS_OK;
}

int
buttress_histogram_reset(buttress_histogram *h)
{
  if (!valid(h)) return BUTTRESS_EINVAL;
  for (int i = 0; i < BUTTRESS__HIST_BUCKETS; i++)
    atomic_store_explicit(&h->bucket[i], 0, memory_order_relaxed);
  atomic_store_explicit(&h->count, 0, memory_order_relaxed);
  atomic_store_explicit(&h->sum, 0, memory_order_relaxed);
  atomic_store_explicit(&h->max, 0, memory_order_relaxed);
  return BUTTRESS_OK;
}
