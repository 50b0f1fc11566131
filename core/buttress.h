/*
 * buttress: fault-tolerance decisions (backoff, retry, circuit breaker, retry
 * budget, latency histogram) in pure C11.
 *
 * The core decides; the caller acts.  No function here reads a clock, sleeps,
 * allocates on a hot path or calls user code.  Time is passed in as
 * `now_ns`: nanoseconds of a monotonic clock (buttress_monotonic_ns() gives
 * one).  Durations are int64 nanoseconds.
 *
 * Return codes: 0 ok, > 0 a policy outcome (the call was rejected, retries
 * are exhausted, ...), < 0 a caller error.  buttress_strerror() names each.
 *
 * State objects are opaque, fixed-size, position-independent blocks that the
 * caller places: ask *_sizeof(), give *_init() at least that many bytes
 * aligned to 8 (64 avoids false sharing).  They contain no pointers, so the
 * same block works on the heap, inside a Python object or Lua userdata, or in
 * memory shared by several processes.  Every function that takes a state
 * object is safe to call from many threads (and processes) at once unless its
 * comment says otherwise.
 *
 * "No clock": functions that take now_ns accept BUTTRESS_NO_CLOCK (-1) when
 * the caller has not read the clock.  If the decision then needs the time the
 * function changes nothing and returns BUTTRESS_NEED_CLOCK; call it again
 * with the real time.  This lets the success path of a closed breaker skip
 * the clock read entirely.
 */
#ifndef BUTTRESS_H
#define BUTTRESS_H

#ifndef BUTTRESS_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) || defined(BUTTRESS_CDEF)
#define BUTTRESS_API
#else
#define BUTTRESS_API __attribute__((visibility("default")))
#endif

#define BUTTRESS_VERSION "0.1.0"
#define BUTTRESS_NS_PER_S INT64_C(1000000000)
#define BUTTRESS_NS_PER_MS INT64_C(1000000)

/* Upper limits of configuration values; larger ones are BUTTRESS_EINVAL. */
#define BUTTRESS_MAX_THRESHOLD 65535       /* failure/success thresholds */
#define BUTTRESS_MAX_HALF_OPEN_CALLS 1024  /* concurrent trial permits */
#define BUTTRESS_MAX_WINDOW_CALLS 65536    /* count window size */
#define BUTTRESS_TIME_BUCKETS 10           /* buckets of a time window */
#define BUTTRESS_MAX_DURATION_NS (INT64_C(1) << 62) /* ~146 years */
/* Shortest time window (breaker and budget): buckets of at least 1 ms. */
#define BUTTRESS_MIN_WINDOW_NS (10 * INT64_C(1000000))

/* BUTTRESS_FFI_BEGIN */
/* Everything between the FFI markers is plain C that LuaJIT's ffi.cdef can
 * read after the preprocessor has run (make cdef): no varargs, no struct by
 * value, no callbacks, at most 8 arguments. */

#define BUTTRESS_ERRORS(X)                                                    \
  X(OK, 0, "success")                                                         \
  X(OPEN, 1, "circuit open: call rejected")                                   \
  X(EXHAUSTED, 2, "retries exhausted: no attempts left")                      \
  X(DEADLINE, 3, "deadline reached: no time left for another attempt")        \
  X(BUDGET, 4, "retry budget exhausted")                                      \
  X(STALE, 5, "stale ticket: outcome of a call admitted under an earlier "    \
              "state ignored")                                                \
  X(NEED_CLOCK, 6, "the current time is needed: call again with now_ns")      \
  X(EINVAL, -1, "invalid argument")                                           \
  X(EABI, -2, "incompatible state: bad magic or ABI version")                 \
  X(ENOSPC, -3, "no space left in the region")                                \
  X(ECONFIG, -4, "configuration differs from the existing object's")          \
  X(ESYS, -5, "system call failed (see errno)")                               \
  X(ENAMETOOLONG, -6, "name too long")                                        \
  X(ENOENT, -7, "no such object")                                            \
  X(EBUSY, -8, "busy: another process is creating this object; try again")

#define BUTTRESS_ERROR_ENUM_(name, value, text) BUTTRESS_##name = value,
enum buttress_error { BUTTRESS_ERRORS(BUTTRESS_ERROR_ENUM_) };

