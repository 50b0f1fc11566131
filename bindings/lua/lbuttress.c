/*
 * buttress.core: the Lua C module behind lua/buttress.lua on Lua 5.4 (it
 * also builds against LuaJIT through lbuttress_compat.h).  The only C file
 * that knows the Lua C API.
 *
 * It exposes the core's primitives, not policy: the facade (buttress.lua)
 * owns call loops, errors and sleeping, and lua/buttress/ffi.lua exposes the
 * same primitives to LuaJIT, so both paths run the same Lua on top.
 *
 * State blocks live inline in userdata with named metatables; userdata
 * memory is aligned to at least 8, which the core asks for.  Times and
 * durations are integer nanoseconds, -1 (BUTTRESS_NONE / NO_CLOCK) meaning
 * "none".  A `clock` argument is nil (the core's monotonic clock) or a
 * function returning nanoseconds: the test hook for explicit time.
 */

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"

#include "buttress.h"
#include "lbuttress_compat.h"

#define BREAKER_MT "buttress.breaker"
#define TICKET_MT "buttress.ticket"
#define RETRY_MT "buttress.retry"
#define CALL_MT "buttress.retry_call"
#define BUDGET_MT "buttress.budget"
#define BACKOFF_MT "buttress.backoff"

/* The ABI this module was written for; the core reports its own. */
#ifndef BUTTRESS_ABI_VERSION
#define BUTTRESS_ABI_VERSION 2
#endif

#define REGION_MT "buttress.region"

enum { TICKET_ADMITTED = 1, TICKET_DONE = 2 };

/* Breaker and budget userdata: a pointer to the state, which is either
 * inline right after it (state[]) or in a shared region, whose userdata the
 * handle then keeps alive as its user value. */
typedef struct lbt_handle {
  void *p;
  uint64_t state[]; /* 8-aligned: the userdata block is */
} lbt_handle;

typedef struct lbt_region {
  buttress_region *r;
} lbt_region;

/* What br:allow() hands to Lua: the core's ticket plus what the binding
 * needs to time the call and to catch a ticket recorded twice or on the
 * wrong breaker. */
typedef struct lbt_ticket {
  buttress_ticket t;
  const void *owner;
  int64_t start_ns;
  int32_t state;
} lbt_ticket;

/* ------------------------------------------------------------ helpers */

static void *
lbt_newstate(lua_State *L, size_t size, const char *mt)
{
  void *p = lua_newuserdatauv(L, size, 0);
  if (((uintptr_t)p & 7u) != 0)
    luaL_error(L, "buttress: userdata is not aligned to 8");
  memset(p, 0, size);
  luaL_setmetatable(L, mt);
  return p;
}

/* Lua number to int64, saturating: out-of-range values stay out of range
 * for the core's checks instead of wrapping into valid ones. */
static int64_t
lbt_toint64(lua_State *L, int idx)
{
  lua_Number d;
  if (lua_isinteger(L, idx)) return (int64_t)lua_tointeger(L, idx);
  d = lua_tonumber(L, idx);
  if (d != d) return INT64_MIN;
  if (d >= 9223372036854775807.0) return INT64_MAX;
  if (d <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)d;
}

static int64_t
lbt_checkint64(lua_State *L, int idx)
{
  luaL_checktype(L, idx, LUA_TNUMBER);
  return lbt_toint64(L, idx);
}

static int64_t
lbt_optint64(lua_State *L, int idx, int64_t def)
{
  return lua_isnoneornil(L, idx) ? def : lbt_checkint64(L, idx);
}

/* Read the time: the core's clock, or the caller's clock function. */
static int64_t
lbt_clock(lua_State *L, int idx)
{
  int64_t ns;
  if (lua_isnoneornil(L, idx)) return buttress_monotonic_ns();
  lua_pushvalue(L, idx);
  lua_call(L, 0, 1);
  if (lua_type(L, -1) != LUA_TNUMBER)
    luaL_error(L, "buttress: clock function must return nanoseconds");
  ns = lbt_toint64(L, -1);
  lua_pop(L, 1);
  return ns;
}

static void
lbt_setint(lua_State *L, const char *k, int64_t v)
{
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void
lbt_setnum(lua_State *L, const char *k, double v)
{
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, k);
}

/* Config fields: absent ones keep the core's default.  The facade checks
 * types and names the user's argument; these guard the C side only. */
static int
lbt_field(lua_State *L, int t, const char *k)
{
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "buttress: config field '%s' must be a number", k);
  return 1;
}

static void
lbt_get_i64(lua_State *L, int t, const char *k, int64_t *out)
{
  if (!lbt_field(L, t, k)) return;
  *out = lbt_toint64(L, -1);
  lua_pop(L, 1);
}

static void
lbt_get_u32(lua_State *L, int t, const char *k, uint32_t *out)
{
  int64_t v;
  if (!lbt_field(L, t, k)) return;
  v = lbt_toint64(L, -1);
  lua_pop(L, 1);
  if (v < 0 || v > (int64_t)UINT32_MAX)
    luaL_error(L, "buttress: config field '%s' out of range", k);
  *out = (uint32_t)v;
}

