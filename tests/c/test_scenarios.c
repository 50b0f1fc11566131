/*
 * Replays the language-neutral scenarios (every .txt file of
 * tests/scenarios, format: tests/scenarios/README.md) against the C API,
 * one cmocka test per file.
 *
 * Each file runs twice:
 *   "clock":    every call gets the step's time, as a naive caller would;
 *   "no-clock": the bindings' protocol (ARCHITECTURE.md principle 5): try
 *               BUTTRESS_NO_CLOCK first and read the clock only when the core
 *               answers BUTTRESS_NEED_CLOCK.  This also checks the header's
 *               promises about when the clock is needed and that a
 *               NEED_CLOCK answer changed nothing.
 *
 * Expectations: `reject` means rejected with an unknown retry_after
 * (forced open); every other rejection is written `reject:MS` and checked to
 * the nanosecond.  `begin outer_deadline=MS` passes an inherited absolute
 * deadline (scenario time) to buttress_retry_begin().
 *
 * Parsing is strict: an unknown directive, key, op, metric or a malformed
 * line fails that file's test with file:line, so a typo cannot turn a
 * scenario into one that silently checks nothing.
 *
 * The scenario directory is $BUTTRESS_SCENARIOS, default tests/scenarios.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buttress.h"

#define MS(x) ((int64_t)(x) * BUTTRESS_NS_PER_MS)
#define NAME_MAX_LEN 32
#define MSG_LEN 1024

/* ------------------------------------------------------------ model */

enum kind { KIND_NONE, KIND_BREAKER, KIND_RETRY };

enum op {
  /* breaker */
  OP_ALLOW, OP_SUCCESS, OP_FAILURE, OP_EXCLUDED, OP_CANCELLED, OP_STATE,
  OP_FORCE_OPEN, OP_DISABLE, OP_RESET, OP_METRIC,
  /* retry */
  OP_BEGIN, OP_FAIL, OP_END
};

enum expect {
  EX_ADMIT, EX_REJECT, EX_REJECT_MS, /* allow */
  EX_OK, EX_STALE,                   /* outcomes, manual transitions, begin */
  EX_STATE,                          /* state */
  EX_VALUE,                          /* metric */
  EX_RETRY_MS, EX_GIVEUP             /* fail (and begin: giveup:deadline) */
};

/* Counters a `metric` step may name; transitions are handled apart. */
enum metric {
  M_CALLS, M_SUCCESSES, M_FAILURES, M_EXCLUDED, M_CANCELLED, M_STALE,
  M_REJECTED, M_SLOW, M_CONSECUTIVE_FAILURES, M_WINDOW_CALLS,
  M_WINDOW_FAILURES, M_WINDOW_SLOW, M_TRANSITION,
  /* retry */
  M_R_CALLS, M_R_ATTEMPTS, M_R_RETRIES, M_R_SUCCESSES, M_R_FAILURES,
  M_R_GIVEUPS_ATTEMPTS, M_R_GIVEUPS_DEADLINE, M_R_GIVEUPS_BUDGET
};

struct step {
  int line;
  char text[160]; /* the step as written, for messages */
  int64_t t_ms;
  enum op op;
  char ticket[NAME_MAX_LEN + 1];
  int64_t dur_ms;   /* outcome duration, -1 when not timed */
  int64_t arg_ms;   /* retry_after / outer_deadline, -1 when absent */
  enum metric metric;
  int from, to;     /* M_TRANSITION */
  enum expect expect;
  int64_t value;    /* MS, state, counter or give-up code */
};

struct scenario {
  char path[512];
  char name[300];
  enum kind kind;
  /* breaker */
  buttress_breaker_config bcfg;
  /* retry */
  buttress_retry_config rcfg;
  int has_budget;
  buttress_budget_config gcfg;
  struct step *steps;
  size_t nsteps, cap;
  int no_clock; /* replay mode, see the top of the file */
};

/* A parse error or mismatch: printed by the test, then fail(). */
static char g_msg[MSG_LEN];

static void
set_msg(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_msg, sizeof g_msg, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------ lexing */

static const char *const state_names[] = {
  "closed", "open", "half_open", "forced_open", "disabled"
};

static int
state_from_name(const char *s, size_t n)
{
  for (int i = 0; i < BUTTRESS_STATE_COUNT; i++)
    if (strlen(state_names[i]) == n && strncmp(state_names[i], s, n) == 0)
      return i;
  return -1;
}

/* A non-negative decimal integer, the whole string. */
static int
parse_uint(const char *s, int64_t max, int64_t *out)
{
  if (!isdigit((unsigned char)s[0]))
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > (unsigned long long)max)
    return -1;
  *out = (int64_t)v;
  return 0;
}

/* A finite non-negative decimal number, the whole string. */
static int
parse_double(const char *s, double *out)
{
  if (!isdigit((unsigned char)s[0]) && s[0] != '.')
    return -1;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v < 0)
    return -1;
  *out = v;
  return 0;
}

