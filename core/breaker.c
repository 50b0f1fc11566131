/* Circuit breaker.
 *
 * The state and its generation share one 64-bit word, so one CAS both moves
 * the breaker and invalidates every ticket issued before: an outcome from an
 * earlier generation is stale and changes nothing (PITFALLS #3).  The CAS
 * winner, and only it, is told of the transition (ticket->from/to).
 *
 *   state word:  generation (45 bits) | field (16 bits) | state (3 bits)
 *   field:       closed: the consecutive-failure streak;
 *                half-open: trial successes so far
 *
 * Half-open trials are K permit slots; a slot holds the generation (low 20
 * bits) it was claimed in and its expiry in whole milliseconds, so a permit
 * whose caller vanished frees itself (PITFALLS #2) and a permit of an earlier
 * generation never counts in a later one.  The open period's end is published
 * the same way, tagged with the generation that opened.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define STATE_BITS 3
#define FIELD_BITS 16
#define FIELD_MAX ((1u << FIELD_BITS) - 1)
#define GEN_SHIFT (STATE_BITS + FIELD_BITS)

#define W_STATE(w) ((int)((w) & ((1u << STATE_BITS) - 1)))
#define W_FIELD(w) ((uint32_t)(((w) >> STATE_BITS) & FIELD_MAX))
#define W_GEN(w) ((w) >> GEN_SHIFT)
#define W_MAKE(state, field, gen) \
  (((uint64_t)(gen) << GEN_SHIFT) | ((uint64_t)(field) << STATE_BITS) | (uint64_t)(state))

/* permit slots and the open word: gen tag (20 bits) | milliseconds (44 bits) */
#define TAG_SHIFT 44
#define TAG_MASK ((UINT64_C(1) << 20) - 1)
#define MS_MASK ((UINT64_C(1) << TAG_SHIFT) - 1)
#define T_MAKE(gen, ms) ((((gen) & TAG_MASK) << TAG_SHIFT) | ((uint64_t)(ms) & MS_MASK))
#define T_TAG(t) ((t) >> TAG_SHIFT)

/* The time a tagged word holds, saturating far in the future. */
static int64_t
T_NS(uint64_t t)
{
  int64_t ms = (int64_t)(t & MS_MASK);
  return ms > INT64_MAX / BUTTRESS_NS_PER_MS ? INT64_MAX : ms * BUTTRESS_NS_PER_MS;
}

struct buttress_breaker {
  uint32_t magic;
  uint32_t abi;
  uint64_t size;
  buttress_breaker_config cfg;
  int64_t trial_timeout_ns; /* resolved from BUTTRESS_NONE */
  int32_t timed;            /* success records want the clock: ticket flag */
  int32_t rate_rules;       /* failure_rate or slow_rate is on */
  uint32_t permits_offset;  /* from the start of this struct */
  uint32_t slots_offset;
  BUTTRESS__PAD(pad0_, 0);

  /* Read by every call: alone on its cache line. */
  buttress__au64 state;
  BUTTRESS__PAD(pad1_, 8);

  buttress__au64 open_word;
  _Atomic uint32_t trips; /* openings since the breaker last closed */
  uint32_t reserved_;
  buttress__au64 rng;
  BUTTRESS__PAD(pad2_, 24);

  /* Written by every call.  Successes have no counter of their own: each
   * success or failure takes a window position with one atomic add, so
   * successes = positions - failures, and the success path owns one cache
   * line, not two. */
  buttress__cring count_window;
  BUTTRESS__PAD(pad3_, sizeof(buttress__cring));
  buttress__au64 failures, excluded, cancelled, stale, rejected, slow;
  buttress__au64 transitions[BUTTRESS_STATE_COUNT][BUTTRESS_STATE_COUNT];
  buttress__ai64 last_transition_ns[BUTTRESS_STATE_COUNT][BUTTRESS_STATE_COUNT];

  buttress__tring time_window;
  buttress__rate rate;
  buttress_histogram latency;
  /* followed by: permits (uint64 x half_open_calls), count slots (bytes) */
};

enum { TW_CALLS = 0, TW_FAILURES = 1, TW_SLOW = 2 };

static buttress__au64 *
permits(buttress_breaker *br)
{
  return (buttress__au64 *)((char *)br + br->permits_offset);
}