static void
lbt_get_i32(lua_State *L, int t, const char *k, int32_t *out)
{
  int64_t v;
  if (!lbt_field(L, t, k)) return;
  v = lbt_toint64(L, -1);
  lua_pop(L, 1);
  if (v < INT32_MIN || v > INT32_MAX)
    luaL_error(L, "buttress: config field '%s' out of range", k);
  *out = (int32_t)v;
}

static void
lbt_get_dbl(lua_State *L, int t, const char *k, double *out)
{
  if (!lbt_field(L, t, k)) return;
  *out = (double)lua_tonumber(L, -1);
  lua_pop(L, 1);
}

static void
lbt_backoff_from(lua_State *L, int t, buttress_backoff_config *c)
{
  lbt_get_i64(L, t, "base_ns", &c->base_ns);
  lbt_get_i64(L, t, "cap_ns", &c->cap_ns);
  lbt_get_dbl(L, t, "multiplier", &c->multiplier);
  lbt_get_i32(L, t, "jitter", &c->jitter);
}

static void
lbt_push_backoff(lua_State *L, const buttress_backoff_config *c)
{
  lua_createtable(L, 0, 4);
  lbt_setint(L, "base_ns", c->base_ns);
  lbt_setint(L, "cap_ns", c->cap_ns);
  lbt_setnum(L, "multiplier", c->multiplier);
  lbt_setint(L, "jitter", c->jitter);
}

/* A config table (argument t) over the defaults. */
static void
lbt_breaker_from(lua_State *L, int t, buttress_breaker_config *c)
{
  buttress_breaker_config_init(c);
  luaL_checktype(L, t, LUA_TTABLE);
  lbt_get_u32(L, t, "failure_threshold", &c->failure_threshold);
  lbt_get_u32(L, t, "half_open_calls", &c->half_open_calls);
  lbt_get_u32(L, t, "success_threshold", &c->success_threshold);
  lbt_get_u32(L, t, "window_size", &c->window_size);
  lbt_get_u32(L, t, "min_calls", &c->min_calls);
  lbt_get_i32(L, t, "window_type", &c->window_type);
  lbt_get_i64(L, t, "window_ns", &c->window_ns);
  lbt_get_i64(L, t, "reset_timeout_ns", &c->reset_timeout_ns);
  lbt_get_i64(L, t, "trial_timeout_ns", &c->trial_timeout_ns);
  lbt_get_i64(L, t, "slow_call_ns", &c->slow_call_ns);
  lbt_get_dbl(L, t, "failure_rate", &c->failure_rate);
  lbt_get_dbl(L, t, "slow_rate", &c->slow_rate);
  lbt_get_i32(L, t, "use_reset_backoff", &c->use_reset_backoff);
  lua_getfield(L, t, "reset_backoff");
  if (lua_istable(L, -1)) lbt_backoff_from(L, lua_gettop(L), &c->reset_backoff);
  lua_pop(L, 1);
}

static void
lbt_push_breaker_config(lua_State *L, const buttress_breaker_config *c)
{
  lua_createtable(L, 0, 14);
  lbt_setint(L, "failure_threshold", c->failure_threshold);
  lbt_setint(L, "half_open_calls", c->half_open_calls);
  lbt_setint(L, "success_threshold", c->success_threshold);
  lbt_setint(L, "window_size", c->window_size);
  lbt_setint(L, "min_calls", c->min_calls);
  lbt_setint(L, "window_type", c->window_type);
  lbt_setint(L, "window_ns", c->window_ns);
  lbt_setint(L, "reset_timeout_ns", c->reset_timeout_ns);
  lbt_setint(L, "trial_timeout_ns", c->trial_timeout_ns);
  lbt_setint(L, "slow_call_ns", c->slow_call_ns);
  lbt_setnum(L, "failure_rate", c->failure_rate);
  lbt_setnum(L, "slow_rate", c->slow_rate);
  lbt_setint(L, "use_reset_backoff", c->use_reset_backoff);
  lbt_push_backoff(L, &c->reset_backoff);
  lua_setfield(L, -2, "reset_backoff");
}

static void
lbt_retry_from(lua_State *L, int t, buttress_retry_config *c)
{
  buttress_retry_config_init(c);
  luaL_checktype(L, t, LUA_TTABLE);
  lbt_get_u32(L, t, "attempts", &c->attempts);
  lbt_get_i64(L, t, "deadline_ns", &c->deadline_ns);
  lua_getfield(L, t, "backoff");
  if (lua_istable(L, -1)) lbt_backoff_from(L, lua_gettop(L), &c->backoff);
  lua_pop(L, 1);
}

static void
lbt_push_retry_config(lua_State *L, const buttress_retry_config *c)
{
  lua_createtable(L, 0, 3);
  lbt_setint(L, "attempts", c->attempts);
  lbt_setint(L, "deadline_ns", c->deadline_ns);
  lbt_push_backoff(L, &c->backoff);
  lua_setfield(L, -2, "backoff");
}

static void
lbt_budget_from(lua_State *L, int t, buttress_budget_config *c)
{
  buttress_budget_config_init(c);
  luaL_checktype(L, t, LUA_TTABLE);
  lbt_get_dbl(L, t, "ratio", &c->ratio);
  lbt_get_dbl(L, t, "min_per_second", &c->min_per_second);
  lbt_get_i64(L, t, "window_ns", &c->window_ns);
}