/* A now_ns / duration_ns value meaning "not measured". */
enum { BUTTRESS_NO_CLOCK = -1, BUTTRESS_NONE = -1 };

enum buttress_jitter {
  BUTTRESS_JITTER_NONE = 0,  /* the capped exponential delay itself */
  BUTTRESS_JITTER_FULL = 1,  /* uniform in [0, capped] */
  BUTTRESS_JITTER_EQUAL = 2, /* capped/2 + uniform in [0, capped/2] */
  BUTTRESS_JITTER_DECORRELATED = 3 /* uniform in [base, min(cap, 3*prev)] */
};

enum buttress_state {
  BUTTRESS_STATE_NONE = -1,
  BUTTRESS_STATE_CLOSED = 0,
  BUTTRESS_STATE_OPEN = 1,
  BUTTRESS_STATE_HALF_OPEN = 2,
  BUTTRESS_STATE_FORCED_OPEN = 3,
  BUTTRESS_STATE_DISABLED = 4,
  BUTTRESS_STATE_COUNT = 5
};

enum buttress_outcome {
  BUTTRESS_SUCCESS = 0,
  BUTTRESS_FAILURE = 1,
  BUTTRESS_EXCLUDED = 2,  /* neither success nor failure (business error) */
  BUTTRESS_CANCELLED = 3  /* the call never finished: permit given back */
};

enum buttress_window_type { BUTTRESS_WINDOW_COUNT = 0, BUTTRESS_WINDOW_TIME = 1 };

/* ticket.flags */
enum { BUTTRESS_TICKET_TIMED = 1 /* record() wants duration_ns and now_ns */ };

/* ---------------------------------------------------------------- misc */

/* Name and message of a return code; never NULL ("unknown error" for codes
 * outside the table). */
BUTTRESS_API const char *buttress_strerror(int code);
BUTTRESS_API const char *buttress_errname(int code);
/* "closed", "open", "half_open", "forced_open", "disabled" (or "unknown"). */
BUTTRESS_API const char *buttress_state_name(int state);
/* Jitter by name ("none", "full", "equal", "decorrelated"): the enum value,
 * or BUTTRESS_EINVAL. */
BUTTRESS_API int buttress_jitter_parse(const char *name);
BUTTRESS_API const char *buttress_jitter_name(int jitter);
/* ABI version of the state layouts; bindings check it at load. */
BUTTRESS_API int buttress_abi_version(void);
/* CLOCK_MONOTONIC in nanoseconds: for bindings.  The core never calls it. */
BUTTRESS_API int64_t buttress_monotonic_ns(void);
/* A seed from the operating system's entropy (getrandom), falling back to
 * the clock and address-space layout; for bindings given no seed. */
BUTTRESS_API uint64_t buttress_entropy_seed(void);

/* ------------------------------------------------------------- backoff */

typedef struct buttress_backoff_config {
  int64_t base_ns;   /* delay of the first retry; default 100 ms; >= 0 */
  int64_t cap_ns;    /* largest delay; default 10 s; >= base_ns */
  double multiplier; /* growth per retry; default 2.0; >= 1, finite */
  int32_t jitter;    /* enum buttress_jitter; default FULL */
  int32_t reserved_; /* zero */
} buttress_backoff_config;

BUTTRESS_API void buttress_backoff_config_init(buttress_backoff_config *cfg);
/* 0, or BUTTRESS_EINVAL for a bad value (NULL, negative, NaN, cap < base,
 * multiplier < 1, unknown jitter, durations over BUTTRESS_MAX_DURATION_NS). */
BUTTRESS_API int buttress_backoff_config_check(const buttress_backoff_config *cfg);

/* The un-jittered delay of retry number `retry` (0 = first retry):
 * min(cap, base * multiplier**retry), saturating: finite and within
 * [0, cap] for every retry number up to 2**32-1.  Pure. */
BUTTRESS_API int buttress_backoff_ceiling(const buttress_backoff_config *cfg,
                                          uint32_t retry, int64_t *out_ns);

/* A backoff: its configuration and a PRNG (splitmix64, advanced with one
 * atomic add, so many threads may draw from it at once). */