static _Atomic unsigned char *
slots(buttress_breaker *br)
{
  return (_Atomic unsigned char *)((char *)br + br->slots_offset);
}

void
buttress_breaker_config_init(buttress_breaker_config *cfg)
{
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->failure_threshold = 5;
  cfg->half_open_calls = 1;
  cfg->success_threshold = 1;
  cfg->window_size = 100;
  cfg->min_calls = 10;
  cfg->window_type = BUTTRESS_WINDOW_COUNT;
  cfg->window_ns = 100 * BUTTRESS_NS_PER_S;
  cfg->reset_timeout_ns = 30 * BUTTRESS_NS_PER_S;
  cfg->trial_timeout_ns = BUTTRESS_NONE;
  cfg->slow_call_ns = BUTTRESS_NONE;
  cfg->failure_rate = 0.0;
  cfg->slow_rate = 0.0;
  cfg->use_reset_backoff = 0;
  buttress_backoff_config_init(&cfg->reset_backoff);
}

static bool
rate_ok(double rate)
{
  return rate == 0.0 || (rate > 0.0 && rate <= 1.0);
}

int
buttress_breaker_config_check(const buttress_breaker_config *cfg)
{
  if (cfg == NULL) return BUTTRESS_EINVAL;
  if (cfg->failure_threshold > BUTTRESS_MAX_THRESHOLD) return BUTTRESS_EINVAL;
  if (cfg->success_threshold < 1 || cfg->success_threshold > BUTTRESS_MAX_THRESHOLD)
    return BUTTRESS_EINVAL;
  if (cfg->half_open_calls < 1 || cfg->half_open_calls > BUTTRESS_MAX_HALF_OPEN_CALLS)
    return BUTTRESS_EINVAL;
  if (cfg->window_size < 1 || cfg->window_size > BUTTRESS_MAX_WINDOW_CALLS) return BUTTRESS_EINVAL;
  if (cfg->min_calls < 1) return BUTTRESS_EINVAL;
  if (cfg->window_type != BUTTRESS_WINDOW_COUNT && cfg->window_type != BUTTRESS_WINDOW_TIME)
    return BUTTRESS_EINVAL;
  if (cfg->window_ns < BUTTRESS_MIN_WINDOW_NS || cfg->window_ns > BUTTRESS_MAX_DURATION_NS)
    return BUTTRESS_EINVAL;
  if (cfg->reset_timeout_ns <= 0 || cfg->reset_timeout_ns > BUTTRESS_MAX_DURATION_NS)
    return BUTTRESS_EINVAL;
  if (cfg->trial_timeout_ns != BUTTRESS_NONE &&
      (cfg->trial_timeout_ns <= 0 || cfg->trial_timeout_ns > BUTTRESS_MAX_DURATION_NS))
    return BUTTRESS_EINVAL;
  if (buttress__check_duration(cfg->slow_call_ns, true) != 0) return BUTTRESS_EINVAL;
  if (!rate_ok(cfg->failure_rate) || !rate_ok(cfg->slow_rate)) return BUTTRESS_EINVAL;
  if (cfg->slow_rate > 0.0 && cfg->slow_call_ns < 0) return BUTTRESS_EINVAL;
  if (cfg->use_reset_backoff != 0 && cfg->use_reset_backoff != 1) return BUTTRESS_EINVAL;
  if (cfg->use_reset_backoff && buttress_backoff_config_check(&cfg->reset_backoff) != 0)
    return BUTTRESS_EINVAL;
  return BUTTRESS_OK;
}

static size_t
permits_offset(void)
{
  return (sizeof(struct buttress_breaker) + 7) & ~(size_t)7;
}

size_t
buttress_breaker_sizeof(const buttress_breaker_config *cfg)
{
  if (buttress_breaker_config_check(cfg) != 0) return 0;
  size_t slots = cfg->window_type == BUTTRESS_WINDOW_COUNT ? cfg->window_size : 0;
  size_t end = permits_offset() + (size_t)cfg->half_open_calls * sizeof(uint64_t) + slots;
  return (end + 7) & ~(size_t)7;
}

