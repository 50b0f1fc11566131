/* Retry decisions.  The caller runs the loop and sleeps; this file only
 * answers "again after D?" or "give up, because ...". */
#include "internal.h"

#include <string.h>

struct buttress_retry {
  uint32_t magic;
  uint32_t abi;
  buttress_retry_config cfg;
  buttress__au64 rng;
  /* statistics: relaxed atomics, exact totals */
  buttress__au64 calls, attempts, retries, successes, failures;
  buttress__au64 giveups_attempts, giveups_deadline, giveups_budget;
  buttress__rate rate;
  buttress_histogram latency; /* of whole calls, fed by observe() */
};

void
buttress_retry_config_init(buttress_retry_config *cfg)
{
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->attempts = 3;
  cfg->deadline_ns = BUTTRESS_NONE;
  buttress_backoff_config_init(&cfg->backoff);
}

int
buttress_retry_config_check(const buttress_retry_config *cfg)
{
  if (cfg == NULL || cfg->attempts < 1) return BUTTRESS_EINVAL;
  if (buttress__check_duration(cfg->deadline_ns, true) != 0) return BUTTRESS_EINVAL;
  return buttress_backoff_config_check(&cfg->backoff);
}

size_t
buttress_retry_sizeof(void)
{
  return sizeof(struct buttress_retry);
}

int
buttress_retry_init(void *mem, size_t size, const buttress_retry_config *cfg, uint64_t seed)
{
  if (mem == NULL || !buttress__aligned8(mem) || size < sizeof(struct buttress_retry))
    return BUTTRESS_EINVAL;
  if (buttress_retry_config_check(cfg) != 0) return BUTTRESS_EINVAL;
  buttress_retry *r = mem;
  memset(r, 0, sizeof *r);
  r->magic = BUTTRESS__MAGIC_RETRY;
  r->abi = BUTTRESS__ABI;
  r->cfg = *cfg;
  atomic_init(&r->rng, seed);
  buttress__rate_init(&r->rate);
  buttress__histogram_init(&r->latency);
  return BUTTRESS_OK;
}

static bool
valid(const buttress_retry *r)
{
  return r != NULL && r->magic == BUTTRESS__MAGIC_RETRY;
}

int
buttress_retry_get_config(const buttress_retry *r, buttress_retry_config *out)
{
  if (!valid(r) || out == NULL) return BUTTRESS_EINVAL;
  *out = r->cfg;
  return BUTTRESS_OK;
}