typedef struct buttress_backoff buttress_backoff;
BUTTRESS_API size_t buttress_backoff_sizeof(void);
/* Copies cfg (BUTTRESS_EINVAL leaves mem untouched); the same seed gives the
 * same sequence of delays. */
BUTTRESS_API int buttress_backoff_init(void *mem, size_t size,
                                       const buttress_backoff_config *cfg,
                                       uint64_t seed);
/* The jittered delay of retry number `retry`.  prev_ns is the previous delay
 * (decorrelated jitter grows from it; pass BUTTRESS_NONE for the first
 * retry).  Jitter is applied after the cap: full jitter of a saturated
 * backoff is uniform in [0, cap], never the constant cap. */
BUTTRESS_API int buttress_backoff_next(buttress_backoff *b, uint32_t retry,
                                       int64_t prev_ns, int64_t *out_ns);
BUTTRESS_API int buttress_backoff_get_config(const buttress_backoff *b,
                                             buttress_backoff_config *out);

/* -------------------------------------------------------- retry budget */

/* A token bucket over a sliding time window, in the spirit of Finagle's
 * RetryBudget: a retry is allowed only while the retries of the last
 * window (the one ending now, counted in its buckets), itself included,
 * number at most min_per_second * window_seconds + ratio * calls of that
 * window.  A retry spends budget
 * when it is decided (before its backoff sleep), never when it fires. */
typedef struct buttress_budget_config {
  double ratio;          /* retries per call; default 0.2; >= 0, finite */
  double min_per_second; /* retries always allowed; default 10; >= 0 */
  int64_t window_ns;     /* default 10 s; >= BUTTRESS_MIN_WINDOW_NS */
} buttress_budget_config;

typedef struct buttress_budget_metrics {
  uint64_t deposits;    /* calls counted (all time) */
  uint64_t withdrawals; /* retries allowed (all time) */
  uint64_t rejections;  /* retries refused (all time) */
  double available;     /* retries allowed right now, at now_ns */
  uint64_t window_calls;
  uint64_t window_retries;
} buttress_budget_metrics;

typedef struct buttress_budget buttress_budget;
BUTTRESS_API void buttress_budget_config_init(buttress_budget_config *cfg);
BUTTRESS_API int buttress_budget_config_check(const buttress_budget_config *cfg);
BUTTRESS_API size_t buttress_budget_sizeof(void);
BUTTRESS_API int buttress_budget_init(void *mem, size_t size,
                                      const buttress_budget_config *cfg);
/* A call was made (its first attempt): earns `ratio` of a retry. */
BUTTRESS_API int buttress_budget_deposit(buttress_budget *b, int64_t now_ns);
/* Spend one retry: 0, or BUTTRESS_BUDGET when none is left.  Never lets
 * more through than the formula allows, however many threads race. */
BUTTRESS_API int buttress_budget_withdraw(buttress_budget *b, int64_t now_ns);
BUTTRESS_API int buttress_budget_metrics_get(const buttress_budget *b,
                                             int64_t now_ns,
                                             buttress_budget_metrics *out);

/* --------------------------------------------------------------- retry */

typedef struct buttress_retry_config {
  uint32_t attempts;   /* total calls, the first included; default 3; >= 1 */
  int32_t reserved_;   /* zero */
  int64_t deadline_ns; /* whole-call time limit; default BUTTRESS_NONE */
  buttress_backoff_config backoff;
} buttress_retry_config;

/* One call's progress: caller-owned (a stack variable), never shared. */
typedef struct buttress_retry_call {
  int64_t started_ns;  /* when begin() ran */
  int64_t deadline_ns; /* absolute; BUTTRESS_NONE when there is none */
  int64_t delay_ns;    /* next() result: sleep this long, then try again */
  int64_t prev_delay_ns;
  uint32_t attempt;    /* attempts started so far (1 after begin) */
  int32_t reason;      /* why it gave up: EXHAUSTED, DEADLINE, BUDGET, or 0 */
} buttress_retry_call;

/* A latency summary (see the histogram below). */
typedef struct buttress_latency {
  uint64_t count;
  int64_t p50_ns, p95_ns, p99_ns, max_ns; /* 0 when count == 0 */
  double mean_ns;
} buttress_latency;