int
buttress_breaker_init(void *mem, size_t size, const buttress_breaker_config *cfg)
{
  size_t need = buttress_breaker_sizeof(cfg);
  if (need == 0 || mem == NULL || !buttress__aligned8(mem) || size < need) return BUTTRESS_EINVAL;
  buttress_breaker *br = mem;
  memset(br, 0, need);
  br->magic = BUTTRESS__MAGIC_BREAKER;
  br->abi = BUTTRESS__ABI;
  br->size = need;
  br->cfg = *cfg;
  br->trial_timeout_ns = cfg->trial_timeout_ns == BUTTRESS_NONE ? cfg->reset_timeout_ns
                                                                 : cfg->trial_timeout_ns;
  br->rate_rules = cfg->failure_rate > 0.0 || cfg->slow_rate > 0.0;
  /* A success can trip a rate rule, and a transition needs the time. */
  br->timed = cfg->slow_call_ns >= 0 || cfg->window_type == BUTTRESS_WINDOW_TIME || br->rate_rules;
  br->permits_offset = (uint32_t)permits_offset();
  br->slots_offset = br->permits_offset + cfg->half_open_calls * (uint32_t)sizeof(uint64_t);
  atomic_init(&br->state, W_MAKE(BUTTRESS_STATE_CLOSED, 0, 1));
  atomic_init(&br->rng, buttress__mix64((uint64_t)(uintptr_t)mem ^ (uint64_t)need));
  for (int f = 0; f < BUTTRESS_STATE_COUNT; f++)
    for (int t = 0; t < BUTTRESS_STATE_COUNT; t++)
      atomic_init(&br->last_transition_ns[f][t], BUTTRESS_NONE);
  buttress__cring_init(&br->count_window, slots(br),
                       cfg->window_type == BUTTRESS_WINDOW_COUNT ? cfg->window_size : 0);
  buttress__tring_init(&br->time_window, cfg->window_ns);
  buttress__histogram_init(&br->latency);
  buttress__rate_init(&br->rate);
  return BUTTRESS_OK;
}

static bool
valid(const buttress_breaker *br)
{
  return br != NULL && br->magic == BUTTRESS__MAGIC_BREAKER;
}

int
buttress_breaker_get_config(const buttress_breaker *br, buttress_breaker_config *out)
{
  if (!valid(br) || out == NULL) return BUTTRESS_EINVAL;
  *out = br->cfg;
  return BUTTRESS_OK;
}

