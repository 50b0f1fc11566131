/* Exponential backoff with jitter.  The arithmetic saturates at the cap, and
 * jitter is drawn after the cap, so a saturated backoff still spreads its
 * clients over [0, cap] (PITFALLS #11, #12). */
#include "internal.h"

#include <math.h>
#include <string.h>

struct buttress_backoff {
  uint32_t magic;
  uint32_t abi;
  buttress_backoff_config cfg;
  buttress__au64 rng;
};

int
buttress__check_duration(int64_t ns, bool none_allowed)
{
  if (none_allowed && ns == BUTTRESS_NONE) return BUTTRESS_OK;
  return (ns >= 0 && ns <= BUTTRESS_MAX_DURATION_NS) ? BUTTRESS_OK : BUTTRESS_EINVAL;
}

void
buttress_backoff_config_init(buttress_backoff_config *cfg)
{
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->base_ns = 100 * BUTTRESS_NS_PER_MS;
  cfg->cap_ns = 10 * BUTTRESS_NS_PER_S;
  cfg->multiplier = 2.0;
  cfg->jitter = BUTTRESS_JITTER_FULL;
}

int
buttress_backoff_config_check(const buttress_backoff_config *cfg)
{
  if (cfg == NULL) return BUTTRESS_EINVAL;
  if (buttress__check_duration(cfg->base_ns, false) != 0) return BUTTRESS_EINVAL;
  if (buttress__check_duration(cfg->cap_ns, false) != 0) return BUTTRESS_EINVAL;
  if (cfg->cap_ns < cfg->base_ns) return BUTTRESS_EINVAL;
  /* written so that NaN fails too */
  if (!(cfg->multiplier >= 1.0 && isfinite(cfg->multiplier))) return BUTTRESS_EINVAL;
  if (cfg->jitter < BUTTRESS_JITTER_NONE || cfg->jitter > BUTTRESS_JITTER_DECORRELATED)
    return BUTTRESS_EINVAL;
  return BUTTRESS_OK;
}

int64_t
buttress__backoff_ceiling(const buttress_backoff_config *cfg, uint32_t retry)
{
  if (cfg->base_ns == 0) return 0;
  if (cfg->multiplier == 1.0) return cfg->base_ns;
  /* pow() overflows to +inf for large retry numbers, and inf compares
   * greater than the cap, so the result saturates instead of wrapping. */
  double d = (double)cfg->base_ns * pow(cfg->multiplier, (double)retry);
  if (!(d < (double)cfg->cap_ns)) return cfg->cap_ns;
  int64_t v = (int64_t)d;
  return v > cfg->cap_ns ? cfg->cap_ns : v;
}

int64_t
buttress__backoff_draw(const buttress_backoff_config *cfg, uint32_t retry,
                       int64_t prev_ns, uint64_t random)
{
  double u = buttress__unit(random);
  switch (cfg->jitter) {
  case BUTTRESS_JITTER_FULL: {
    int64_t capped = buttress__backoff_ceiling(cfg, retry);
    return (int64_t)(u * (double)capped);
  }
  case BUTTRESS_JITTER_EQUAL: {
    int64_t capped = buttress__backoff_ceiling(cfg, retry);
    int64_t half = capped / 2;
    return half + (int64_t)(u * (double)(capped - half));
  }
  case BUTTRESS_JITTER_DECORRELATED: {
    /* uniform in [base, min(cap, 3 * prev)]; the first retry grows from base */
    int64_t prev = prev_ns < cfg->base_ns ? cfg->base_ns : prev_ns;
    int64_t upper = prev > cfg->cap_ns / 3 ? cfg->cap_ns : prev * 3;
    if (upper < cfg->base_ns) upper = cfg->base_ns;
    int64_t v = cfg->base_ns + (int64_t)(u * (double)(upper - cfg->base_ns));
    return v > upper ? upper : v;
  }
  default:
    return buttress__backoff_ceiling(cfg, retry);
  }
}

int
buttress_backoff_ceiling(const buttress_backoff_config *cfg, uint32_t retry, int64_t *out_ns)
{
  if (out_ns == NULL || buttress_backoff_config_check(cfg) != 0) return BUTTRESS_EINVAL;
  *out_ns = buttress__backoff_ceiling(cfg, retry);
  return BUTTRESS_OK;
}

size_t
buttress_backoff_sizeof(void)
{
  return sizeof(struct buttress_backoff);
}

int
buttress_backoff_init(void *mem, size_t size, const buttress_backoff_config *cfg, uint64_t seed)
{
  if (mem == NULL || !buttress__aligned8(mem) || size < sizeof(struct buttress_backoff))
    return BUTTRESS_EINVAL;
  if (buttress_backoff_config_check(cfg) != 0) return BUTTRESS_EINVAL;
  buttress_backoff *b = mem;
  memset(b, 0, sizeof *b);
  b->magic = BUTTRESS__MAGIC_BACKOFF;
  b->abi = BUTTRESS__ABI;
  b->cfg = *cfg;
  atomic_init(&b->rng, seed);
  return BUTTRESS_OK;
}

int
buttress_backoff_next(buttress_backoff *b, uint32_t retry, int64_t prev_ns, int64_t *out_ns)
{
  if (b == NULL || out_ns == NULL || b->magic != BUTTRESS__MAGIC_BACKOFF) return BUTTRESS_EINVAL;
  *out_ns = buttress__backoff_draw(&b->cfg, retry, prev_ns, buttress__rand_next(&b->rng));
  return BUTTRESS_OK;
}

int
buttress_backoff_get_config(const buttress_backoff *b, buttress_backoff_config *out)
{
  if (b == NULL || out == NULL || b->magic != BUTTRESS__MAGIC_BACKOFF) return BUTTRESS_EINVAL;
  *out = b->cfg;
  return BUTTRESS_OK;
}