typedef struct buttress_retry_metrics {
  uint64_t calls;      /* begin() */
  uint64_t attempts;   /* first attempts and retries */
  uint64_t retries;    /* next() that said "retry" */
  uint64_t successes;  /* end(SUCCESS) */
  uint64_t failures;   /* end(FAILURE): a failure that was not retried */
  uint64_t giveups_attempts;
  uint64_t giveups_deadline;
  uint64_t giveups_budget;
  buttress_latency latency;  /* of whole calls, as given to observe() */
  double calls_per_second;   /* see the breaker's */
} buttress_retry_metrics;

typedef struct buttress_retry buttress_retry;
BUTTRESS_API void buttress_retry_config_init(buttress_retry_config *cfg);
BUTTRESS_API int buttress_retry_config_check(const buttress_retry_config *cfg);
BUTTRESS_API size_t buttress_retry_sizeof(void);
BUTTRESS_API int buttress_retry_init(void *mem, size_t size,
                                     const buttress_retry_config *cfg,
                                     uint64_t seed);
BUTTRESS_API int buttress_retry_get_config(const buttress_retry *r,
                                           buttress_retry_config *out);
/* Start a call.  Its deadline is the earlier of now + config deadline and
 * outer_deadline_ns (an absolute deadline inherited from an enclosing call,
 * or BUTTRESS_NONE).  Deposits into `budget` when it is not NULL.  Returns 0,
 * or BUTTRESS_DEADLINE when the deadline has already passed: start no
 * attempt (the call still counts, as a deadline give-up). */
BUTTRESS_API int buttress_retry_begin(buttress_retry *r, buttress_retry_call *call,
                                      buttress_budget *budget,
                                      int64_t outer_deadline_ns, int64_t now_ns);
/* The attempt just made failed with a retryable error: may it go again?
 * Checks run in this order: attempts, deadline, budget; the first that
 * refuses is the reason.
 * 0: yes, after call->delay_ns (0 means at once: do not sleep at all).
 * Otherwise give up with the last error; the code (EXHAUSTED, DEADLINE or
 * BUDGET) is also left in call->reason and counted.  override_delay_ns >= 0
 * (a server's Retry-After) replaces the backoff delay.  A retry whose delay
 * would end at or after the deadline is given up (DEADLINE) instead of
 * sleeping into it.  The budget, when not NULL, is spent only when every
 * other check has passed. */
BUTTRESS_API int buttress_retry_next(buttress_retry *r, buttress_retry_call *call,
                                     buttress_budget *budget,
                                     int64_t override_delay_ns, int64_t now_ns);
/* After the sleep next() asked for, before the attempt: 0 to make it, or
 * BUTTRESS_DEADLINE when the sleep overran the deadline (a late wake-up):
 * give up with the last error; counted as a deadline give-up, and the
 * attempt next() counted is taken back.  Needs the clock only when the
 * call has a deadline (BUTTRESS_NEED_CLOCK otherwise); 0 for a first
 * attempt. */
BUTTRESS_API int buttress_retry_resume(buttress_retry *r, buttress_retry_call *call,
                                       int64_t now_ns);
/* The call ended without a give-up: outcome SUCCESS, or FAILURE for an
 * error that is not retried.  Counts it; returns 0. */
BUTTRESS_API int buttress_retry_end(buttress_retry *r, buttress_retry_call *call,
                                    int outcome);
/* Time left: deadline - now, 0 when passed, BUTTRESS_NONE when none. */
BUTTRESS_API int buttress_retry_remaining(const buttress_retry_call *call,
                                          int64_t now_ns, int64_t *out_ns);
/* A call that began ended after duration_ns (first attempt to last outcome,
 * sleeps included): feeds the latency of the metrics.  BUTTRESS_NO_CLOCK
 * for an untimed call (only now_ns, when known, is used: it stamps the
 * calls-per-second meter). */
BUTTRESS_API int buttress_retry_observe(buttress_retry *r, int64_t duration_ns,
                                        int64_t now_ns);
/* now_ns: for calls_per_second (NO_CLOCK: reported as 0); a read with a
 * clock also stamps the meter, hence the non-const breaker. */