static void
count(buttress__au64 *counter)
{
  /* relaxed: statistics; exact totals need atomicity, not ordering */
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

static void
clear_ticket(buttress_ticket *t)
{
  t->from = BUTTRESS_STATE_NONE;
  t->to = BUTTRESS_STATE_NONE;
}

/* Bookkeeping after a transition this caller committed. */
static void
note_transition(buttress_breaker *br, int from, int to, int64_t now_ns, buttress_ticket *t)
{
  count(&br->transitions[from][to]);
  atomic_store_explicit(&br->last_transition_ns[from][to], now_ns, memory_order_relaxed);
  if (t != NULL) {
    t->from = from;
    t->to = to;
  }
}

static void
clear_windows(buttress_breaker *br)
{
  if (br->cfg.window_type == BUTTRESS_WINDOW_COUNT)
    buttress__cring_clear(&br->count_window, slots(br));
  else
    buttress__tring_clear(&br->time_window);
}

/* The new generation `gen` has just opened: publish when trials may begin. */
static void
on_opened(buttress_breaker *br, uint64_t gen, int from, int64_t now_ns, buttress_ticket *t)
{
  uint32_t trip = atomic_fetch_add_explicit(&br->trips, 1, memory_order_relaxed);
  int64_t period = br->cfg.reset_timeout_ns;
  if (br->cfg.use_reset_backoff) {
    period = buttress__backoff_draw(&br->cfg.reset_backoff, trip, BUTTRESS_NONE,
                                    buttress__rand_next(&br->rng));
    if (period <= 0) period = 1;
  }
  int64_t until = buttress__add_sat(now_ns, period);
  /* release: a reader that sees this tag also sees the transition */
  atomic_store_explicit(&br->open_word, T_MAKE(gen, buttress__ceil_ms(until)),
                        memory_order_release);
  note_transition(br, from, BUTTRESS_STATE_OPEN, now_ns, t);
}

static void
on_closed(buttress_breaker *br, int from, int64_t now_ns, buttress_ticket *t)
{
  atomic_store_explicit(&br->trips, 0, memory_order_relaxed);
  clear_windows(br);
  if (from != BUTTRESS_STATE_CLOSED) note_transition(br, from, BUTTRESS_STATE_CLOSED, now_ns, t);
}

/* Half-open: claim one of the K permit slots for generation gen(w). */
static int
claim_permit(buttress_breaker *br, uint64_t w, int64_t now_ns, buttress_ticket *t, bool *moved)
{
  buttress__au64 *slot = permits(br);
  uint64_t tag = W_GEN(w) & TAG_MASK;
  uint64_t mine = T_MAKE(tag, buttress__ceil_ms(buttress__add_sat(now_ns, br->trial_timeout_ns)));
  int64_t earliest = INT64_MAX;
  for (uint32_t i = 0; i < br->cfg.half_open_calls; i++) {
    uint64_t s = atomic_load_explicit(&slot[i], memory_order_acquire);
    for (;;) {
      bool held = s != 0 && T_TAG(s) == tag && T_NS(s) > now_ns;
      if (held) {
        if (T_NS(s) < earliest) earliest = T_NS(s);
        break;
      }
      if (atomic_compare_exchange_weak_explicit(&slot[i], &s, mine, memory_order_acq_rel,
                                                memory_order_acquire)) {
        /* The breaker may have moved on while we claimed: then the permit
         * belongs to no live generation; give it back and start over. */
        uint64_t now_w = atomic_load_explicit(&br->state, memory_order_acquire);
        if (W_STATE(now_w) != BUTTRESS_STATE_HALF_OPEN || W_GEN(now_w) != W_GEN(w)) {
          uint64_t expect = mine;
          atomic_compare_exchange_strong_explicit(&slot[i], &expect, 0, memory_order_acq_rel,
                                                  memory_order_relaxed);
          *moved = true;
          return BUTTRESS_OPEN;
        }
        t->word = w;
        t->permit = (int32_t)i;
        t->permit_word = mine;
        t->flags = BUTTRESS_TICKET_TIMED;
        return BUTTRESS_OK;
      }
    }
  }
  count(&br->rejected);
  t->retry_after_ns = earliest == INT64_MAX ? br->trial_timeout_ns : earliest - now_ns;
  return BUTTRESS_OPEN;
}

int
buttress_breaker_allow(buttress_breaker *br, int64_t now_ns, buttress_ticket *t)
{
  if (!valid(br) || t == NULL) return BUTTRESS_EINVAL;
  clear_ticket(t);
  t->permit = -1;
  t->permit_word = 0;
  t->retry_after_ns = BUTTRESS_NONE;
  /* acquire: pairs with the release of whoever moved the breaker */
  uint64_t w = atomic_load_explicit(&br->state, memory_order_acquire);
  /* The common case first, each field written once: a predicted branch
   * where the switch below is an indirect jump. */
  if (W_STATE(w) == BUTTRESS_STATE_CLOSED) {
    t->word = w;
    t->flags = br->timed ? BUTTRESS_TICKET_TIMED : 0;
    return BUTTRESS_OK;
  }
  t->flags = 0;
  for (;; w = atomic_load_explicit(&br->state, memory_order_acquire)) {
    switch (W_STATE(w)) {
    case BUTTRESS_STATE_CLOSED:
      t->word = w;
      t->flags = br->timed ? BUTTRESS_TICKET_TIMED : 0;
      return BUTTRESS_OK;
    case BUTTRESS_STATE_DISABLED:
      t->word = w;
      /* timed as when closed, so that slow calls and latency stay exact
       * while the breaker is disabled */
      t->flags = br->timed ? BUTTRESS_TICKET_TIMED : 0;
      return BUTTRESS_OK;
    case BUTTRESS_STATE_FORCED_OPEN:
      count(&br->rejected);
      t->retry_after_ns = BUTTRESS_NONE;
      return BUTTRESS_OPEN;
    case BUTTRESS_STATE_OPEN: {
      if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
      uint64_t ow = atomic_load_explicit(&br->open_word, memory_order_acquire);
      if (T_TAG(ow) != (W_GEN(w) & TAG_MASK)) {
        /* The period is not published: the opener is between its CAS and
         * its store, or was killed there.  Publish one from here so that a
         * dead opener cannot leave the breaker open forever; a live one
         * overwrites it a moment later with the same length. */
        uint64_t mine = T_MAKE(W_GEN(w),
                               buttress__ceil_ms(buttress__add_sat(now_ns, br->cfg.reset_timeout_ns)));
        atomic_compare_exchange_strong_explicit(&br->open_word, &ow, mine, memory_order_acq_rel,
                                                memory_order_acquire);
        continue;
      }
      if (now_ns < T_NS(ow)) {
        count(&br->rejected);
        t->retry_after_ns = T_NS(ow) - now_ns;
        return BUTTRESS_OPEN;
      }
      uint64_t half = W_MAKE(BUTTRESS_STATE_HALF_OPEN, 0, W_GEN(w) + 1);
      if (atomic_compare_exchange_strong_explicit(&br->state, &w, half, memory_order_acq_rel,
                                                  memory_order_acquire))
        note_transition(br, BUTTRESS_STATE_OPEN, BUTTRESS_STATE_HALF_OPEN, now_ns, t);
      continue; /* admitted or not, as a half-open breaker decides */
    }
    case BUTTRESS_STATE_HALF_OPEN: {
      if (now_ns < 0) return BUTTRESS_NEED_CLOCK;
      bool moved = false;
      int rc = claim_permit(br, w, now_ns, t, &moved);
      if (moved) continue;
      return rc;
    }
    default:
      return BUTTRESS_EINVAL; /* corrupted state word */
    }
  }
}

static void
give_back_permit(buttress_breaker *br, buttress_ticket *t)
{
  if (t->permit < 0 || (uint32_t)t->permit >= br->cfg.half_open_calls) return;
  uint64_t expect = t->permit_word;
  /* Fails harmlessly when the permit expired and someone else holds it. */
  atomic_compare_exchange_strong_explicit(&permits(br)[t->permit], &expect, 0,
                                          memory_order_acq_rel, memory_order_relaxed);
  t->permit = -1;
}

/* Feeds the window with a success or failure (in every state: the count
 * window's position is also the lifetime outcome count); when `evaluate`,
 * true if a rate rule now says "open". */
static bool
window_add(buttress_breaker *br, bool failed, bool slow, bool evaluate, int64_t now_ns)
{
  uint64_t calls, failures, slows;
  buttress__cring_add(&br->count_window, slots(br),
                      (failed ? BUTTRESS__SLOT_FAILED : 0u) | (slow ? BUTTRESS__SLOT_SLOW : 0u));
  if (br->cfg.window_type == BUTTRESS_WINDOW_COUNT) {
    if (!evaluate || !br->rate_rules) return false;
    buttress__cring_read(&br->count_window, &calls, &failures, &slows);
  } else {
    if (now_ns < 0) return false; /* a disabled breaker's untimed call */
    /* calls first: readers load them last (see buttress__tring_sum) */
    buttress__tring_add(&br->time_window, now_ns, TW_CALLS, 1);
    if (failed) buttress__tring_add(&br->time_window, now_ns, TW_FAILURES, 1);
    if (slow) buttress__tring_add(&br->time_window, now_ns, TW_SLOW, 1);
    if (!evaluate || !br->rate_rules) return false;
    uint64_t sums[BUTTRESS__TRING_COUNTERS];
    buttress__tring_sum(&br->time_window, now_ns, sums);
    calls = sums[TW_CALLS];
    failures = sums[TW_FAILURES];
    slows = sums[TW_SLOW];
  }
  if (calls < br->cfg.min_calls || calls == 0) return false;
  if (br->cfg.failure_rate > 0.0 && (double)failures >= br->cfg.failure_rate * (double)calls)
    return true;
  return br->cfg.slow_rate > 0.0 && (double)slows >= br->cfg.slow_rate * (double)calls;
}

/* Closed: a failure (or a rate rule) may open; a success ends the streak. */
static void
record_closed(buttress_breaker *br, uint64_t w, bool failed, bool trip_now, int64_t now_ns,
              buttress_ticket *t)
{
  uint64_t gen = W_GEN(w);
  for (;;) {
    if (W_STATE(w) != BUTTRESS_STATE_CLOSED || W_GEN(w) != gen) return; /* moved meanwhile */
    uint64_t next;
    if (failed || trip_now) {
      uint32_t streak = W_FIELD(w) + (failed ? 1u : 0u);
      if (streak > FIELD_MAX) streak = FIELD_MAX;
      bool trip = trip_now || (br->cfg.failure_threshold && streak >= br->cfg.failure_threshold);
      next = trip ? W_MAKE(BUTTRESS_STATE_OPEN, 0, gen + 1)
                  : W_MAKE(BUTTRESS_STATE_CLOSED, streak, gen);
      if (atomic_compare_exchange_weak_explicit(&br->state, &w, next, memory_order_acq_rel,
                                                memory_order_acquire)) {
        if (trip) on_opened(br, gen + 1, BUTTRESS_STATE_CLOSED, now_ns, t);
        return;
      }
    } else {
      if (W_FIELD(w) == 0) return; /* the common case writes nothing */
      next = W_MAKE(BUTTRESS_STATE_CLOSED, 0, gen);
      if (atomic_compare_exchange_weak_explicit(&br->state, &w, next, memory_order_acq_rel,
                                                memory_order_acquire))
        return;
    }
  }
}

/* Half-open: enough trial successes close; a failed trial reopens.  False
 * when the breaker left this generation first: the outcome moved nothing. */
static bool
record_half_open(buttress_breaker *br, uint64_t w, bool failed, int64_t now_ns, buttress_ticket *t)
{
  uint64_t gen = W_GEN(w);
  for (;;) {
    if (W_STATE(w) != BUTTRESS_STATE_HALF_OPEN || W_GEN(w) != gen) return false;
    uint64_t next;
    int to;
    if (failed) {
      next = W_MAKE(BUTTRESS_STATE_OPEN, 0, gen + 1);
      to = BUTTRESS_STATE_OPEN;
    } else {
      uint32_t wins = W_FIELD(w) + 1;
      bool close = wins >= br->cfg.success_threshold;
      next = close ? W_MAKE(BUTTRESS_STATE_CLOSED, 0, gen + 1)
                   : W_MAKE(BUTTRESS_STATE_HALF_OPEN, wins, gen);
      to = close ? BUTTRESS_STATE_CLOSED : BUTTRESS_STATE_HALF_OPEN;
    }
    if (atomic_compare_exchange_weak_explicit(&br->state, &w, next, memory_order_acq_rel,
                                              memory_order_acquire)) {
      if (to == BUTTRESS_STATE_OPEN)
        on_opened(br, gen + 1, BUTTRESS_STATE_HALF_OPEN, now_ns, t);
      else if (to == BUTTRESS_STATE_CLOSED)
        on_closed(br, BUTTRESS_STATE_HALF_OPEN, now_ns, t);
      return true;
    }
  }
}

/* Outcomes recorded, all time: the `calls` of the metrics. */
static uint64_t
calls_total(const buttress_breaker *br)
{
  return atomic_load_explicit(&br->count_window.pos, memory_order_relaxed) +
         atomic_load_explicit(&br->excluded, memory_order_relaxed) +
         atomic_load_explicit(&br->cancelled, memory_order_relaxed) +
         atomic_load_explicit(&br->stale, memory_order_relaxed);
}

/* Stamps the calls-per-second meter when this second has no stamp yet. */
static void
meter(buttress_breaker *br, int64_t now_ns)
{
  if (buttress__rate_due(&br->rate, now_ns)) buttress__rate_stamp(&br->rate, now_ns, calls_total(br));
}

/* The common outcome, apart so that it compiles to a short function with
 * a small frame: a success without a duration, admitted while closed, on a
 * breaker whose rules need no time (count window, no rate or slow-call
 * rule), so no permit, no clock, no histogram and no rule to evaluate.  It
 * does what record_outcome() does for that case, in the same order. */
static int
record_closed_success(buttress_breaker *br, buttress_ticket *t, int64_t now_ns)
{
  clear_ticket(t);
  if (now_ns >= 0) meter(br, now_ns);
  uint64_t w = atomic_load_explicit(&br->state, memory_order_acquire);
  if (W_GEN(w) != W_GEN(t->word)) {
    count(&br->stale);
    return BUTTRESS_STALE;
  }
  buttress__cring_add(&br->count_window, slots(br), 0u);
  /* only a streak to end writes the state word */
  if (W_FIELD(w) != 0) record_closed(br, w, false, false, now_ns, t);
  return BUTTRESS_OK;
}

/* Kept out of line: inlined, its frame (six saved registers, locals)
 * would be set up before the common case is even tested. */
#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static NOINLINE int record_outcome(buttress_breaker *br, buttress_ticket *t, int outcome,
                                   int64_t duration_ns, int64_t now_ns);