static int
parse_jitter(const char *s, int32_t *out)
{
  static const char *const names[] = {"none", "full", "equal", "decorrelated"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

/* Splits line in place into at most max whitespace-separated fields. */
static int
split(char *line, char **f, int max)
{
  int n = 0;
  char *p = line;
  for (;;) {
    while (*p && isspace((unsigned char)*p))
      p++;
    if (!*p)
      return n;
    if (n == max)
      return max + 1;
    f[n++] = p;
    while (*p && !isspace((unsigned char)*p))
      p++;
    if (*p)
      *p++ = '\0';
  }
}

/* ------------------------------------------------------------ config */

/* Values given in the file; applied after the last config line because
 * `window` means calls or ms depending on window_type. */
struct pending {
  int window_given;
  int64_t window;
  int backoff_given;
};

static int
config_key(struct scenario *sc, struct pending *pd, const char *key,
           const char *val, unsigned *seen, const char *const *keys,
           int nkeys)
{
  int idx = -1;
  for (int i = 0; i < nkeys; i++)
    if (strcmp(key, keys[i]) == 0)
      idx = i;
  if (idx < 0) {
    set_msg("unknown config key '%s'", key);
    return -1;
  }
  if (*seen & (1u << idx)) {
    set_msg("config key '%s' given twice", key);
    return -1;
  }
  *seen |= 1u << idx;

  int64_t u = 0;
  double d = 0;
  int32_t j = 0;
  int bad = 0;
  const int64_t ms_max = BUTTRESS_MAX_DURATION_NS / BUTTRESS_NS_PER_MS;
  buttress_breaker_config *b = &sc->bcfg;
  buttress_retry_config *r = &sc->rcfg;

#define KEY(name) (strcmp(key, name) == 0)
  if (sc->kind == KIND_BREAKER) {
    if (KEY("failure_threshold") || KEY("half_open_calls") ||
        KEY("success_threshold") || KEY("min_calls")) {
      bad = parse_uint(val, UINT32_MAX, &u);
      if (KEY("failure_threshold")) b->failure_threshold = (uint32_t)u;
      else if (KEY("half_open_calls")) b->half_open_calls = (uint32_t)u;
      else if (KEY("success_threshold")) b->success_threshold = (uint32_t)u;
      else b->min_calls = (uint32_t)u;
    } else if (KEY("reset_timeout") || KEY("trial_timeout") ||
               KEY("slow_call")) {
      bad = parse_uint(val, ms_max, &u);
      if (KEY("reset_timeout")) b->reset_timeout_ns = MS(u);
      else if (KEY("trial_timeout")) b->trial_timeout_ns = MS(u);
      else b->slow_call_ns = MS(u);
    } else if (KEY("failure_rate") || KEY("slow_rate")) {
      bad = parse_double(val, &d);
      if (KEY("failure_rate")) b->failure_rate = d;
      else b->slow_rate = d;
    } else if (KEY("window")) {
      bad = parse_uint(val, ms_max, &u);
      pd->window_given = 1;
      pd->window = u;
    } else if (KEY("window_type")) {
      if (strcmp(val, "count") == 0) b->window_type = BUTTRESS_WINDOW_COUNT;
      else if (strcmp(val, "time") == 0) b->window_type = BUTTRESS_WINDOW_TIME;
      else bad = -1;
    } else if (KEY("reset_backoff_base") || KEY("reset_backoff_cap")) {
      bad = parse_uint(val, ms_max, &u);
      if (KEY("reset_backoff_base")) b->reset_backoff.base_ns = MS(u);
      else b->reset_backoff.cap_ns = MS(u);
      pd->backoff_given = 1;
    } else if (KEY("reset_backoff_multiplier")) {
      bad = parse_double(val, &d);
      b->reset_backoff.multiplier = d;
      pd->backoff_given = 1;
    } else if (KEY("reset_backoff_jitter")) {
      bad = parse_jitter(val, &j);
      b->reset_backoff.jitter = j;
      pd->backoff_given = 1;
    }
  } else {
    if (KEY("attempts")) {
      bad = parse_uint(val, UINT32_MAX, &u);
      r->attempts = (uint32_t)u;
    } else if (KEY("base") || KEY("cap") || KEY("deadline")) {
      bad = parse_uint(val, ms_max, &u);
      if (KEY("base")) r->backoff.base_ns = MS(u);
      else if (KEY("cap")) r->backoff.cap_ns = MS(u);
      else r->deadline_ns = MS(u);
    } else if (KEY("multiplier")) {
      bad = parse_double(val, &d);
      r->backoff.multiplier = d;
    } else if (KEY("jitter")) {
      bad = parse_jitter(val, &j);
      r->backoff.jitter = j;
    } else if (KEY("budget_ratio") || KEY("budget_min_per_second")) {
      bad = parse_double(val, &d);
      if (KEY("budget_ratio")) sc->gcfg.ratio = d;
      else sc->gcfg.min_per_second = d;
      sc->has_budget = 1;
    } else if (KEY("budget_window")) {
      bad = parse_uint(val, ms_max, &u);
      sc->gcfg.window_ns = MS(u);
      sc->has_budget = 1;
    }
  }
#undef KEY
  if (bad) {
    set_msg("bad value '%s' for config key '%s'", val, key);
    return -1;
  }
  return 0;
}

static const char *const breaker_keys[] = {
  "failure_threshold", "reset_timeout", "half_open_calls",
  "success_threshold", "trial_timeout", "failure_rate", "slow_call",
  "slow_rate", "window", "window_type", "min_calls", "reset_backoff_base",
  "reset_backoff_multiplier", "reset_backoff_cap", "reset_backoff_jitter"
};
static const char *const retry_keys[] = {
  "attempts", "base", "multiplier", "cap", "jitter", "deadline",
  "budget_ratio", "budget_min_per_second", "budget_window"
};

static void
config_finish(struct scenario *sc, const struct pending *pd)
{
  if (sc->kind != KIND_BREAKER)
    return;
  if (pd->window_given) {
    if (sc->bcfg.window_type == BUTTRESS_WINDOW_TIME)
      sc->bcfg.window_ns = MS(pd->window);
    else
      sc->bcfg.window_size = (uint32_t)pd->window;
  }
  if (pd->backoff_given)
    sc->bcfg.use_reset_backoff = 1;
}

/* ------------------------------------------------------------ steps */

struct metric_name {
  const char *name;
  enum metric m;
  enum kind kind;
};

static const struct metric_name metric_names[] = {
  {"calls", M_CALLS, KIND_BREAKER},
  {"successes", M_SUCCESSES, KIND_BREAKER},
  {"failures", M_FAILURES, KIND_BREAKER},
  {"excluded", M_EXCLUDED, KIND_BREAKER},
  {"cancelled", M_CANCELLED, KIND_BREAKER},
  {"stale", M_STALE, KIND_BREAKER},
  {"rejected", M_REJECTED, KIND_BREAKER},
  {"slow", M_SLOW, KIND_BREAKER},
  {"consecutive_failures", M_CONSECUTIVE_FAILURES, KIND_BREAKER},
  {"window_calls", M_WINDOW_CALLS, KIND_BREAKER},
  {"window_failures", M_WINDOW_FAILURES, KIND_BREAKER},
  {"window_slow", M_WINDOW_SLOW, KIND_BREAKER},
  {"calls", M_R_CALLS, KIND_RETRY},
  {"attempts", M_R_ATTEMPTS, KIND_RETRY},
  {"retries", M_R_RETRIES, KIND_RETRY},
  {"successes", M_R_SUCCESSES, KIND_RETRY},
  {"failures", M_R_FAILURES, KIND_RETRY},
  {"giveups_attempts", M_R_GIVEUPS_ATTEMPTS, KIND_RETRY},
  {"giveups_deadline", M_R_GIVEUPS_DEADLINE, KIND_RETRY},
  {"giveups_budget", M_R_GIVEUPS_BUDGET, KIND_RETRY},
};

static int
parse_metric(struct scenario *sc, struct step *st, const char *arg)
{
  for (size_t i = 0; i < sizeof metric_names / sizeof metric_names[0]; i++)
    if (metric_names[i].kind == sc->kind &&
        strcmp(arg, metric_names[i].name) == 0) {
      st->metric = metric_names[i].m;
      return 0;
    }
  const char *gt = strchr(arg, '>');
  if (sc->kind == KIND_BREAKER && gt) {
    st->from = state_from_name(arg, (size_t)(gt - arg));
    st->to = state_from_name(gt + 1, strlen(gt + 1));
    if (st->from >= 0 && st->to >= 0) {
      st->metric = M_TRANSITION;
      return 0;
    }
  }
  set_msg("unknown metric '%s'", arg);
  return -1;
}

/* Ticket names bound by `allow NAME admit` and not yet used by an outcome:
 * checked while parsing so that a broken script fails as a format error. */
struct names {
  char (*v)[NAME_MAX_LEN + 1];
  size_t n, cap;
};

static int
names_find(const struct names *ns, const char *s)
{
  for (size_t i = 0; i < ns->n; i++)
    if (strcmp(ns->v[i], s) == 0)
      return (int)i;
  return -1;
}

static int
valid_name(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > NAME_MAX_LEN)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
      return 0;
  return 1;
}

static int
parse_breaker_step(struct scenario *sc, struct step *st, const char *op,
                   const char *arg, const char *ex, struct names *live)
{
  static const struct { const char *name; enum op op; } ops[] = {
    {"allow", OP_ALLOW}, {"success", OP_SUCCESS}, {"failure", OP_FAILURE},
    {"excluded", OP_EXCLUDED}, {"cancelled", OP_CANCELLED},
    {"state", OP_STATE}, {"force_open", OP_FORCE_OPEN},
    {"disable", OP_DISABLE}, {"reset", OP_RESET}, {"metric", OP_METRIC},
  };
  int found = 0;
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (strcmp(op, ops[i].name) == 0) {
      st->op = ops[i].op;
      found = 1;
    }
  if (!found) {
    set_msg("unknown breaker op '%s'", op);
    return -1;
  }

  switch (st->op) {
  case OP_ALLOW:
    if (!valid_name(arg)) {
      set_msg("bad ticket name '%s'", arg);
      return -1;
    }
    snprintf(st->ticket, sizeof st->ticket, "%.32s", arg);
    if (strcmp(ex, "admit") == 0) {
      st->expect = EX_ADMIT;
      if (names_find(live, arg) >= 0) {
        set_msg("ticket '%s' is already held (record its outcome first)", arg);
        return -1;
      }
      if (live->n == live->cap) {
        live->cap = live->cap ? live->cap * 2 : 16;
        live->v = realloc(live->v, live->cap * sizeof *live->v);
        if (!live->v) abort();
      }
      snprintf(live->v[live->n++], NAME_MAX_LEN + 1, "%s", arg);
    } else if (strcmp(ex, "reject") == 0) {
      st->expect = EX_REJECT;
    } else if (strncmp(ex, "reject:", 7) == 0 &&
               parse_uint(ex + 7, INT64_MAX / BUTTRESS_NS_PER_MS,
                          &st->value) == 0) {
      st->expect = EX_REJECT_MS;
    } else {
      set_msg("allow expects admit, reject or reject:MS, not '%s'", ex);
      return -1;
    }
    return 0;
  case OP_SUCCESS: case OP_FAILURE: case OP_EXCLUDED: case OP_CANCELLED: {
    char name[64];
    snprintf(name, sizeof name, "%s", arg);
    char *slash = strchr(name, '/');
    st->dur_ms = -1;
    if (slash) {
      *slash = '\0';
      if (parse_uint(slash + 1, BUTTRESS_MAX_DURATION_NS / BUTTRESS_NS_PER_MS,
                     &st->dur_ms)) {
        set_msg("bad duration in '%s'", arg);
        return -1;
      }
    }
    int i = names_find(live, name);
    if (!valid_name(name) || i < 0) {
      set_msg("ticket '%s' is not held (bind it with `allow %s admit`)", name,
              name);
      return -1;
    }
    memmove(&live->v[i], &live->v[i + 1], (live->n - (size_t)i - 1) *
                                              sizeof *live->v);
    live->n--;
    snprintf(st->ticket, sizeof st->ticket, "%.32s", name);
    if (strcmp(ex, "ok") == 0) st->expect = EX_OK;
    else if (strcmp(ex, "stale") == 0) st->expect = EX_STALE;
    else {
      set_msg("an outcome expects ok or stale, not '%s'", ex);
      return -1;
    }
    return 0;
  }
  case OP_STATE:
    if (strcmp(arg, "-") != 0) {
      set_msg("state takes '-', not '%s'", arg);
      return -1;
    }
    st->expect = EX_STATE;
    st->value = state_from_name(ex, strlen(ex));
    if (st->value < 0) {
      set_msg("unknown state '%s'", ex);
      return -1;
    }
    return 0;
  case OP_FORCE_OPEN: case OP_DISABLE: case OP_RESET:
    if (strcmp(arg, "-") != 0 || strcmp(ex, "ok") != 0) {
      set_msg("%s takes '- ok'", op);
      return -1;
    }
    st->expect = EX_OK;
    return 0;
  case OP_METRIC:
    if (parse_metric(sc, st, arg))
      return -1;
    st->expect = EX_VALUE;
    if (parse_uint(ex, INT64_MAX, &st->value)) {
      set_msg("metric expects an integer, not '%s'", ex);
      return -1;
    }
    return 0;
  default:
    return -1;
  }
}

static int
parse_giveup(const char *ex, int64_t *code)
{
  if (strcmp(ex, "giveup:attempts") == 0) *code = BUTTRESS_EXHAUSTED;
  else if (strcmp(ex, "giveup:deadline") == 0) *code = BUTTRESS_DEADLINE;
  else if (strcmp(ex, "giveup:budget") == 0) *code = BUTTRESS_BUDGET;
  else return -1;
  return 0;
}

static int
parse_retry_step(struct scenario *sc, struct step *st, const char *op,
                 const char *arg, const char *ex, int *begun)
{
  const int64_t ms_max = INT64_MAX / BUTTRESS_NS_PER_MS;
  st->arg_ms = -1;
  if (strcmp(op, "begin") == 0) {
    st->op = OP_BEGIN;
    /* outer_deadline=MS: an absolute deadline (scenario time) inherited
     * from an enclosing call; the only way to begin after a deadline. */
    if (strcmp(arg, "-") != 0 &&
        (strncmp(arg, "outer_deadline=", 15) != 0 ||
         parse_uint(arg + 15, ms_max, &st->arg_ms))) {
      set_msg("begin takes '-' or outer_deadline=MS, not '%s'", arg);
      return -1;
    }
    if (strcmp(ex, "ok") == 0) {
      st->expect = EX_OK;
    } else if (strcmp(ex, "giveup:deadline") == 0) {
      st->expect = EX_GIVEUP;
      st->value = BUTTRESS_DEADLINE;
    } else {
      set_msg("begin expects ok or giveup:deadline, not '%s'", ex);
      return -1;
    }
    *begun = 1;
    return 0;
  }
  if (strcmp(op, "fail") == 0) {
    st->op = OP_FAIL;
    if (strcmp(arg, "-") != 0 &&
        (strncmp(arg, "retry_after=", 12) != 0 ||
         parse_uint(arg + 12, ms_max, &st->arg_ms))) {
      set_msg("fail takes '-' or retry_after=MS, not '%s'", arg);
      return -1;
    }
    if (strncmp(ex, "retry:", 6) == 0 &&
        parse_uint(ex + 6, ms_max, &st->value) == 0) {
      st->expect = EX_RETRY_MS;
    } else if (parse_giveup(ex, &st->value) == 0) {
      st->expect = EX_GIVEUP;
    } else {
      set_msg("fail expects retry:MS or giveup:attempts|deadline|budget, "
              "not '%s'", ex);
      return -1;
    }
    if (!*begun) {
      set_msg("fail before any begin");
      return -1;
    }
    return 0;
  }
  if (strcmp(op, "success") == 0) {
    st->op = OP_END;
    if (strcmp(arg, "-") != 0 || strcmp(ex, "ok") != 0) {
      set_msg("success takes '- ok'");
      return -1;
    }
    if (!*begun) {
      set_msg("success before any begin");
      return -1;
    }
    st->expect = EX_OK;
    return 0;
  }
  if (strcmp(op, "metric") == 0) {
    st->op = OP_METRIC;
    if (parse_metric(sc, st, arg))
      return -1;
    st->expect = EX_VALUE;
    if (parse_uint(ex, INT64_MAX, &st->value)) {
      set_msg("metric expects an integer, not '%s'", ex);
      return -1;
    }
    return 0;
  }
  set_msg("unknown retry op '%s'", op);
  return -1;
}

/* Parses sc->path into sc.  -1 with g_msg = "file:line: why". */
static int
scenario_parse(struct scenario *sc)
{
  FILE *f = fopen(sc->path, "r");
  if (!f) {
    set_msg("%s: cannot open: %s", sc->path, strerror(errno));
    return -1;
  }
  char buf[1024];
  int lineno = 0, rc = 0, begun = 0;
  int64_t last_t = 0;
  unsigned seen = 0;
  struct pending pd = {0};
  struct names live = {0};

  while (fgets(buf, sizeof buf, f)) {
    lineno++;
    size_t len = strlen(buf);
    if (len == sizeof buf - 1 && buf[len - 1] != '\n') {
      set_msg("line too long");
      rc = -1;
      break;
    }
    char *hash = strchr(buf, '#');
    if (hash)
      *hash = '\0';
    char text[sizeof buf];
    char *fld[8];
    snprintf(text, sizeof text, "%s", buf);
    int n = split(buf, fld, 6);
    if (n == 0)
      continue;

    if (strcmp(fld[0], "kind") == 0) {
      if (sc->kind != KIND_NONE || n != 2) {
        set_msg("`kind` must be the first directive, given once, with one "
                "value");
        rc = -1;
        break;
      }
      if (strcmp(fld[1], "breaker") == 0) sc->kind = KIND_BREAKER;
      else if (strcmp(fld[1], "retry") == 0) sc->kind = KIND_RETRY;
      else {
        set_msg("unknown kind '%s'", fld[1]);
        rc = -1;
        break;
      }
      continue;
    }
    if (sc->kind == KIND_NONE) {
      set_msg("the first directive must be `kind breaker|retry`");
      rc = -1;
      break;
    }
    if (strcmp(fld[0], "config") == 0) {
      /* Re-split: a config line may hold any number of key=value pairs. */
      char cbuf[sizeof buf];
      snprintf(cbuf, sizeof cbuf, "%s", text);
      char *save = NULL;
      char *tok = strtok_r(cbuf, " \t\r\n", &save);
      int pairs = 0;
      if (sc->nsteps) {
        set_msg("config after the first step");
        rc = -1;
        break;
      }
      while (rc == 0 && (tok = strtok_r(NULL, " \t\r\n", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1]) {
          set_msg("config expects key=value, not '%s'", tok);
          rc = -1;
          break;
        }
        *eq = '\0';
        const char *const *keys =
            sc->kind == KIND_BREAKER ? breaker_keys : retry_keys;
        int nkeys = sc->kind == KIND_BREAKER
                        ? (int)(sizeof breaker_keys / sizeof *breaker_keys)
                        : (int)(sizeof retry_keys / sizeof *retry_keys);
        rc = config_key(sc, &pd, tok, eq + 1, &seen, keys, nkeys);
        pairs++;
      }
      if (rc)
        break;
      if (pairs == 0) {
        set_msg("empty config line");
        rc = -1;
        break;
      }
      continue;
    }

    /* A step: T op arg expect. */
    if (n != 4) {
      set_msg("a step has exactly four fields (T op arg expect), got %d", n);
      rc = -1;
      break;
    }
    if (sc->nsteps == sc->cap) {
      sc->cap = sc->cap ? sc->cap * 2 : 64;
      sc->steps = realloc(sc->steps, sc->cap * sizeof *sc->steps);
      if (!sc->steps) abort();
    }
    if (sc->nsteps == 0)
      config_finish(sc, &pd);
    struct step *st = &sc->steps[sc->nsteps];
    memset(st, 0, sizeof *st);
    st->line = lineno;
    snprintf(st->text, sizeof st->text, "%s %s %s %s", fld[0], fld[1],
             fld[2], fld[3]);
    if (parse_uint(fld[0], INT64_MAX / BUTTRESS_NS_PER_MS, &st->t_ms)) {
      set_msg("bad time '%s' (integer milliseconds)", fld[0]);
      rc = -1;
      break;
    }
    if (st->t_ms < last_t) {
      set_msg("time goes backwards (%" PRId64 " after %" PRId64 ")",
              st->t_ms, last_t);
      rc = -1;
      break;
    }
    last_t = st->t_ms;
    rc = sc->kind == KIND_BREAKER
             ? parse_breaker_step(sc, st, fld[1], fld[2], fld[3], &live)
             : parse_retry_step(sc, st, fld[1], fld[2], fld[3], &begun);
    if (rc)
      break;
    sc->nsteps++;
  }
  if (rc == 0 && ferror(f)) {
    set_msg("read error");
    rc = -1;
  }
  if (rc == 0 && sc->kind == KIND_NONE) {
    set_msg("no `kind` directive");
    rc = -1;
  }
  if (rc == 0 && sc->nsteps == 0) {
    set_msg("no steps");
    rc = -1;
  }
  fclose(f);
  free(live.v);
  if (rc) {
    char why[MSG_LEN];
    snprintf(why, sizeof why, "%s", g_msg);
    set_msg("%s:%d: %s", sc->path, lineno, why);
  }
  return rc;
}

/* ------------------------------------------------------------ replay */

struct ticket_slot {
  char name[NAME_MAX_LEN + 1];
  buttress_ticket t;
};

struct run {
  struct scenario *sc;
  const struct step *st;
  buttress_breaker *br;
  buttress_retry *rt;
  buttress_budget *bg;
  buttress_retry_call call;
  struct ticket_slot *tickets;
  size_t ntickets;
};

static int
mismatch(const struct run *ru, const char *fmt, ...)
{
  char what[MSG_LEN / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  set_msg("%s:%d: step `%s` [%s]: %s", ru->sc->path, ru->st->line,
          ru->st->text, ru->sc->no_clock ? "no-clock" : "clock", what);
  return -1;
}

static void *
place(size_t size)
{
  /* 64-byte aligned, as the header recommends; size rounded for C11. */
  size_t rounded = (size + 63) & ~(size_t)63;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) abort();
  memset(p, 0xA5, rounded ? rounded : 64); /* init must not rely on zeros */
  return p;
}

static void
describe_allow(char *out, size_t n, int rc, const buttress_ticket *t)
{
  if (rc == 0)
    snprintf(out, n, "admit");
  else if (rc == BUTTRESS_OPEN && t->retry_after_ns == BUTTRESS_NONE)
    snprintf(out, n, "reject (retry_after unknown)");
  else if (rc == BUTTRESS_OPEN && t->retry_after_ns % BUTTRESS_NS_PER_MS == 0)
    snprintf(out, n, "reject:%" PRId64, t->retry_after_ns / BUTTRESS_NS_PER_MS);
  else if (rc == BUTTRESS_OPEN)
    snprintf(out, n, "reject with retry_after %" PRId64 " ns",
             t->retry_after_ns);
  else
    snprintf(out, n, "%s (%d)", buttress_errname(rc), rc);
}

static int
snapshot(const struct run *ru, int64_t now, buttress_breaker_metrics *m)
{
  memset(m, 0, sizeof *m);
  return buttress_breaker_metrics_get(ru->br, now, m);
}

/* After a NEED_CLOCK answer nothing may have changed. */
static int
check_unchanged(const struct run *ru, const buttress_breaker_metrics *before,
                int64_t now, const char *what)
{
  buttress_breaker_metrics after;
  if (snapshot(ru, now, &after) != 0)
    return mismatch(ru, "metrics_get failed");
  if (memcmp(before, &after, sizeof after) != 0)
    return mismatch(ru, "%s with BUTTRESS_NO_CLOCK answered NEED_CLOCK but "
                        "changed the breaker's metrics", what);
  return 0;
}

static int
step_allow(struct run *ru, int64_t now)
{
  const struct step *st = ru->st;
  buttress_ticket t;
  memset(&t, 0, sizeof t);
  int rc;
  if (ru->sc->no_clock) {
    int state = buttress_breaker_state(ru->br);
    buttress_breaker_metrics before;
    snapshot(ru, now, &before);
    rc = buttress_breaker_allow(ru->br, BUTTRESS_NO_CLOCK, &t);
    /* Header: a closed or disabled breaker never needs the clock in allow;
     * open and half-open do. */
    int needs = state == BUTTRESS_STATE_OPEN ||
                state == BUTTRESS_STATE_HALF_OPEN;
    if (needs && rc != BUTTRESS_NEED_CLOCK)
      return mismatch(ru, "allow(NO_CLOCK) in state %s returned %s, "
                      "expected NEED_CLOCK", buttress_state_name(state),
                      buttress_errname(rc));
    if ((state == BUTTRESS_STATE_CLOSED || state == BUTTRESS_STATE_DISABLED) &&
        rc == BUTTRESS_NEED_CLOCK)
      return mismatch(ru, "allow(NO_CLOCK) in state %s needed the clock",
                      buttress_state_name(state));
    if (rc == BUTTRESS_NEED_CLOCK) {
      if (check_unchanged(ru, &before, now, "allow"))
        return -1;
      memset(&t, 0, sizeof t);
      rc = buttress_breaker_allow(ru->br, now, &t);
    }
  } else {
    rc = buttress_breaker_allow(ru->br, now, &t);
  }

  int ok;
  switch (st->expect) {
  case EX_ADMIT: ok = rc == 0; break;
  case EX_REJECT:
    ok = rc == BUTTRESS_OPEN && t.retry_after_ns == BUTTRESS_NONE;
    break;
  default:
    ok = rc == BUTTRESS_OPEN && t.retry_after_ns == MS(st->value);
    break;
  }
  if (!ok) {
    char got[96];
    describe_allow(got, sizeof got, rc, &t);
    const char *want = st->expect == EX_ADMIT ? "admit"
                       : st->expect == EX_REJECT
                           ? "reject (retry_after unknown)"
                           : "reject:MS";
    if (st->expect == EX_REJECT_MS)
      return mismatch(ru, "expected reject:%" PRId64 ", got %s", st->value,
                      got);
    return mismatch(ru, "expected %s, got %s", want, got);
  }
  if (rc == 0) {
    struct ticket_slot *slot = NULL;
    for (size_t i = 0; i < ru->ntickets; i++)
      if (strcmp(ru->tickets[i].name, st->ticket) == 0)
        slot = &ru->tickets[i];
    if (!slot) {
      ru->tickets = realloc(ru->tickets, (ru->ntickets + 1) *
                                             sizeof *ru->tickets);
      if (!ru->tickets) abort();
      slot = &ru->tickets[ru->ntickets++];
      snprintf(slot->name, sizeof slot->name, "%s", st->ticket);
    }
    slot->t = t;
  }
  return 0;
}

static int
step_outcome(struct run *ru, int64_t now)
{
  const struct step *st = ru->st;
  static const int outcome_of[] = {
    [OP_SUCCESS] = BUTTRESS_SUCCESS, [OP_FAILURE] = BUTTRESS_FAILURE,
    [OP_EXCLUDED] = BUTTRESS_EXCLUDED, [OP_CANCELLED] = BUTTRESS_CANCELLED,
  };
  int outcome = outcome_of[st->op];
  struct ticket_slot *slot = NULL;
  for (size_t i = 0; i < ru->ntickets; i++)
    if (strcmp(ru->tickets[i].name, st->ticket) == 0)
      slot = &ru->tickets[i];
  if (!slot)
    return mismatch(ru, "ticket '%s' was never admitted", st->ticket);
  int64_t dur = st->dur_ms >= 0 ? MS(st->dur_ms) : BUTTRESS_NO_CLOCK;
  int rc;
  /* A binding that timed the call has read the clock; only an untimed
   * outcome tries NO_CLOCK first. */
  if (ru->sc->no_clock && st->dur_ms < 0) {
    buttress_breaker_metrics before;
    snapshot(ru, now, &before);
    buttress_ticket copy = slot->t;
    int state = buttress_breaker_state(ru->br);
    rc = buttress_breaker_record(ru->br, &slot->t, outcome, dur,
                                 BUTTRESS_NO_CLOCK);
    /* Header: a failure needs the clock.  Checked where it can move the
     * breaker (closed, half-open); a disabled breaker may skip it. */
    if (outcome == BUTTRESS_FAILURE && st->expect == EX_OK &&
        (state == BUTTRESS_STATE_CLOSED ||
         state == BUTTRESS_STATE_HALF_OPEN) &&
        rc != BUTTRESS_NEED_CLOCK)
      return mismatch(ru, "record(FAILURE, NO_CLOCK) returned %s, expected "
                      "NEED_CLOCK", buttress_errname(rc));
    if (rc == BUTTRESS_NEED_CLOCK) {
      if (check_unchanged(ru, &before, now, "record"))
        return -1;
      slot->t = copy;
      rc = buttress_breaker_record(ru->br, &slot->t, outcome, dur, now);
    }
  } else {
    rc = buttress_breaker_record(ru->br, &slot->t, outcome, dur, now);
  }
  int want = st->expect == EX_OK ? 0 : BUTTRESS_STALE;
  if (rc != want)
    return mismatch(ru, "expected %s, got %s (%d)",
                    st->expect == EX_OK ? "ok" : "stale",
                    rc == 0 ? "ok" : rc == BUTTRESS_STALE ? "stale"
                                                          : buttress_errname(rc),
                    rc);
  return 0;
}

static int
step_breaker_metric(struct run *ru, int64_t now)
{
  const struct step *st = ru->st;
  buttress_breaker_metrics m;
  int rc = snapshot(ru, now, &m);
  if (rc)
    return mismatch(ru, "metrics_get returned %s", buttress_errname(rc));
  uint64_t v = 0;
  switch (st->metric) {
  case M_CALLS: v = m.calls; break;
  case M_SUCCESSES: v = m.successes; break;
  case M_FAILURES: v = m.failures; break;
  case M_EXCLUDED: v = m.excluded; break;
  case M_CANCELLED: v = m.cancelled; break;
  case M_STALE: v = m.stale; break;
  case M_REJECTED: v = m.rejected; break;
  case M_SLOW: v = m.slow; break;
  case M_CONSECUTIVE_FAILURES: v = m.consecutive_failures; break;
  case M_WINDOW_CALLS: v = m.window_calls; break;
  case M_WINDOW_FAILURES: v = m.window_failures; break;
  case M_WINDOW_SLOW: v = m.window_slow; break;
  case M_TRANSITION: v = m.transitions[st->from][st->to]; break;
  default: return mismatch(ru, "metric not valid for a breaker");
  }
  if (v != (uint64_t)st->value)
    return mismatch(ru, "expected %" PRId64 ", got %" PRIu64, st->value, v);
  return 0;
}

static int
step_breaker(struct run *ru)
{
  const struct step *st = ru->st;
  int64_t now = MS(st->t_ms);
  int rc;
  switch (st->op) {
  case OP_ALLOW:
    return step_allow(ru, now);
  case OP_SUCCESS: case OP_FAILURE: case OP_EXCLUDED: case OP_CANCELLED:
    return step_outcome(ru, now);
  case OP_STATE:
    rc = buttress_breaker_state(ru->br);
    if (rc != st->value)
      return mismatch(ru, "expected %s, got %s (%d)",
                      buttress_state_name((int)st->value),
                      buttress_state_name(rc), rc);
    return 0;
  case OP_FORCE_OPEN: case OP_DISABLE: case OP_RESET: {
    buttress_ticket out;
    memset(&out, 0, sizeof out);
    rc = st->op == OP_FORCE_OPEN ? buttress_breaker_force_open(ru->br, now, &out)
         : st->op == OP_DISABLE  ? buttress_breaker_disable(ru->br, now, &out)
                                 : buttress_breaker_reset(ru->br, now, &out);
    if (rc != 0)
      return mismatch(ru, "expected ok, got %s (%d)", buttress_errname(rc), rc);
    return 0;
  }
  case OP_METRIC:
    return step_breaker_metric(ru, now);
  default:
    return mismatch(ru, "op not valid for a breaker");
  }
}

static const char *
giveup_name(int64_t code)
{
  switch (code) {
  case BUTTRESS_EXHAUSTED: return "giveup:attempts";
  case BUTTRESS_DEADLINE: return "giveup:deadline";
  case BUTTRESS_BUDGET: return "giveup:budget";
  default: return "?";
  }
}

static int
step_retry(struct run *ru)
{
  const struct step *st = ru->st;
  int64_t now = MS(st->t_ms);
  int rc;
  switch (st->op) {
  case OP_BEGIN: {
    int64_t outer = st->arg_ms >= 0 ? MS(st->arg_ms) : BUTTRESS_NONE;
    memset(&ru->call, 0, sizeof ru->call);
    rc = buttress_retry_begin(ru->rt, &ru->call, ru->bg, outer, now);
    int want = st->expect == EX_OK ? 0 : (int)st->value;
    if (rc != want)
      return mismatch(ru, "expected %s, got %s (%d)",
                      want ? giveup_name(want) : "ok",
                      rc == 0 ? "ok" : buttress_errname(rc), rc);
    return 0;
  }
  case OP_FAIL: {
    int64_t ov = st->arg_ms >= 0 ? MS(st->arg_ms) : BUTTRESS_NONE;
    rc = buttress_retry_next(ru->rt, &ru->call, ru->bg, ov, now);
    if (st->expect == EX_RETRY_MS) {
      if (rc != 0) {
        const char *got = rc == BUTTRESS_EXHAUSTED || rc == BUTTRESS_DEADLINE ||
                                  rc == BUTTRESS_BUDGET
                              ? giveup_name(rc)
                              : buttress_errname(rc);
        return mismatch(ru, "expected retry:%" PRId64 ", got %s (%d)",
                        st->value, got, rc);
      }
      if (ru->call.delay_ns != MS(st->value))
        return mismatch(ru, "expected retry:%" PRId64 ", got a delay of "
                        "%" PRId64 " ns", st->value, ru->call.delay_ns);
      return 0;
    }
    if (rc != st->value) {
      if (rc == 0)
        return mismatch(ru, "expected %s, got retry with a delay of "
                        "%" PRId64 " ns", giveup_name(st->value),
                        ru->call.delay_ns);
      return mismatch(ru, "expected %s, got %s (%d)", giveup_name(st->value),
                      buttress_errname(rc), rc);
    }
    if (ru->call.reason != rc)
      return mismatch(ru, "gave up with %s but call->reason is %d",
                      giveup_name(rc), ru->call.reason);
    return 0;
  }
  case OP_END:
    rc = buttress_retry_end(ru->rt, &ru->call, BUTTRESS_SUCCESS);
    if (rc != 0)
      return mismatch(ru, "expected ok, got %s (%d)", buttress_errname(rc), rc);
    return 0;
  case OP_METRIC: {
    buttress_retry_metrics m;
    memset(&m, 0, sizeof m);
    rc = buttress_retry_metrics_get(ru->rt, BUTTRESS_NO_CLOCK, &m);
    if (rc)
      return mismatch(ru, "metrics_get returned %s", buttress_errname(rc));
    uint64_t v = 0;
    switch (st->metric) {
    case M_R_CALLS: v = m.calls; break;
    case M_R_ATTEMPTS: v = m.attempts; break;
    case M_R_RETRIES: v = m.retries; break;
    case M_R_SUCCESSES: v = m.successes; break;
    case M_R_FAILURES: v = m.failures; break;
    case M_R_GIVEUPS_ATTEMPTS: v = m.giveups_attempts; break;
    case M_R_GIVEUPS_DEADLINE: v = m.giveups_deadline; break;
    case M_R_GIVEUPS_BUDGET: v = m.giveups_budget; break;
    default: return mismatch(ru, "metric not valid for a retry");
    }
    if (v != (uint64_t)st->value)
      return mismatch(ru, "expected %" PRId64 ", got %" PRIu64, st->value, v);
    return 0;
  }
  default:
    return mismatch(ru, "op not valid for a retry");
  }
}

/* Builds the objects and replays every step; -1 with g_msg on the first
 * mismatch. */
static int
scenario_replay(struct scenario *sc)
{
  struct run ru;
  memset(&ru, 0, sizeof ru);
  ru.sc = sc;
  int rc = 0;

  if (sc->kind == KIND_BREAKER) {
    int c = buttress_breaker_config_check(&sc->bcfg);
    size_t size = buttress_breaker_sizeof(&sc->bcfg);
    if (c != 0 || size == 0) {
      set_msg("%s: the core rejects this breaker config (%s)", sc->path,
              buttress_errname(c));
      return -1;
    }
    ru.br = place(size);
    c = buttress_breaker_init(ru.br, size, &sc->bcfg);
    if (c != 0) {
      set_msg("%s: breaker_init returned %s", sc->path, buttress_errname(c));
      free(ru.br);
      return -1;
    }
  } else {
    int c = buttress_retry_config_check(&sc->rcfg);
    if (c != 0) {
      set_msg("%s: the core rejects this retry config (%s)", sc->path,
              buttress_errname(c));
      return -1;
    }
    size_t size = buttress_retry_sizeof();
    ru.rt = place(size);
    c = buttress_retry_init(ru.rt, size, &sc->rcfg, 42);
    if (c == 0 && sc->has_budget) {
      c = buttress_budget_config_check(&sc->gcfg);
      if (c == 0) {
        size_t gsize = buttress_budget_sizeof();
        ru.bg = place(gsize);
        c = buttress_budget_init(ru.bg, gsize, &sc->gcfg);
      }
    }
    if (c != 0) {
      set_msg("%s: retry/budget setup returned %s", sc->path,
              buttress_errname(c));
      free(ru.rt);
      free(ru.bg);
      return -1;
    }
  }

  for (size_t i = 0; i < sc->nsteps && rc == 0; i++) {
    ru.st = &sc->steps[i];
    rc = sc->kind == KIND_BREAKER ? step_breaker(&ru) : step_retry(&ru);
  }
  free(ru.br);
  free(ru.rt);
  free(ru.bg);
  free(ru.tickets);
  return rc;
}

/* ------------------------------------------------------------ cmocka */

static void
scenario_init(struct scenario *sc)
{
  sc->kind = KIND_NONE;
  buttress_breaker_config_init(&sc->bcfg);
  /* README: jitter defaults to none in scenarios so that times are exact. */
  sc->bcfg.reset_backoff.jitter = BUTTRESS_JITTER_NONE;
  buttress_retry_config_init(&sc->rcfg);
  sc->rcfg.backoff.jitter = BUTTRESS_JITTER_NONE;
  buttress_budget_config_init(&sc->gcfg);
  sc->has_budget = 0;
  sc->steps = NULL;
  sc->nsteps = sc->cap = 0;
}

static void
run_scenario(void **state)
{
  struct scenario *proto = *state;
  struct scenario sc;
  memset(&sc, 0, sizeof sc);
  snprintf(sc.path, sizeof sc.path, "%s", proto->path);
  sc.no_clock = proto->no_clock;
  scenario_init(&sc);
  g_msg[0] = '\0';
  int rc = scenario_parse(&sc);
  if (rc == 0)
    rc = scenario_replay(&sc);
  free(sc.steps);
  if (rc) {
    print_error("%s\n", g_msg);
    fail();
  }
}

/* No scenario at all is a failure: an empty run must not look green. */
static void
no_scenarios(void **state)
{
  print_error("no *.txt scenario found in %s\n", (const char *)*state);
  fail();
}

static int
is_scenario(const struct dirent *e)
{
  size_t n = strlen(e->d_name);
  return n > 4 && e->d_name[0] != '.' && strcmp(e->d_name + n - 4, ".txt") == 0;
}

int
main(void)
{
  const char *dir = getenv("BUTTRESS_SCENARIOS");
  if (!dir || !*dir)
    dir = "tests/scenarios";
  struct dirent **list = NULL;
  int n = scandir(dir, &list, is_scenario, alphasort);
  if (n < 0) {
    fprintf(stderr, "test_scenarios: cannot read %s: %s\n", dir,
            strerror(errno));
    return 1;
  }
  if (n == 0) {
    const struct CMUnitTest none[] = {
      {"no_scenarios", no_scenarios, NULL, NULL, (void *)dir},
    };
    free(list);
    return cmocka_run_group_tests_name("scenarios", none, NULL, NULL);
  }

  size_t count = (size_t)n * 2;
  struct scenario *protos = calloc(count, sizeof *protos);
  struct CMUnitTest *tests = calloc(count, sizeof *tests);
  if (!protos || !tests)
    abort();
  for (int i = 0; i < n; i++) {
    for (int mode = 0; mode < 2; mode++) {
      struct scenario *p = &protos[i * 2 + mode];
      snprintf(p->path, sizeof p->path, "%s/%s", dir, list[i]->d_name);
      snprintf(p->name, sizeof p->name, "%.255s [%s]", list[i]->d_name,
               mode ? "no-clock" : "clock");
      p->no_clock = mode;
      tests[i * 2 + mode] = (struct CMUnitTest){
        .name = p->name, .test_func = run_scenario, .initial_state = p,
      };
    }
    free(list[i]);
  }
  free(list);
  int failed = _cmocka_run_group_tests("scenarios", tests, count, NULL, NULL);
  free(tests);
  free(protos);
  return failed ? 1 : 0; /* a count of 256 failures must not exit 0 */
}