BUTTRESS_API int buttress_retry_metrics_get(buttress_retry *r, int64_t now_ns,
                                            buttress_retry_metrics *out);

/* ----------------------------------------------------------- histogram */

/* Log-linear latency histogram: 32 sub-buckets per power of two, so a
 * quantile read back is within 1/64 (< 2%) of the recorded value.  Values
 * are nanoseconds in [0, 2**38) (~275 s); larger ones land in the top bucket
 * (max stays exact).  Recording is lock-free; histograms merge. */
typedef struct buttress_histogram buttress_histogram;

BUTTRESS_API size_t buttress_histogram_sizeof(void);
BUTTRESS_API int buttress_histogram_init(void *mem, size_t size);
BUTTRESS_API int buttress_histogram_record(buttress_histogram *h, int64_t value_ns);
/* q in [0, 1]: the smallest recorded value v with at least q of the values
 * <= v, to within the bucket's precision; BUTTRESS_EINVAL for a bad q. */
BUTTRESS_API int buttress_histogram_quantile(const buttress_histogram *h,
                                             double q, int64_t *out_ns);
BUTTRESS_API int buttress_histogram_summary(const buttress_histogram *h,
                                            buttress_latency *out);
/* dst += src.  Not atomic as a whole: a concurrent reader of dst may see
 * part of src. */
BUTTRESS_API int buttress_histogram_merge(buttress_histogram *dst,
                                          const buttress_histogram *src);
BUTTRESS_API int buttress_histogram_reset(buttress_histogram *h);

/* ------------------------------------------------------------- breaker */

typedef struct buttress_breaker_config {
  uint32_t failure_threshold; /* consecutive failures that open; default 5;
                                 0 turns the rule off */
  uint32_t half_open_calls;   /* concurrent trial permits; default 1; >= 1 */
  uint32_t success_threshold; /* trial successes that close; default 1; >= 1 */
  uint32_t window_size;       /* count window: calls; default 100 */
  uint32_t min_calls;         /* rate rules need this many calls in the
                                 window; default 10; >= 1 */
  int32_t window_type;        /* enum buttress_window_type; default COUNT */
  int64_t window_ns;          /* time window length; default 100 s;
                                 >= BUTTRESS_MIN_WINDOW_NS */
  /* Open periods and trial permits end on whole milliseconds, rounded up:
   * never early, at most 1 ms late. */
  int64_t reset_timeout_ns;   /* open period before trials; default 30 s; > 0 */
  int64_t trial_timeout_ns;   /* a trial permit expires after this; default
                                 BUTTRESS_NONE = reset_timeout_ns */
  int64_t slow_call_ns;       /* a call this long or longer is slow;
                                 default BUTTRESS_NONE (off) */
  /* Rate rules are checked at every outcome recorded while closed, once
   * the window holds min_calls calls.  The window itself is kept for every
   * breaker: its rates are reported in the metrics whether or not a rule
   * is on. */
  double failure_rate;        /* open when failures/calls in the window >= it;
                                 0 = off (default), else (0, 1] */
  double slow_rate;           /* open when slow/calls >= it; 0 = off; needs
                                 slow_call_ns */
  int32_t use_reset_backoff;  /* 1: the n-th successive open period lasts
                                 reset_backoff's delay n (jittered), not
                                 reset_timeout_ns */
  int32_t reserved_;          /* zero */
  buttress_backoff_config reset_backoff;
} buttress_breaker_config;

/* What allow() hands out and record() gives back.  Caller-owned. */
typedef struct buttress_ticket {
  uint64_t word;          /* the state and generation admitted under */
  uint64_t permit_word;   /* half-open permit held (internal) */
  int64_t retry_after_ns; /* rejected: time until a call may be admitted,
                             BUTTRESS_NONE when unknown (forced open) */
  int32_t permit;         /* half-open permit slot, -1 when none */
  int32_t flags;          /* BUTTRESS_TICKET_TIMED */
  int32_t from;           /* a transition this call made: old state, */
  int32_t to;             /* and new state; BUTTRESS_STATE_NONE if none */
} buttress_ticket;