int
buttress_breaker_record(buttress_breaker *br, buttress_ticket *t, int outcome,
                        int64_t duration_ns, int64_t now_ns)
{
  if (t != NULL && outcome == BUTTRESS_SUCCESS && duration_ns == BUTTRESS_NO_CLOCK &&
      W_STATE(t->word) == BUTTRESS_STATE_CLOSED && t->permit < 0 &&
      !(t->flags & BUTTRESS_TICKET_TIMED) && valid(br) && !br->timed)
    return record_closed_success(br, t, now_ns);
  return record_outcome(br, t, outcome, duration_ns, now_ns);
}

/* Every outcome; buttress_breaker_record() sends it all but the common one. */
static NOINLINE int
record_outcome(buttress_breaker *br, buttress_ticket *t, int outcome, int64_t duration_ns,
               int64_t now_ns)
{
  if (!valid(br) || t == NULL || outcome < BUTTRESS_SUCCESS || outcome > BUTTRESS_CANCELLED ||
      duration_ns < BUTTRESS_NO_CLOCK)
    return BUTTRESS_EINVAL;
  int admitted = W_STATE(t->word);
  bool needs_clock = admitted != BUTTRESS_STATE_DISABLED &&
                     (outcome == BUTTRESS_FAILURE || (t->flags & BUTTRESS_TICKET_TIMED));
  if (needs_clock && now_ns < 0) return BUTTRESS_NEED_CLOCK;
  clear_ticket(t);
  give_back_permit(br, t);

  meter(br, now_ns);
  uint64_t w = atomic_load_explicit(&br->state, memory_order_acquire);
  if (W_GEN(w) != W_GEN(t->word)) {
    count(&br->stale);
    return BUTTRESS_STALE;
  }
  bool slow = duration_ns >= 0 && br->cfg.slow_call_ns >= 0 && duration_ns >= br->cfg.slow_call_ns;
  if (duration_ns >= 0) buttress_histogram_record(&br->latency, duration_ns);
  /* Excluded and cancelled calls are neutral: no streak, no window
   * (PITFALLS #4). */
  if (outcome == BUTTRESS_EXCLUDED) {
    count(&br->excluded);
    return BUTTRESS_OK;
  }
  if (outcome == BUTTRESS_CANCELLED) {
    count(&br->cancelled);
    return BUTTRESS_OK;
  }
  bool failed = outcome == BUTTRESS_FAILURE;
  /* A trial counts only if it moves its generation: of two trials racing
   * to close (or reopen) the breaker, the loser is stale, as if it had come
   * a moment later.  So the move comes first for trials, the counts after.
   * With a slow-rate rule, a slow trial is a failed trial. */
  if (admitted == BUTTRESS_STATE_HALF_OPEN &&
      !record_half_open(br, w, failed || (slow && br->cfg.slow_rate > 0.0), now_ns, t)) {
    count(&br->stale);
    return BUTTRESS_STALE;
  }
  if (slow) count(&br->slow);
  if (t->to == BUTTRESS_STATE_CLOSED) {
    /* This trial closed the breaker, which cleared the window: it counts
     * among the lifetime outcomes (a position), not in the new window. */
    atomic_fetch_add_explicit(&br->count_window.pos, 1, memory_order_release);
    return BUTTRESS_OK;
  }
  bool trip_now = window_add(br, failed, slow, admitted == BUTTRESS_STATE_CLOSED, now_ns);
  /* release, after the window position: readers load failures first, so
   * positions - failures (the successes) never goes negative */
  if (failed) atomic_fetch_add_explicit(&br->failures, 1, memory_order_release);

  if (admitted == BUTTRESS_STATE_CLOSED) record_closed(br, w, failed, trip_now, now_ns, t);
  return BUTTRESS_OK;
}

