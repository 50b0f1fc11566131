/* Retry budget: within a sliding window, retries may number at most
 * min_per_second * window + ratio * calls. */
#include "internal.h"

#include <math.h>
#include <string.h>

enum { CALLS = 0, RETRIES = 1 };

struct buttress_budget {
  uint32_t magic;
  uint32_t abi;
  buttress_budget_config cfg;
  double reserve; /* min_per_second * window seconds */
  buttress__au64 deposits, withdrawals, rejections;
  buttress__tring ring;
};

void
buttress_budget_config_init(buttress_budget_config *cfg)
{
  if (cfg == NULL) return;
  cfg->ratio = 0.2;
  cfg->min_per_second = 10.0;
  cfg->window_ns = 10 * BUTTRESS_NS_PER_S;
}

int
buttress_budget_config_check(const buttress_budget_config *cfg)
{
  if (cfg == NULL) return BUTTRESS_EINVAL;
  if (!(cfg->ratio >= 0.0 && isfinite(cfg->ratio))) return BUTTRESS_EINVAL;
  if (!(cfg->min_per_second >= 0.0 && isfinite(cfg->min_per_second))) return BUTTRESS_EINVAL;
  if (cfg->window_ns < BUTTRESS_MIN_WINDOW_NS || cfg->window_ns > BUTTRESS_MAX_DURATION_NS)
    return BUTTRESS_EINVAL;
  return BUTTRESS_OK;
}

size_t
buttress_budget_sizeof(void)
{
  return sizeof(struct buttress_budget);
}

int
buttress_budget_init(void *mem, size_t size, const buttress_budget_config *cfg)
{
  if (mem == NULL || !buttress__aligned8(mem) || size < sizeof(struct buttress_budget))
    return BUTTRESS_EINVAL;
  if (buttress_budget_config_check(cfg) != 0) return BUTTRESS_EINVAL;
  buttress_budget *b = mem;
  memset(b, 0, sizeof *b);
  b->magic = BUTTRESS__MAGIC_BUDGET;
  b->abi = BUTTRESS__ABI;
  b->cfg = *cfg;
  b->reserve = cfg->min_per_second * ((double)cfg->window_ns / (double)BUTTRESS_NS_PER_S);
  buttress__tring_init(&b->ring, cfg->window_ns);
  return BUTTRESS_OK;
}

static bool
valid(const buttress_budget *b)
{
  return b != NULL && b->magic == BUTTRESS__MAGIC_BUDGET;
}

int
buttress__budget_get_config(const buttress_budget *b, buttress_budget_config *out)
{
  if (!valid(b) || out == NULL) return BUTTRESS_EINVAL;
  *out = b->cfg;
  return BUTTRESS_OK;
}

int
buttress_budget_deposit(buttress_budget *b, int64_t now_ns)
{
  if (!valid(b) || now_ns < BUTTRESS_NO_CLOCK) return BUTTRESS_EINVAL;
  if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
  buttress__tring_add(&b->ring, now_ns, CALLS, 1);
  atomic_fetch_add_explicit(&b->deposits, 1, memory_order_relaxed);
  return BUTTRESS_OK;
}

static double
allowance(const buttress_budget *b, const uint64_t sums[BUTTRESS__TRING_COUNTERS])
{
  return b->reserve + b->cfg.ratio * (double)sums[CALLS];
}

int
buttress_budget_withdraw(buttress_budget *b, int64_t now_ns)
{
  if (!valid(b) || now_ns < BUTTRESS_NO_CLOCK) return BUTTRESS_EINVAL;
  if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
  /* Take first, then check: every racing thread sees its own retry and all
   * earlier ones, so the total never passes the allowance (a race can only
   * refuse one that would have fitted). */
  int64_t epoch = buttress__tring_add(&b->ring, now_ns, RETRIES, 1);
  uint64_t sums[BUTTRESS__TRING_COUNTERS];
  buttress__tring_sum(&b->ring, now_ns, sums);
  if ((double)sums[RETRIES] > allowance(b, sums)) {
    buttress__tring_undo(&b->ring, epoch, RETRIES, 1);
    atomic_fetch_add_explicit(&b->rejections, 1, memory_order_relaxed);
    return BUTTRESS_BUDGET;
  }
  atomic_fetch_add_explicit(&b->withdrawals, 1, memory_order_relaxed);
  return BUTTRESS_OK;
}

int
buttress_budget_metrics_get(const buttress_budget *b, int64_t now_ns, buttress_budget_metrics *out)
{
  if (!valid(b) || out == NULL) return BUTTRESS_EINVAL;
  uint64_t sums[BUTTRESS__TRING_COUNTERS];
  buttress__tring_sum(&b->ring, now_ns, sums);
  out->deposits = atomic_load_explicit(&b->deposits, memory_order_relaxed);
  out->withdrawals = atomic_load_explicit(&b->withdrawals, memory_order_relaxed);
  out->rejections = atomic_load_explicit(&b->rejections, memory_order_relaxed);
  out->window_calls = sums[CALLS];
  out->window_retries = sums[RETRIES];
  double left = allowance(b, sums) - (double)sums[RETRIES];
  out->available = left > 0 ? left : 0;
  return BUTTRESS_OK;
}