static void
count(buttress__au64 *counter)
{
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

static void
meter(buttress_retry *r, int64_t now_ns)
{
  if (buttress__rate_due(&r->rate, now_ns))
    buttress__rate_stamp(&r->rate, now_ns, atomic_load_explicit(&r->calls, memory_order_relaxed));
}

static int
give_up(buttress_retry *r, buttress_retry_call *call, int reason)
{
  call->reason = reason;
  call->delay_ns = BUTTRESS_NONE;
  count(reason == BUTTRESS_EXHAUSTED  ? &r->giveups_attempts
        : reason == BUTTRESS_DEADLINE ? &r->giveups_deadline
                                      : &r->giveups_budget);
  return reason;
}

int
buttress_retry_begin(buttress_retry *r, buttress_retry_call *call, buttress_budget *budget,
                     int64_t outer_deadline_ns, int64_t now_ns)
{
  if (!valid(r) || call == NULL || outer_deadline_ns < BUTTRESS_NONE) return BUTTRESS_EINVAL;
  bool timed = r->cfg.deadline_ns >= 0 || outer_deadline_ns >= 0 || budget != NULL;
  if (timed && now_ns < 0) return BUTTRESS_NEED_CLOCK;

  int64_t deadline = BUTTRESS_NONE;
  if (r->cfg.deadline_ns >= 0) deadline = buttress__add_sat(now_ns, r->cfg.deadline_ns);
  /* An enclosing call's deadline bounds this one too: the earlier wins. */
  if (outer_deadline_ns >= 0 && (deadline < 0 || outer_deadline_ns < deadline))
    deadline = outer_deadline_ns;

  memset(call, 0, sizeof *call);
  call->started_ns = now_ns;
  call->deadline_ns = deadline;
  call->delay_ns = BUTTRESS_NONE;
  call->prev_delay_ns = BUTTRESS_NONE;
  count(&r->calls);
  meter(r, now_ns);
  if (budget != NULL) {
    int rc = buttress_budget_deposit(budget, now_ns);
    if (rc != BUTTRESS_OK) return rc;
  }
  if (deadline >= 0 && now_ns >= deadline) return give_up(r, call, BUTTRESS_DEADLINE);
  call->attempt = 1;
  count(&r->attempts);
  return BUTTRESS_OK;
}

int
buttress_retry_next(buttress_retry *r, buttress_retry_call *call, buttress_budget *budget,
                    int64_t override_delay_ns, int64_t now_ns)
{
  if (!valid(r) || call == NULL || call->attempt == 0 || override_delay_ns < BUTTRESS_NONE)
    return BUTTRESS_EINVAL;
  if ((call->deadline_ns >= 0 || budget != NULL) && now_ns < 0) return BUTTRESS_NEED_CLOCK;
  if (call->attempt >= r->cfg.attempts) return give_up(r, call, BUTTRESS_EXHAUSTED);

  int64_t delay = override_delay_ns;
  if (delay < 0)
    delay = buttress__backoff_draw(&r->cfg.backoff, call->attempt - 1, call->prev_delay_ns,
                                   buttress__rand_next(&r->rng));
  /* Never sleep into the deadline: a retry that could only start at or after
   * it is given up now, with the last error (PITFALLS #19). */
  if (call->deadline_ns >= 0 && buttress__add_sat(now_ns, delay) >= call->deadline_ns)
    return give_up(r, call, BUTTRESS_DEADLINE);
  /* Spent when decided, before the sleep, so that retries waiting in backoff
   * count against the budget (PITFALLS #18). */
  if (budget != NULL && buttress_budget_withdraw(budget, now_ns) != BUTTRESS_OK)
    return give_up(r, call, BUTTRESS_BUDGET);

  call->delay_ns = delay;
  call->prev_delay_ns = delay;
  call->attempt++;
  count(&r->retries);
  count(&r->attempts);
  return BUTTRESS_OK;
}

int
buttress_retry_resume(buttress_retry *r, buttress_retry_call *call, int64_t now_ns)
{
  if (!valid(r) || call == NULL || call->attempt == 0 || call->reason != 0)
    return BUTTRESS_EINVAL; /* not begun, or already given up */
  if (call->deadline_ns < 0 || call->attempt == 1) return BUTTRESS_OK;
  if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
  if (now_ns < call->deadline_ns) return BUTTRESS_OK;
  /* The sleep overran the deadline: the attempt next() counted never
   * starts. */
  call->attempt--;
  atomic_fetch_sub_explicit(&r->attempts, 1, memory_order_relaxed);
  return give_up(r, call, BUTTRESS_DEADLINE);
}

int
buttress_retry_end(buttress_retry *r, buttress_retry_call *call, int outcome)
{
  if (!valid(r) || call == NULL) return BUTTRESS_EINVAL;
  if (outcome == BUTTRESS_SUCCESS)
    count(&r->successes);
  else if (outcome == BUTTRESS_FAILURE)
    count(&r->failures);
  else
    return BUTTRESS_EINVAL;
  return BUTTRESS_OK;
}

int
buttress_retry_remaining(const buttress_retry_call *call, int64_t now_ns, int64_t *out_ns)
{
  if (call == NULL || out_ns == NULL) return BUTTRESS_EINVAL;
  if (call->deadline_ns < 0) {
    *out_ns = BUTTRESS_NONE;
    return BUTTRESS_OK;
  }
  if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
  *out_ns = call->deadline_ns > now_ns ? call->deadline_ns - now_ns : 0;
  return BUTTRESS_OK;
}

int
buttress_retry_observe(buttress_retry *r, int64_t duration_ns, int64_t now_ns)
{
  if (!valid(r) || duration_ns < BUTTRESS_NO_CLOCK || now_ns < BUTTRESS_NO_CLOCK)
    return BUTTRESS_EINVAL;
  if (duration_ns >= 0) buttress_histogram_record(&r->latency, duration_ns);
  meter(r, now_ns);
  return BUTTRESS_OK;
}

int
buttress_retry_metrics_get(buttress_retry *r, int64_t now_ns, buttress_retry_metrics *out)
{
  if (!valid(r) || out == NULL) return BUTTRESS_EINVAL;
  memset(out, 0, sizeof *out);
  meter(r, now_ns);
  out->calls = atomic_load_explicit(&r->calls, memory_order_relaxed);
  out->attempts = atomic_load_explicit(&r->attempts, memory_order_relaxed);
  out->retries = atomic_load_explicit(&r->retries, memory_order_relaxed);
  out->successes = atomic_load_explicit(&r->successes, memory_order_relaxed);
  out->failures = atomic_load_explicit(&r->failures, memory_order_relaxed);
  out->giveups_attempts = atomic_load_explicit(&r->giveups_attempts, memory_order_relaxed);
  out->giveups_deadline = atomic_load_explicit(&r->giveups_deadline, memory_order_relaxed);
  out->giveups_budget = atomic_load_explicit(&r->giveups_budget, memory_order_relaxed);
  out->calls_per_second = buttress__rate_per_second(&r->rate, now_ns, out->calls);
  buttress_histogram_summary(&r->latency, &out->latency);
  return BUTTRESS_OK;
}