int
buttress_breaker_state(const buttress_breaker *br)
{
  if (!valid(br)) return BUTTRESS_EINVAL;
  return W_STATE(atomic_load_explicit(&br->state, memory_order_acquire));
}

/* Manual transitions: to `to`, whatever the state, in a new generation. */
static int
move_to(buttress_breaker *br, int to, int64_t now_ns, buttress_ticket *out)
{
  if (!valid(br)) return BUTTRESS_EINVAL;
  if (out != NULL) clear_ticket(out);
  uint64_t w = atomic_load_explicit(&br->state, memory_order_acquire);
  for (;;) {
    uint64_t next = W_MAKE(to, 0, W_GEN(w) + 1);
    if (atomic_compare_exchange_weak_explicit(&br->state, &w, next, memory_order_acq_rel,
                                              memory_order_acquire))
      break;
  }
  int from = W_STATE(w);
  if (to == BUTTRESS_STATE_CLOSED)
    on_closed(br, from, now_ns, out);
  else if (from != to)
    note_transition(br, from, to, now_ns, out);
  return BUTTRESS_OK;
}

int
buttress_breaker_force_open(buttress_breaker *br, int64_t now_ns, buttress_ticket *out)
{
  return move_to(br, BUTTRESS_STATE_FORCED_OPEN, now_ns, out);
}