typedef struct buttress_breaker_metrics {
  uint64_t calls;     /* outcomes recorded: successes + failures + excluded
                         + stale + cancelled */
  uint64_t successes, failures, excluded, cancelled, stale;
  uint64_t rejected;  /* allow() said BUTTRESS_OPEN */
  uint64_t slow;      /* recorded with duration_ns >= slow_call_ns */
  uint64_t transitions[5][5];        /* [from][to] */
  int64_t last_transition_ns[5][5];  /* BUTTRESS_NONE when never */
  int32_t state;
  uint32_t consecutive_failures;     /* closed: the current streak */
  uint32_t half_open_successes;      /* half-open: trial successes so far */
  uint32_t trips;                    /* successive openings since closed */
  uint64_t window_calls, window_failures, window_slow;
  double failure_rate, slow_rate;    /* over the window; 0 when empty */
  int64_t open_until_ns;             /* open: when trials may start */
  buttress_latency latency;          /* of calls recorded with a duration */
  /* Outcomes recorded per second over about the last minute: between the
   * oldest stamp of the call count in that minute and now.  Stamps are
   * left, at most once a second, by callers that pass a clock reading
   * (timed or failed calls, transitions, metrics reads); 0 until a stamp at
   * least 1 ms old exists, and always 0 when now_ns is NO_CLOCK. */
  double calls_per_second;
} buttress_breaker_metrics;

typedef struct buttress_breaker buttress_breaker;
BUTTRESS_API void buttress_breaker_config_init(buttress_breaker_config *cfg);
BUTTRESS_API int buttress_breaker_config_check(const buttress_breaker_config *cfg);
/* Bytes the state needs: depends on the window and half_open_calls; 0 for a
 * bad config. */
BUTTRESS_API size_t buttress_breaker_sizeof(const buttress_breaker_config *cfg);
/* BUTTRESS_EINVAL for a bad config or a size below sizeof (mem untouched). */
BUTTRESS_API int buttress_breaker_init(void *mem, size_t size,
                                       const buttress_breaker_config *cfg);
BUTTRESS_API int buttress_breaker_get_config(const buttress_breaker *br,
                                             buttress_breaker_config *out);

/* May a call go?  0: yes, with the ticket filled in; call record() with it
 * when the call ends, whatever happens (CANCELLED if it never finished).
 * BUTTRESS_OPEN: rejected, ticket->retry_after_ns says for how long.
 * BUTTRESS_NEED_CLOCK: now_ns was BUTTRESS_NO_CLOCK and the state needs the
 * time (open or half-open); nothing changed.  A closed or disabled breaker
 * never needs the clock here and writes nothing.
 * If this call moved the breaker (open -> half-open), ticket->from/to say
 * so; exactly one caller is told of each transition. */
BUTTRESS_API int buttress_breaker_allow(buttress_breaker *br, int64_t now_ns,
                                        buttress_ticket *ticket);
/* How the admitted call ended.  duration_ns is the call's measured time, or
 * BUTTRESS_NO_CLOCK when it was not timed (it then counts toward neither
 * slow calls nor latency).  Returns 0, or BUTTRESS_STALE when the breaker
 * has moved to another generation since the ticket was issued (the outcome
 * is ignored apart from the `stale` counter), or BUTTRESS_NEED_CLOCK when
 * now_ns is BUTTRESS_NO_CLOCK but the outcome needs the time (a failure,
 * unless admitted by a disabled breaker; any outcome when ticket->flags has
 * BUTTRESS_TICKET_TIMED); nothing changed then.  A half-open permit is given back by any outcome.
 * ticket->from/to report a transition this call made. */
BUTTRESS_API int buttress_breaker_record(buttress_breaker *br,
                                         buttress_ticket *ticket, int outcome,
                                         int64_t duration_ns, int64_t now_ns);
/* The current state (enum buttress_state).  An open breaker whose period
 * has passed still reads "open" until a call is admitted as a trial. */
BUTTRESS_API int buttress_breaker_state(const buttress_breaker *br);
/* Manual transitions: force open (reject everything until reset), disable
 * (admit everything, never open), reset (closed, counters of the window and
 * streaks cleared; lifetime counters kept).  Each starts a new generation:
 * outstanding tickets go stale.  `out` (may be NULL) reports the transition. */