static void
lbt_push_budget_config(lua_State *L, const buttress_budget_config *c)
{
  lua_createtable(L, 0, 3);
  lbt_setnum(L, "ratio", c->ratio);
  lbt_setnum(L, "min_per_second", c->min_per_second);
  lbt_setint(L, "window_ns", c->window_ns);
}

static void
lbt_backoff_cfg_from(lua_State *L, int t, buttress_backoff_config *c)
{
  buttress_backoff_config_init(c);
  luaL_checktype(L, t, LUA_TTABLE);
  lbt_backoff_from(L, t, c);
}

/* A seed argument: nil draws one from the operating system. */
static uint64_t
lbt_seed(lua_State *L, int idx)
{
  if (lua_isnoneornil(L, idx)) return buttress_entropy_seed();
  return (uint64_t)lbt_checkint64(L, idx);
}

/* Misuse seen here is the user's, two calls up (user -> facade -> here):
 * point the message at the user's line. */
static int
lbt_argerror(lua_State *L, const char *fmt, ...)
{
  va_list ap;
  luaL_where(L, 2);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

static int
lbt_fail(lua_State *L, const char *what, int rc)
{
  return luaL_error(L, "buttress: %s: %s", what, buttress_strerror(rc));
}

#define checkbreaker(L) \
  ((buttress_breaker *)((lbt_handle *)luaL_checkudata(L, 1, BREAKER_MT))->p)

/* A handle with its state inline (1 user value for a region, unused). */
static lbt_handle *
lbt_newhandle(lua_State *L, size_t size, const char *mt)
{
  lbt_handle *h = (lbt_handle *)lua_newuserdatauv(L, sizeof *h + size, 1);
  if (((uintptr_t)h->state & 7u) != 0)
    luaL_error(L, "buttress: userdata is not aligned to 8");
  memset(h, 0, sizeof *h + size);
  h->p = h->state;
  luaL_setmetatable(L, mt);
  return h;
}

/* ----------------------------------------------------- module functions */

static int
l_now(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)buttress_monotonic_ns());
  return 1;
}

/* Plain Lua only: blocks the thread.  nginx never loads this module. */
static int
l_sleep(lua_State *L)
{
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts, rem;
  if (!(s > 0)) return 0;
  if (s > 1e9) s = 1e9;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &rem) != 0 && errno == EINTR) ts = rem;
  return 0;
}

static int
l_entropy_seed(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)buttress_entropy_seed());
  return 1;
}