int
buttress_breaker_disable(buttress_breaker *br, int64_t now_ns, buttress_ticket *out)
{
  return move_to(br, BUTTRESS_STATE_DISABLED, now_ns, out);
}

int
buttress_breaker_reset(buttress_breaker *br, int64_t now_ns, buttress_ticket *out)
{
  return move_to(br, BUTTRESS_STATE_CLOSED, now_ns, out);
}

static uint64_t
load(const buttress__au64 *counter)
{
  return atomic_load_explicit(counter, memory_order_relaxed);
}

int
buttress_breaker_metrics_get(buttress_breaker *br, int64_t now_ns, buttress_breaker_metrics *out)
{
  if (!valid(br) || out == NULL) return BUTTRESS_EINVAL;
  memset(out, 0, sizeof *out);
  meter(br, now_ns);
  out->calls_per_second = buttress__rate_per_second(&br->rate, now_ns, calls_total(br));
  out->failures = atomic_load_explicit(&br->failures, memory_order_acquire);
  out->successes = atomic_load_explicit(&br->count_window.pos, memory_order_acquire) - out->failures;
  out->excluded = load(&br->excluded);
  out->cancelled = load(&br->cancelled);
  out->stale = load(&br->stale);
  out->rejected = load(&br->rejected);
  out->slow = load(&br->slow);
  out->calls = out->successes + out->failures + out->excluded + out->cancelled + out->stale;
  for (int f = 0; f < BUTTRESS_STATE_COUNT; f++)
    for (int t = 0; t < BUTTRESS_STATE_COUNT; t++) {
      out->transitions[f][t] = load(&br->transitions[f][t]);
      out->last_transition_ns[f][t] =
        atomic_load_explicit(&br->last_transition_ns[f][t], memory_order_relaxed);
    }
  uint64_t w = atomic_load_explicit(&br->state, memory_order_acquire);
  out->state = W_STATE(w);
  out->consecutive_failures = out->state == BUTTRESS_STATE_CLOSED ? W_FIELD(w) : 0;
  out->half_open_successes = out->state == BUTTRESS_STATE_HALF_OPEN ? W_FIELD(w) : 0;
  out->trips = atomic_load_explicit(&br->trips, memory_order_relaxed);
  out->open_until_ns = BUTTRESS_NONE;
  if (out->state == BUTTRESS_STATE_OPEN) {
    uint64_t ow = atomic_load_explicit(&br->open_word, memory_order_acquire);
    if (T_TAG(ow) == (W_GEN(w) & TAG_MASK)) out->open_until_ns = T_NS(ow);
  }
  {
    if (br->cfg.window_type == BUTTRESS_WINDOW_COUNT) {
      buttress__cring_read(&br->count_window, &out->window_calls, &out->window_failures,
                           &out->window_slow);
    } else {
      uint64_t sums[BUTTRESS__TRING_COUNTERS];
      buttress__tring_sum(&br->time_window, now_ns, sums);
      out->window_calls = sums[TW_CALLS];
      out->window_failures = sums[TW_FAILURES];
      out->window_slow = sums[TW_SLOW];
    }
    if (out->window_calls) {
      out->failure_rate = (double)out->window_failures / (double)out->window_calls;
      out->slow_rate = (double)out->window_slow / (double)out->window_calls;
    }
  }
  buttress_histogram_summary(&br->latency, &out->latency);
  return BUTTRESS_OK;
}