BUTTRESS_API int buttress_breaker_force_open(buttress_breaker *br, int64_t now_ns,
                                             buttress_ticket *out);
BUTTRESS_API int buttress_breaker_disable(buttress_breaker *br, int64_t now_ns,
                                          buttress_ticket *out);
BUTTRESS_API int buttress_breaker_reset(buttress_breaker *br, int64_t now_ns,
                                        buttress_ticket *out);
/* A snapshot; each field is read atomically, the whole is not a single
 * instant.  now_ns is used for time-window rates (NO_CLOCK: unexpired) and
 * calls_per_second; a read with a clock stamps that meter (an atomic
 * store, safe with concurrent callers). */
BUTTRESS_API int buttress_breaker_metrics_get(buttress_breaker *br,
                                              int64_t now_ns,
                                              buttress_breaker_metrics *out);
/* -------------------------------------------------------------- region */

/* A region is one block of memory mapped by several processes: a named
 * POSIX shared-memory object, or an anonymous shared mapping made before
 * fork() and inherited by the children.  It starts with a header (magic, ABI
 * version, size) and a table of named slots, each holding one breaker or
 * budget.  Slots are claimed lock-free; attaching to a region or to a slot
 * never resets live state.  A process killed at any point leaves the others
 * working: state updates are single atomic operations, half-open permits
 * expire, and a slot whose creator died half way is taken over.
 * Region names are "/name" (at most BUTTRESS_REGION_NAME_MAX bytes, one
 * leading slash, no other); slot names are 1 to BUTTRESS_SLOT_NAME_MAX bytes. */
typedef struct buttress_region buttress_region;

enum {
  BUTTRESS_REGION_NAME_MAX = 200,
  BUTTRESS_SLOT_NAME_MAX = 63,
  BUTTRESS_REGION_SLOTS = 256,
  BUTTRESS_REGION_MIN_SIZE = 65536
};

enum { BUTTRESS_REGION_CREATE = 1 /* create the named region if missing */ };

/* Opens (and with BUTTRESS_REGION_CREATE creates, mode `mode`, e.g. 0600)
 * the named region, `size` bytes (ignored when attaching to an existing
 * one).  *out is the mapping.  Errors: EINVAL (bad name or size below
 * BUTTRESS_REGION_MIN_SIZE), ENAMETOOLONG, ENOENT (missing and not
 * creating), EABI (not a buttress region, or another ABI), ESYS (see errno:
 * EACCES when permissions deny access). */
BUTTRESS_API int buttress_region_open(const char *name, size_t size, int flags,
                                      uint32_t mode, buttress_region **out);
/* An anonymous shared mapping: inherited by children forked afterwards. */
BUTTRESS_API int buttress_region_anonymous(size_t size, buttress_region **out);
/* Unmaps this process's view; the shared object lives on. */
BUTTRESS_API int buttress_region_close(buttress_region *r);
/* Removes a named region's name; mappings stay valid until closed. */
BUTTRESS_API int buttress_region_unlink(const char *name);
BUTTRESS_API int buttress_region_info(const buttress_region *r, uint64_t *size,
                                      uint64_t *used, uint32_t *slots_used);
/* Finds the breaker named `name`, or creates it with cfg.  An existing one
 * must have been made with the same config (else ECONFIG).  *created tells
 * which happened (may be NULL).  ENOSPC when the region or its slot table is
 * full (nothing is changed then).  Two processes racing to create the same
 * name get one object; the loser's reserved space stays unused.  A creator
 * that died mid-creation is detected by its pid (a zombie still counts as
 * alive until reaped: until then its name answers BUTTRESS_EBUSY). */
BUTTRESS_API int buttress_region_breaker(buttress_region *r, const char *name,
                                         const buttress_breaker_config *cfg,
                                         buttress_breaker **out, int *created);
BUTTRESS_API int buttress_region_budget(buttress_region *r, const char *name,
                                        const buttress_budget_config *cfg,
                                        buttress_budget **out, int *created);
/* BUTTRESS_FFI_END */

#ifdef __cplusplus
}
#endif
#endif /* BUTTRESS_H */