static int
l_strerror(lua_State *L)
{
  lua_pushstring(L, buttress_strerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int
l_errname(lua_State *L)
{
  lua_pushstring(L, buttress_errname((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int
l_state_name(lua_State *L)
{
  lua_pushstring(L, buttress_state_name((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int
l_jitter_parse(lua_State *L)
{
  int j = buttress_jitter_parse(luaL_checkstring(L, 1));
  if (j < 0) return 0;
  lua_pushinteger(L, j);
  return 1;
}

static int
l_jitter_name(lua_State *L)
{
  lua_pushstring(L, buttress_jitter_name((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int
l_breaker_defaults(lua_State *L)
{
  buttress_breaker_config c;
  buttress_breaker_config_init(&c);
  lbt_push_breaker_config(L, &c);
  return 1;
}

static int
l_breaker_check(lua_State *L)
{
  buttress_breaker_config c;
  lbt_breaker_from(L, 1, &c);
  lua_pushinteger(L, buttress_breaker_config_check(&c));
  return 1;
}

static int
l_retry_defaults(lua_State *L)
{
  buttress_retry_config c;
  buttress_retry_config_init(&c);
  lbt_push_retry_config(L, &c);
  return 1;
}

static int
l_retry_check(lua_State *L)
{
  buttress_retry_config c;
  lbt_retry_from(L, 1, &c);
  lua_pushinteger(L, buttress_retry_config_check(&c));
  return 1;
}

static int
l_budget_defaults(lua_State *L)
{
  buttress_budget_config c;
  buttress_budget_config_init(&c);
  lbt_push_budget_config(L, &c);
  return 1;
}

static int
l_budget_check(lua_State *L)
{
  buttress_budget_config c;
  lbt_budget_from(L, 1, &c);
  lua_pushinteger(L, buttress_budget_config_check(&c));
  return 1;
}

static int
l_backoff_defaults(lua_State *L)
{
  buttress_backoff_config c;
  buttress_backoff_config_init(&c);
  lbt_push_backoff(L, &c);
  return 1;
}

static int
l_backoff_check(lua_State *L)
{
  buttress_backoff_config c;
  lbt_backoff_cfg_from(L, 1, &c);
  lua_pushinteger(L, buttress_backoff_config_check(&c));
  return 1;
}

/* ------------------------------------------------------------- breaker */

static int
l_breaker_new(lua_State *L)
{
  buttress_breaker_config c;
  size_t size;
  void *mem;
  int rc;
  lbt_breaker_from(L, 1, &c);
  size = buttress_breaker_sizeof(&c);
  if (size == 0) return lbt_fail(L, "breaker", BUTTRESS_EINVAL);
  mem = lbt_newhandle(L, size, BREAKER_MT)->state;
  rc = buttress_breaker_init(mem, size, &c);
  if (rc != 0) return lbt_fail(L, "breaker", rc);
  return 1;
}

/* allow() and record() are the hot path: they carry the breaker and ticket
 * metatables as upvalues 1 and 2 and compare against them, instead of
 * looking names up in the registry on every call. */
static void *
lbt_fastudata(lua_State *L, int idx, int up)
{
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(up));
    lua_pop(L, 1);
    if (same) return p;
  }
  return NULL;
}

static buttress_breaker *
lbt_fastbreaker(lua_State *L)
{
  lbt_handle *h = (lbt_handle *)lbt_fastudata(L, 1, 1);
  if (h == NULL) return checkbreaker(L); /* raises the usual error */
  return (buttress_breaker *)h->p;
}

/* br:allow([clock], [sample]) -> 0, ticket, from, to | rc, retry_after_ns, from, to
 * sample: time this call although the core does not need it (the facade's
 * latency sampling). */
static int
breaker_allow(lua_State *L)
{
  buttress_breaker *br = lbt_fastbreaker(L);
  buttress_ticket t;
  int64_t now = BUTTRESS_NO_CLOCK;
  int sample = lua_toboolean(L, 3);
  int rc;
  lua_settop(L, 3); /* results go above the arguments: lbt_clock reads 2 */
  rc = buttress_breaker_allow(br, now, &t);
  if (rc == BUTTRESS_NEED_CLOCK) {
    now = lbt_clock(L, 2);
    rc = buttress_breaker_allow(br, now, &t);
  }
  lua_pushinteger(L, rc);
  if (rc == 0) {
    lbt_ticket *tk = (lbt_ticket *)lua_newuserdatauv(L, sizeof *tk, 0);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    tk->t = t;
    tk->owner = br;
    tk->state = TICKET_ADMITTED;
    tk->start_ns = BUTTRESS_NO_CLOCK;
    /* Timed tickets (slow-call rule, time window) need the start. */
    if ((t.flags & BUTTRESS_TICKET_TIMED) || sample)
      tk->start_ns = now >= 0 ? now : lbt_clock(L, 2);
  } else if (rc > 0) {
    lua_pushinteger(L, (lua_Integer)t.retry_after_ns);
  } else {
    return lbt_fail(L, "allow", rc);
  }
  lua_pushinteger(L, t.from);
  lua_pushinteger(L, t.to);
  return 4;
}

/* br:record(ticket, outcome, duration_ns, [clock]) -> rc, from, to */
static int
breaker_record(lua_State *L)
{
  buttress_breaker *br = lbt_fastbreaker(L);
  lbt_ticket *tk = (lbt_ticket *)lbt_fastudata(L, 2, 2);
  int outcome = (int)luaL_checkinteger(L, 3);
  int64_t dur = lbt_optint64(L, 4, BUTTRESS_NO_CLOCK);
  int64_t now = BUTTRESS_NO_CLOCK;
  int rc;
  if (tk == NULL)
    return lbt_argerror(L, "bad argument 'ticket' to 'record' (ticket expected, got %s)",
                      luaL_typename(L, 2));
  if (tk->state != TICKET_ADMITTED)
    return lbt_argerror(L, "bad argument 'ticket' to 'record' (ticket already recorded)");
  if (tk->owner != br)
    return lbt_argerror(L, "bad argument 'ticket' to 'record' (ticket of another breaker)");
  /* a start was taken for timed tickets and sampled calls only */
  if (dur < 0 && tk->start_ns >= 0) {
    now = lbt_clock(L, 5);
    dur = now - tk->start_ns;
    if (dur < 0) dur = 0;
  }
  rc = buttress_breaker_record(br, &tk->t, outcome, dur, now);
  if (rc == BUTTRESS_NEED_CLOCK) {
    now = lbt_clock(L, 5);
    rc = buttress_breaker_record(br, &tk->t, outcome, dur, now);
  }
  if (rc < 0) return lbt_fail(L, "record", rc);
  tk->state = TICKET_DONE;
  lua_pushinteger(L, rc);
  lua_pushinteger(L, tk->t.from);
  lua_pushinteger(L, tk->t.to);
  return 3;
}

static int
breaker_state(lua_State *L)
{
  lua_pushinteger(L, buttress_breaker_state(checkbreaker(L)));
  return 1;
}

typedef int (*lbt_manual_fn)(buttress_breaker *, int64_t, buttress_ticket *);

static int
lbt_manual(lua_State *L, lbt_manual_fn fn, const char *what)
{
  buttress_breaker *br = checkbreaker(L);
  buttress_ticket t;
  int rc;
  t.from = t.to = BUTTRESS_STATE_NONE;
  rc = fn(br, lbt_clock(L, 2), &t);
  if (rc < 0) return lbt_fail(L, what, rc);
  lua_pushinteger(L, rc);
  lua_pushinteger(L, t.from);
  lua_pushinteger(L, t.to);
  return 3;
}

static int
breaker_force_open(lua_State *L)
{
  return lbt_manual(L, buttress_breaker_force_open, "force_open");
}

static int
breaker_disable(lua_State *L)
{
  return lbt_manual(L, buttress_breaker_disable, "disable");
}

static int
breaker_reset(lua_State *L)
{
  return lbt_manual(L, buttress_breaker_reset, "reset");
}

static void
lbt_push_latency(lua_State *L, const buttress_latency *l)
{
  lua_createtable(L, 0, 6);
  lbt_setint(L, "count", (int64_t)l->count);
  lbt_setint(L, "p50_ns", l->p50_ns);
  lbt_setint(L, "p95_ns", l->p95_ns);
  lbt_setint(L, "p99_ns", l->p99_ns);
  lbt_setint(L, "max_ns", l->max_ns);
  lbt_setnum(L, "mean_ns", l->mean_ns);
}

/* br:metrics(now_ns) -> the core's snapshot; transitions keyed "from>to". */
static int
breaker_metrics(lua_State *L)
{
  buttress_breaker *br = checkbreaker(L);
  buttress_breaker_metrics m;
  int rc, i, j;
  rc = buttress_breaker_metrics_get(br, lbt_optint64(L, 2, BUTTRESS_NO_CLOCK), &m);
  if (rc != 0) return lbt_fail(L, "metrics", rc);
  lua_createtable(L, 0, 24);
  lbt_setint(L, "calls", (int64_t)m.calls);
  lbt_setint(L, "successes", (int64_t)m.successes);
  lbt_setint(L, "failures", (int64_t)m.failures);
  lbt_setint(L, "excluded", (int64_t)m.excluded);
  lbt_setint(L, "cancelled", (int64_t)m.cancelled);
  lbt_setint(L, "stale", (int64_t)m.stale);
  lbt_setint(L, "rejected", (int64_t)m.rejected);
  lbt_setint(L, "slow", (int64_t)m.slow);
  lbt_setint(L, "state", m.state);
  lbt_setint(L, "consecutive_failures", m.consecutive_failures);
  lbt_setint(L, "half_open_successes", m.half_open_successes);
  lbt_setint(L, "trips", m.trips);
  lbt_setint(L, "window_calls", (int64_t)m.window_calls);
  lbt_setint(L, "window_failures", (int64_t)m.window_failures);
  lbt_setint(L, "window_slow", (int64_t)m.window_slow);
  lbt_setnum(L, "failure_rate", m.failure_rate);
  lbt_setnum(L, "slow_rate", m.slow_rate);
  lbt_setint(L, "open_until_ns", m.open_until_ns);
  lbt_setnum(L, "calls_per_second", m.calls_per_second);
  lbt_push_latency(L, &m.latency);
  lua_setfield(L, -2, "latency");
  lua_newtable(L); /* transitions */
  lua_newtable(L); /* last_transition_ns */
  for (i = 0; i < BUTTRESS_STATE_COUNT; i++) {
    for (j = 0; j < BUTTRESS_STATE_COUNT; j++) {
      if (i == j) continue;
      lua_pushfstring(L, "%s>%s", buttress_state_name(i), buttress_state_name(j));
      lua_pushvalue(L, -1);
      lua_pushinteger(L, (lua_Integer)m.transitions[i][j]);
      lua_rawset(L, -5);
      lua_pushinteger(L, (lua_Integer)m.last_transition_ns[i][j]);
      lua_rawset(L, -3);
    }
  }
  lua_setfield(L, -3, "last_transition_ns");
  lua_setfield(L, -2, "transitions");
  return 1;
}

static int
breaker_config(lua_State *L)
{
  buttress_breaker_config c;
  int rc = buttress_breaker_get_config(checkbreaker(L), &c);
  if (rc != 0) return lbt_fail(L, "config", rc);
  lbt_push_breaker_config(L, &c);
  return 1;
}

static int
ticket_tostring(lua_State *L)
{
  lbt_ticket *tk = (lbt_ticket *)luaL_checkudata(L, 1, TICKET_MT);
  lua_pushfstring(L, "buttress.ticket (%s): %p",
                  tk->state == TICKET_DONE ? "recorded" : "admitted", (void *)tk);
  return 1;
}

/* --------------------------------------------------------------- budget */

static int
l_budget_new(lua_State *L)
{
  buttress_budget_config c;
  size_t size = buttress_budget_sizeof();
  void *mem;
  int rc;
  lbt_budget_from(L, 1, &c);
  mem = lbt_newhandle(L, size, BUDGET_MT)->state;
  rc = buttress_budget_init(mem, size, &c);
  if (rc != 0) return lbt_fail(L, "budget", rc);
  return 1;
}

static int
budget_metrics(lua_State *L)
{
  buttress_budget *b = (buttress_budget *)((lbt_handle *)luaL_checkudata(L, 1, BUDGET_MT))->p;
  buttress_budget_metrics m;
  int rc = buttress_budget_metrics_get(b, lbt_checkint64(L, 2), &m);
  if (rc != 0) return lbt_fail(L, "metrics", rc);
  lua_createtable(L, 0, 6);
  lbt_setint(L, "deposits", (int64_t)m.deposits);
  lbt_setint(L, "withdrawals", (int64_t)m.withdrawals);
  lbt_setint(L, "rejections", (int64_t)m.rejections);
  lbt_setnum(L, "available", m.available);
  lbt_setint(L, "window_calls", (int64_t)m.window_calls);
  lbt_setint(L, "window_retries", (int64_t)m.window_retries);
  return 1;
}

/* ---------------------------------------------------------------- retry */

static int
l_retry_new(lua_State *L)
{
  buttress_retry_config c;
  size_t size = buttress_retry_sizeof();
  void *mem;
  uint64_t seed;
  int rc;
  lbt_retry_from(L, 1, &c);
  seed = lbt_seed(L, 2);
  mem = lbt_newstate(L, size, RETRY_MT);
  rc = buttress_retry_init(mem, size, &c, seed);
  if (rc != 0) return lbt_fail(L, "retry", rc);
  return 1;
}

#define checkretry(L) ((buttress_retry *)luaL_checkudata(L, 1, RETRY_MT))
#define checkcall(L, i) ((buttress_retry_call *)luaL_checkudata(L, i, CALL_MT))

static buttress_budget *
lbt_optbudget(lua_State *L, int idx)
{
  if (lua_isnoneornil(L, idx)) return NULL;
  return (buttress_budget *)((lbt_handle *)luaL_checkudata(L, idx, BUDGET_MT))->p;
}

/* r:begin(budget, outer_deadline_ns, now_ns) -> rc, call */
static int
retry_begin(lua_State *L)
{
  buttress_retry *r = checkretry(L);
  buttress_budget *b = lbt_optbudget(L, 2);
  int64_t outer = lbt_optint64(L, 3, BUTTRESS_NONE);
  int64_t now = lbt_checkint64(L, 4);
  buttress_retry_call *call;
  int rc;
  call = (buttress_retry_call *)lbt_newstate(L, sizeof *call, CALL_MT);
  rc = buttress_retry_begin(r, call, b, outer, now);
  if (rc < 0) return lbt_fail(L, "begin", rc);
  lua_pushinteger(L, rc);
  lua_insert(L, -2);
  return 2;
}

/* r:next(call, budget, override_ns, now_ns) -> rc, delay_ns */
static int
retry_next(lua_State *L)
{
  buttress_retry *r = checkretry(L);
  buttress_retry_call *call = checkcall(L, 2);
  buttress_budget *b = lbt_optbudget(L, 3);
  int64_t override = lbt_optint64(L, 4, BUTTRESS_NONE);
  int rc = buttress_retry_next(r, call, b, override, lbt_checkint64(L, 5));
  if (rc < 0) return lbt_fail(L, "next", rc);
  lua_pushinteger(L, rc);
  lua_pushinteger(L, (lua_Integer)call->delay_ns);
  return 2;
}

/* r:resume(call, now_ns) -> 0, or DEADLINE: the sleep overran it. */
static int
retry_resume(lua_State *L)
{
  buttress_retry *r = checkretry(L);
  int rc = buttress_retry_resume(r, checkcall(L, 2), lbt_optint64(L, 3, BUTTRESS_NO_CLOCK));
  if (rc < 0) return lbt_fail(L, "resume", rc);
  lua_pushinteger(L, rc);
  return 1;
}

static int
retry_finish(lua_State *L)
{
  buttress_retry *r = checkretry(L);
  int rc = buttress_retry_end(r, checkcall(L, 2), (int)luaL_checkinteger(L, 3));
  if (rc < 0) return lbt_fail(L, "end", rc);
  lua_pushinteger(L, rc);
  return 1;
}

static int
retry_metrics(lua_State *L)
{
  buttress_retry_metrics m;
  int rc = buttress_retry_metrics_get(checkretry(L), lbt_optint64(L, 2, BUTTRESS_NO_CLOCK), &m);
  if (rc != 0) return lbt_fail(L, "metrics", rc);
  lua_createtable(L, 0, 10);
  lbt_setint(L, "calls", (int64_t)m.calls);
  lbt_setint(L, "attempts", (int64_t)m.attempts);
  lbt_setint(L, "retries", (int64_t)m.retries);
  lbt_setint(L, "successes", (int64_t)m.successes);
  lbt_setint(L, "failures", (int64_t)m.failures);
  lbt_setint(L, "giveups_attempts", (int64_t)m.giveups_attempts);
  lbt_setint(L, "giveups_deadline", (int64_t)m.giveups_deadline);
  lbt_setint(L, "giveups_budget", (int64_t)m.giveups_budget);
  lbt_setnum(L, "calls_per_second", m.calls_per_second);
  lbt_push_latency(L, &m.latency);
  lua_setfield(L, -2, "latency");
  return 1;
}

/* r:observe(duration_ns, now_ns): a whole call's time, for the metrics. */
static int
retry_observe(lua_State *L)
{
  int rc = buttress_retry_observe(checkretry(L), lbt_checkint64(L, 2),
                                  lbt_optint64(L, 3, BUTTRESS_NO_CLOCK));
  if (rc != 0) return lbt_fail(L, "observe", rc);
  return 0;
}

static int
retry_config(lua_State *L)
{
  buttress_retry_config c;
  int rc = buttress_retry_get_config(checkretry(L), &c);
  if (rc != 0) return lbt_fail(L, "config", rc);
  lbt_push_retry_config(L, &c);
  return 1;
}

/* call:remaining(now_ns) -> ns, or -1 when there is no deadline */
static int
call_remaining(lua_State *L)
{
  int64_t out = BUTTRESS_NONE;
  int rc = buttress_retry_remaining(checkcall(L, 1), lbt_checkint64(L, 2), &out);
  if (rc < 0) return lbt_fail(L, "remaining", rc);
  lua_pushinteger(L, (lua_Integer)out);
  return 1;
}

static int
call_deadline(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)checkcall(L, 1)->deadline_ns);
  return 1;
}

static int
call_attempt(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)checkcall(L, 1)->attempt);
  return 1;
}

/* -------------------------------------------------------------- backoff */

static int
l_backoff_new(lua_State *L)
{
  buttress_backoff_config c;
  size_t size = buttress_backoff_sizeof();
  void *mem;
  uint64_t seed;
  int rc;
  lbt_backoff_cfg_from(L, 1, &c);
  seed = lbt_seed(L, 2);
  mem = lbt_newstate(L, size, BACKOFF_MT);
  rc = buttress_backoff_init(mem, size, &c, seed);
  if (rc != 0) return lbt_fail(L, "backoff", rc);
  return 1;
}

/* b:next(retry, prev_ns) -> delay_ns */
static int
backoff_next(lua_State *L)
{
  buttress_backoff *b = (buttress_backoff *)luaL_checkudata(L, 1, BACKOFF_MT);
  int64_t retry = lbt_checkint64(L, 2);
  int64_t out = 0;
  int rc;
  if (retry < 0 || retry > (int64_t)UINT32_MAX)
    return luaL_argerror(L, 2, "retry number out of range");
  rc = buttress_backoff_next(b, (uint32_t)retry, lbt_optint64(L, 3, BUTTRESS_NONE), &out);
  if (rc != 0) return lbt_fail(L, "backoff", rc);
  lua_pushinteger(L, (lua_Integer)out);
  return 1;
}

static int
backoff_config(lua_State *L)
{
  buttress_backoff_config c;
  int rc = buttress_backoff_get_config(
      (buttress_backoff *)luaL_checkudata(L, 1, BACKOFF_MT), &c);
  if (rc != 0) return lbt_fail(L, "config", rc);
  lbt_push_backoff(L, &c);
  return 1;
}

/* --------------------------------------------------------------- region */

static lbt_region *
lbt_pushregion(lua_State *L)
{
  lbt_region *ur = (lbt_region *)lua_newuserdatauv(L, sizeof *ur, 0);
  ur->r = NULL;
  luaL_setmetatable(L, REGION_MT);
  return ur;
}

/* region_open(name, size, create, mode) -> region | nil, code */
static int
l_region_open(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  int64_t size = lbt_checkint64(L, 2);
  int flags = lua_toboolean(L, 3) ? BUTTRESS_REGION_CREATE : 0;
  uint32_t mode = (uint32_t)luaL_optinteger(L, 4, 0600);
  lbt_region *ur;
  int rc;
  if (size < 0) size = 0;
  ur = lbt_pushregion(L);
  rc = buttress_region_open(name, (size_t)size, flags, mode, &ur->r);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    return 2;
  }
  return 1;
}

static int
l_region_anonymous(lua_State *L)
{
  int64_t size = lbt_checkint64(L, 1);
  lbt_region *ur;
  int rc;
  if (size < 0) size = 0;
  ur = lbt_pushregion(L);
  rc = buttress_region_anonymous((size_t)size, &ur->r);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    return 2;
  }
  return 1;
}

static int
l_region_unlink(lua_State *L)
{
  lua_pushinteger(L, buttress_region_unlink(luaL_checkstring(L, 1)));
  return 1;
}

static buttress_region *
lbt_checkregion(lua_State *L)
{
  lbt_region *ur = (lbt_region *)luaL_checkudata(L, 1, REGION_MT);
  if (ur->r == NULL) luaL_error(L, "buttress: region is closed");
  return ur->r;
}

/* Unmaps this process's view: objects attached to it must be gone too,
 * which their user values guarantee for a collected region. */
static int
region_gc(lua_State *L)
{
  lbt_region *ur = (lbt_region *)luaL_checkudata(L, 1, REGION_MT);
  if (ur->r != NULL) {
    buttress_region_close(ur->r);
    ur->r = NULL;
  }
  return 0;
}

/* A handle pointing into the region; its user value keeps the region. */
static lbt_handle *
lbt_pushshared(lua_State *L, void *p, const char *mt)
{
  lbt_handle *h = (lbt_handle *)lua_newuserdatauv(L, sizeof *h, 1);
  h->p = p;
  luaL_setmetatable(L, mt);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return h;
}

/* region:breaker(name, cfg) -> breaker, created | nil, code */
static int
region_breaker(lua_State *L)
{
  buttress_region *r = lbt_checkregion(L);
  const char *name = luaL_checkstring(L, 2);
  buttress_breaker_config c;
  buttress_breaker *br = NULL;
  int created = 0, rc;
  lbt_breaker_from(L, 3, &c);
  rc = buttress_region_breaker(r, name, &c, &br, &created);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    return 2;
  }
  lbt_pushshared(L, br, BREAKER_MT);
  lua_pushboolean(L, created);
  return 2;
}

static int
region_budget(lua_State *L)
{
  buttress_region *r = lbt_checkregion(L);
  const char *name = luaL_checkstring(L, 2);
  buttress_budget_config c;
  buttress_budget *b = NULL;
  int created = 0, rc;
  lbt_budget_from(L, 3, &c);
  rc = buttress_region_budget(r, name, &c, &b, &created);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    return 2;
  }
  lbt_pushshared(L, b, BUDGET_MT);
  lua_pushboolean(L, created);
  return 2;
}

static int
region_info(lua_State *L)
{
  uint64_t size = 0, used = 0;
  uint32_t slots = 0;
  int rc = buttress_region_info(lbt_checkregion(L), &size, &used, &slots);
  if (rc != 0) return lbt_fail(L, "region", rc);
  lua_createtable(L, 0, 3);
  lbt_setint(L, "size", (int64_t)size);
  lbt_setint(L, "used", (int64_t)used);
  lbt_setint(L, "slots_used", (int64_t)slots);
  return 1;
}

/* ----------------------------------------------------------------- open */

static const luaL_Reg breaker_methods[] = {
  {"allow", breaker_allow},       {"record", breaker_record},
  {"state", breaker_state},       {"force_open", breaker_force_open},
  {"disable", breaker_disable},   {"reset", breaker_reset},
  {"metrics", breaker_metrics},   {"config", breaker_config},
  {NULL, NULL}};

static const luaL_Reg ticket_methods[] = {{NULL, NULL}};

static const luaL_Reg retry_methods[] = {
  {"begin", retry_begin},     {"next", retry_next},       {"resume", retry_resume},
  {"finish", retry_finish},   {"metrics", retry_metrics}, {"observe", retry_observe},
  {"config", retry_config},   {NULL, NULL}};

static const luaL_Reg call_methods[] = {
  {"remaining", call_remaining}, {"deadline", call_deadline},
  {"attempt", call_attempt},     {NULL, NULL}};

static const luaL_Reg budget_methods[] = {{"metrics", budget_metrics}, {NULL, NULL}};

static const luaL_Reg backoff_methods[] = {
  {"next", backoff_next}, {"config", backoff_config}, {NULL, NULL}};

static const luaL_Reg region_methods[] = {
  {"breaker", region_breaker}, {"budget", region_budget},
  {"info", region_info},       {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"region_open", l_region_open},
  {"region_anonymous", l_region_anonymous},
  {"region_unlink", l_region_unlink},
  {"now", l_now},
  {"sleep", l_sleep},
  {"entropy_seed", l_entropy_seed},
  {"strerror", l_strerror},
  {"errname", l_errname},
  {"state_name", l_state_name},
  {"jitter_parse", l_jitter_parse},
  {"jitter_name", l_jitter_name},
  {"breaker_defaults", l_breaker_defaults},
  {"breaker_check", l_breaker_check},
  {"breaker_new", l_breaker_new},
  {"retry_defaults", l_retry_defaults},
  {"retry_check", l_retry_check},
  {"retry_new", l_retry_new},
  {"budget_defaults", l_budget_defaults},
  {"budget_check", l_budget_check},
  {"budget_new", l_budget_new},
  {"backoff_defaults", l_backoff_defaults},
  {"backoff_check", l_backoff_check},
  {"backoff_new", l_backoff_new},
  {NULL, NULL}};

static void
lbt_newclass(lua_State *L, const char *name, const luaL_Reg *methods)
{
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "buttress: metatable is locked");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

#if defined(_WIN32)
#define LBT_EXPORT __declspec(dllexport)
#else
#define LBT_EXPORT __attribute__((visibility("default")))
#endif

LBT_EXPORT int luaopen_buttress_core(lua_State *L);

LBT_EXPORT int
luaopen_buttress_core(lua_State *L)
{
  int abi = buttress_abi_version();
  if (abi != BUTTRESS_ABI_VERSION)
    return luaL_error(L, "buttress.core: core ABI %d, module built for %d", abi,
                      BUTTRESS_ABI_VERSION);
  lbt_newclass(L, TICKET_MT, ticket_methods);
  luaL_getmetatable(L, TICKET_MT);
  lua_pushcfunction(L, ticket_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  /* breaker methods get upvalues 1 = breaker mt, 2 = ticket mt */
  luaL_newmetatable(L, BREAKER_MT);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_getmetatable(L, TICKET_MT);
  luaL_setfuncs(L, breaker_methods, 2);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "buttress: metatable is locked");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lbt_newclass(L, RETRY_MT, retry_methods);
  lbt_newclass(L, CALL_MT, call_methods);
  lbt_newclass(L, BUDGET_MT, budget_methods);
  lbt_newclass(L, BACKOFF_MT, backoff_methods);
  lbt_newclass(L, REGION_MT, region_methods);
  luaL_getmetatable(L, REGION_MT);
  lua_pushcfunction(L, region_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newlib(L, funcs);
  lua_pushliteral(L, "c");
  lua_setfield(L, -2, "kind");
  lua_pushliteral(L, BUTTRESS_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, abi);
  lua_setfield(L, -2, "abi");
  return 1;
}
