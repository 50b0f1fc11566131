/*
 * buttress._core: the CPython binding of the buttress C core.
 *
 * The core decides (admit? retry? how long to wait?); this file acts: it
 * calls the user's function, sleeps through time.sleep (which releases the
 * GIL and wakes up for signals) and calls the listeners.  No lock is taken
 * anywhere: the core is lock-free and the per-call state lives on the C
 * stack (sync) or in a RetryCall object (async, block form).
 *
 * Multi-phase init, module state, heap types only, no private CPython API.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buttress.h"

#if PY_VERSION_HEX < 0x030B0000
#error "buttress needs Python 3.11 or newer"
#endif

#define NO_CLOCK ((int64_t)BUTTRESS_NO_CLOCK)
#define NONE_NS ((int64_t)BUTTRESS_NONE)
#define CLOCK_ERROR INT64_MIN /* now_ns() failed: a Python error is set */

/* The success path's steps, inlined into the wrappers' loops. */
#if defined(__GNUC__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

/* ---------------------------------------------------- latency sampling */

/* Timing a call costs two clock reads, as much again as the rest of the
 * success path, so calls that need no clock (no slow-call rule, no time
 * window, no deadline) are timed for a random sample only: about one in
 * SAMPLE_EVERY, the gaps drawn uniformly from 1 .. 2*SAMPLE_EVERY-1 so that
 * no periodic workload lines up with them.  docs/observability.md states
 * the percentile error this gives. */
#define SAMPLE_EVERY 16

typedef struct {
  uint32_t countdown; /* calls until the next timed one; 0 = first call */
  uint32_t rng;       /* xorshift32 state, never 0 */
} sampler_t;

static uint32_t sampler_serial;

static void
sampler_init(sampler_t *s)
{
  /* distinct, reproducible streams: tests see the same sample each run */
  s->rng = (++sampler_serial * 0x9e3779b9u) | 1u;
  s->countdown = 1;
}

/* 1 when this call is to be timed.  Runs under the GIL. */
HOT int
sample_now(sampler_t *s)
{
  if (--s->countdown != 0)
    return 0;
  uint32_t x = s->rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  s->rng = x;
  s->countdown = 1 + x % (2 * SAMPLE_EVERY - 1);
  return 1;
}

/* ------------------------------------------------------------ state */

typedef struct {
  PyTypeObject *backoff_type, *budget_type, *breaker_type, *ticket_type;
  PyTypeObject *retry_type, *call_type, *wrapper_type, *retry_state_type, *await_type;
  PyObject *ButtressError, *CircuitOpenError, *RetryExhausted,
      *DeadlineExceeded;
  PyTypeObject *region_type; /* shared-memory regions (the Region section) */
  PyObject *RegionError;
  PyObject *state_names[BUTTRESS_STATE_COUNT];
  PyObject *deadline_var;    /* ContextVar: innermost absolute deadline, ns */
  PyObject *clock;           /* test hook: () -> int ns, or NULL */
  PyObject *sleep_hook;      /* test hook replacing time.sleep, or NULL */
  PyObject *transition_hook; /* (breaker, old, new): listeners and logs */
  PyObject *event_hook;      /* (kind, policy, attempt, delay, error): logs */
  PyObject *logger;          /* asked isEnabledFor() before event_hook runs */
  PyObject *async_sleeper;   /* (user_sleep, seconds) -> awaitable */
  PyObject *time_module;
  PyObject *str_sleep, *str_breaker, *str_retry_after, *str_last_result,
      *str_attempts, *str_retry, *str_giveup, *str_is_enabled_for;
  PyObject *level_debug, *level_info;
  int deadlines_used; /* skip the contextvar read until a deadline exists */
} modstate;

static struct PyModuleDef core_module;

static modstate *
state_of_type(PyTypeObject *tp)
{
  PyObject *m = PyType_GetModuleByDef(tp, &core_module);
  return m ? (modstate *)PyModule_GetState(m) : NULL;
}

/* ------------------------------------------------------------ helpers */

static void *
alloc_block(size_t size)
{
  size_t rounded = (size + 63) & ~(size_t)63;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (p == NULL)
    PyErr_NoMemory();
  else
    memset(p, 0, rounded ? rounded : 64);
  return p;
}

static void
raise_core(int rc, const char *what)
{
  PyErr_Format(rc == BUTTRESS_EINVAL ? PyExc_ValueError : PyExc_RuntimeError,
               "%s: %s (%s)", what, buttress_strerror(rc), buttress_errname(rc));
}

/* The current time: the monotonic clock, or the test hook's value. */
static int64_t
now_ns(modstate *st)
{
  if (st->clock == NULL)
    return buttress_monotonic_ns();
  PyObject *v = PyObject_CallNoArgs(st->clock);
  if (v == NULL)
    return CLOCK_ERROR;
  long long ns = PyLong_AsLongLong(v);
  Py_DECREF(v);
  if (ns == -1 && PyErr_Occurred())
    return CLOCK_ERROR;
  if (ns < 0) {
    PyErr_SetString(PyExc_ValueError, "test clock went below zero");
    return CLOCK_ERROR;
  }
  return (int64_t)ns;
}

/* The pending exception as one object carrying its traceback. */
static PyObject *
fetch_exc(void)
{
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  PyErr_NormalizeException(&t, &v, &tb);
  if (tb != NULL && v != NULL)
    PyException_SetTraceback(v, tb);
  Py_XDECREF(t);
  Py_XDECREF(tb);
  return v;
}

/* Raise `v` again (steals the reference). */
static void
restore_exc(PyObject *v)
{
  PyObject *tb = PyException_GetTraceback(v);
  PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, tb);
}

/* An error raised while handling `old`: keep old as its __context__. */
static void
chain_exc(PyObject *old)
{
  PyObject *cur = fetch_exc();
  if (cur != NULL && old != NULL && cur != old) {
    Py_INCREF(old);
    PyException_SetContext(cur, old);
  }
  if (cur != NULL)
    restore_exc(cur);
}

static PyObject *
ns_to_seconds(int64_t ns)
{
  if (ns < 0)
    Py_RETURN_NONE;
  return PyFloat_FromDouble((double)ns / 1e9);
}

/* Seconds (a non-negative real number) to ns; -1 with an error set. */
static int64_t
seconds_to_ns(PyObject *v, const char *what)
{
  if (PyBool_Check(v)) { /* as the package's checks: True is not 1 s */
    PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, got %R", what, v);
    return -1;
  }
  double s = PyFloat_AsDouble(v);
  if (s == -1.0 && PyErr_Occurred()) {
    int type = PyErr_ExceptionMatches(PyExc_TypeError); /* name the parameter */
    if (type || PyErr_ExceptionMatches(PyExc_OverflowError)) { /* 10**400 */
      PyErr_Clear();
      PyErr_Format(type ? PyExc_TypeError : PyExc_ValueError,
                   type ? "%s must be a number of seconds, got %R"
                        : "%s must be a finite number of seconds >= 0, got %R",
                   what, v);
    }
    return -1;
  }
  if (!(s >= 0) || !isfinite(s) || s * 1e9 > (double)BUTTRESS_MAX_DURATION_NS) {
    PyErr_Format(PyExc_ValueError, "%s must be a finite number of seconds >= 0, got %R",
                 what, v);
    return -1;
  }
  return (int64_t)llround(s * 1e9);
}

/* exc matches `spec`: a type / tuple of types, or a predicate.  A
 * predicate that raises is reported through sys.unraisablehook and counts
 * as `on_error`. */
static int
exc_matches(PyObject *spec, int pred, PyObject *exc, int on_error)
{
  if (spec == NULL)
    return 0;
  if (!pred)
    return PyErr_GivenExceptionMatches(exc, spec);
  PyObject *r = PyObject_CallOneArg(spec, exc);
  int truth = r ? PyObject_IsTrue(r) : -1;
  Py_XDECREF(r);
  if (truth < 0) {
    PyErr_WriteUnraisable(spec);
    return on_error;
  }
  return truth;
}

/* ------------------------------------------------------------ Region */

/* A shared-memory region (core/region.c) and the breakers and budgets
 * placed in it.  Each breaker or budget in a region holds a reference to
 * its Region object and counts as one of its `users`: the mapping stays
 * until the last of them is gone, even after close() or after the Region
 * object itself has been dropped by the user. */

typedef struct {
  PyObject_HEAD
  modstate *st;
  buttress_region *r; /* NULL: not opened yet, or unmapped */
  PyObject *name;     /* str, or NULL for an anonymous region */
  Py_ssize_t users;   /* breakers and budgets of this process placed in it */
  int closed;         /* close() was called: nothing new is placed in it */
} RegionObject;

static PyObject *
region_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  (void)args;
  (void)kw;
  RegionObject *self = (RegionObject *)tp->tp_alloc(tp, 0);
  if (self != NULL)
    self->st = state_of_type(tp);
  return (PyObject *)self;
}

static void
region_unmap(RegionObject *self)
{
  if (self->r != NULL) {
    buttress_region_close(self->r);
    self->r = NULL;
  }
}

static int
region_traverse(RegionObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->name);
  return 0;
}

static void
region_dealloc(RegionObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  /* users hold references: none is left when this runs */
  region_unmap(self);
  Py_CLEAR(self->name);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyObject *
region_label(RegionObject *self)
{
  return self->name ? PyObject_Repr(self->name) : PyUnicode_FromString("(anonymous)");
}

/* Raise RegionError(errno, msg), or RegionError(msg) when err is 0.
 * Steals msg (may be NULL: an error is then already set). */
static void
raise_region_error(modstate *st, int err, PyObject *msg)
{
  if (msg == NULL)
    return;
  PyObject *exc = err ? PyObject_CallFunction(st->RegionError, "iO", err, msg)
                      : PyObject_CallOneArg(st->RegionError, msg);
  Py_DECREF(msg);
  if (exc != NULL) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
}

/* _open(name_or_None, size, create, mode): map the region.  The Python
 * layer has checked the arguments and named them; this is the backstop. */
static PyObject *
region_open(RegionObject *self, PyObject *args)
{
  PyObject *name;
  Py_ssize_t size;
  int create, mode;
  if (!PyArg_ParseTuple(args, "Onpi:_open", &name, &size, &create, &mode))
    return NULL;
  if (self->r != NULL || self->closed) {
    PyErr_SetString(PyExc_RuntimeError, "Region already opened");
    return NULL;
  }
  if (name != Py_None && !PyUnicode_Check(name)) {
    PyErr_Format(PyExc_TypeError, "name must be a str or None, got %R", name);
    return NULL;
  }
  if (size < 0 || mode < 0 || mode > 0777) {
    PyErr_Format(PyExc_ValueError, "bad region size %zd or mode %o", size, mode);
    return NULL;
  }
  const char *cname = NULL;
  if (name != Py_None) {
    Py_ssize_t n;
    cname = PyUnicode_AsUTF8AndSize(name, &n);
    if (cname == NULL)
      return NULL;
    if ((size_t)n != strlen(cname)) {
      PyErr_SetString(PyExc_ValueError, "region name must not contain NUL characters");
      return NULL;
    }
  }
  buttress_region *r = NULL;
  int rc, err = 0;
  /* Attaching may wait for a creator still formatting the region. */
  Py_BEGIN_ALLOW_THREADS
  if (cname == NULL)
    rc = buttress_region_anonymous((size_t)size, &r);
  else
    rc = buttress_region_open(cname, (size_t)size, create ? BUTTRESS_REGION_CREATE : 0,
                              (uint32_t)mode, &r);
  err = errno;
  Py_END_ALLOW_THREADS
  if (rc == BUTTRESS_OK) {
    self->r = r;
    self->name = cname ? Py_NewRef(name) : NULL;
    Py_RETURN_NONE;
  }
  switch (rc) {
  case BUTTRESS_ENAMETOOLONG:
    PyErr_Format(PyExc_ValueError, "region name is too long (at most %d bytes): %R",
                 BUTTRESS_REGION_NAME_MAX, name);
    break;
  case BUTTRESS_EINVAL:
    PyErr_Format(PyExc_ValueError,
                 "bad region: the name must be '/name' (one leading slash, no other) "
                 "and the size at least %d bytes; got name %R, size %zd",
                 BUTTRESS_REGION_MIN_SIZE, name, size);
    break;
  case BUTTRESS_ENOENT:
    errno = ENOENT;
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    break;
  case BUTTRESS_EABI:
    raise_region_error(
        self->st, 0,
        PyUnicode_FromFormat("%R is not a buttress region of this version (ABI %d): "
                             "its header has another magic number, ABI version or "
                             "size.  If it is stale, remove it with "
                             "buttress.unlink_region(%R)",
                             name, buttress_abi_version(), name));
    break;
  case BUTTRESS_ESYS:
    errno = err;
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name == Py_None ? NULL : name);
    break;
  default:
    raise_core(rc, "region open");
  }
  return NULL;
}

/* Take the region for a new breaker or budget: checks it, counts one more
 * user.  NULL with an error set when it cannot be used. */
static RegionObject *
region_acquire(modstate *st, PyObject *obj, const char *kind)
{
  if (!PyObject_TypeCheck(obj, st->region_type)) {
    PyErr_Format(PyExc_TypeError, "shared must be a buttress.Region or None, got %R", obj);
    return NULL;
  }
  RegionObject *reg = (RegionObject *)obj;
  if (reg->closed || reg->r == NULL) {
    PyErr_Format(PyExc_ValueError, "shared: the region is %s: no %s can be placed in it",
                 reg->closed ? "closed" : "not open", kind);
    return NULL;
  }
  reg->users++;
  return (RegionObject *)Py_NewRef(obj);
}

/* A breaker or budget that was placed in the region is gone.  Steals the
 * reference taken by region_acquire. */
static void
region_release(RegionObject *reg)
{
  if (reg == NULL)
    return;
  if (--reg->users == 0 && reg->closed)
    region_unmap(reg);
  Py_DECREF(reg);
}

/* The error of buttress_region_breaker / _budget for the object `name`. */
static void
raise_attach(RegionObject *reg, int rc, const char *kind, PyObject *name)
{
  PyObject *k = PyUnicode_FromString(kind);
  if (k == NULL)
    return;
  switch (rc) {
  case BUTTRESS_ECONFIG:
    PyErr_Format(PyExc_ValueError,
                 "%U %R already exists in the shared region with a different "
                 "configuration (or the name holds another kind of object): every "
                 "process must create it with the same settings",
                 k, name);
    break;
  case BUTTRESS_ENOSPC: {
    uint64_t size = 0, used = 0;
    uint32_t slots = 0;
    buttress_region_info(reg->r, &size, &used, &slots);
    PyObject *label = region_label(reg);
    if (label != NULL)
      raise_region_error(
          reg->st, ENOSPC,
          PyUnicode_FromFormat("region %U is full: no room for %U %R (%llu of %llu "
                               "bytes and %u of %d slots in use); nothing was changed.  "
                               "Give the region a larger size",
                               label, k, name, (unsigned long long)used,
                               (unsigned long long)size, (unsigned)slots,
                               BUTTRESS_REGION_SLOTS));
    Py_XDECREF(label);
    break;
  }
  case BUTTRESS_EBUSY: {
    PyObject *label = region_label(reg);
    if (label != NULL)
      raise_region_error(
          reg->st, EBUSY,
          PyUnicode_FromFormat("region %U: %U %R is being created by another process "
                               "that has not finished (one that died doing so counts "
                               "until it is reaped); try again",
                               label, k, name));
    Py_XDECREF(label);
    break;
  }
  case BUTTRESS_ENAMETOOLONG:
    PyErr_Format(PyExc_ValueError,
                 "name of a shared %U is too long (at most %d bytes in UTF-8): %R", k,
                 BUTTRESS_SLOT_NAME_MAX, name);
    break;
  default:
    raise_core(rc, kind);
  }
  Py_DECREF(k);
}

/* The UTF-8 name of a shared object, checked; NULL with an error set. */
static const char *
slot_name(PyObject *name, const char *kind)
{
  if (!PyUnicode_Check(name)) {
    PyErr_Format(PyExc_TypeError, "a shared %s needs a str name, got %R", kind, name);
    return NULL;
  }
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(name, &n);
  if (s == NULL)
    return NULL;
  if (n == 0 || (size_t)n != strlen(s)) {
    PyErr_Format(PyExc_ValueError,
                 "the name of a shared %s must be non-empty, without NUL characters: %R",
                 kind, name);
    return NULL;
  }
  return s;
}

/* The core calls that find or create one kind of object in a region. */
static int
place_breaker(buttress_region *r, const char *name, const void *cfg, void **out)
{
  return buttress_region_breaker(r, name, cfg, (buttress_breaker **)out, NULL);
}

static int
place_budget(buttress_region *r, const char *name, const void *cfg, void **out)
{
  return buttress_region_budget(r, name, cfg, (buttress_budget **)out, NULL);
}

/* Find or create the object `name` (a `kind`) in the region.  *out points
 * into the mapping; the returned reference (and user count) belong to the
 * caller. */
static RegionObject *
region_place(modstate *st, PyObject *shared, PyObject *name, const char *kind,
             int (*place)(buttress_region *, const char *, const void *, void **),
             const void *cfg, void **out)
{
  const char *cname = slot_name(name, kind);
  if (cname == NULL)
    return NULL;
  RegionObject *reg = region_acquire(st, shared, kind);
  if (reg == NULL)
    return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = place(reg->r, cname, cfg, out);
  Py_END_ALLOW_THREADS
  if (rc != BUTTRESS_OK) {
    raise_attach(reg, rc, kind, name);
    region_release(reg);
    return NULL;
  }
  return reg;
}

static PyObject *
region_info(RegionObject *self, PyObject *u)
{
  (void)u;
  if (self->r == NULL) {
    PyErr_SetString(PyExc_ValueError, self->closed ? "the region is closed"
                                                   : "the region is not open");
    return NULL;
  }
  uint64_t size = 0, used = 0;
  uint32_t slots = 0;
  int rc = buttress_region_info(self->r, &size, &used, &slots);
  if (rc != 0) {
    raise_core(rc, "region info");
    return NULL;
  }
  return Py_BuildValue("{s:O,s:K,s:K,s:I,s:i,s:n}", "name",
                       self->name ? self->name : Py_None, "size", (unsigned long long)size,
                       "used", (unsigned long long)used, "slots_used", (unsigned)slots,
                       "slots", BUTTRESS_REGION_SLOTS, "users", self->users);
}

/* close(): no new objects; the mapping goes when the last user does. */
static PyObject *
region_close(RegionObject *self, PyObject *u)
{
  (void)u;
  self->closed = 1;
  if (self->users == 0)
    region_unmap(self);
  Py_RETURN_NONE;
}

static PyObject *
region_unlink(RegionObject *self, PyObject *u)
{
  (void)u;
  if (self->name == NULL)
    Py_RETURN_FALSE; /* anonymous: no name to remove */
  const char *cname = PyUnicode_AsUTF8(self->name);
  if (cname == NULL)
    return NULL;
  int rc = buttress_region_unlink(cname);
  if (rc == BUTTRESS_OK)
    Py_RETURN_TRUE;
  if (rc == BUTTRESS_ENOENT)
    Py_RETURN_FALSE;
  PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->name);
  return NULL;
}

static PyObject *
region_get_name(RegionObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *
region_get_closed(RegionObject *self, void *c)
{
  (void)c;
  return PyBool_FromLong(self->closed || self->r == NULL);
}

static PyObject *
region_get_size(RegionObject *self, void *c)
{
  (void)c;
  uint64_t size = 0;
  if (self->r == NULL || buttress_region_info(self->r, &size, NULL, NULL) != 0)
    Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(size);
}

/* unlink_region(name) -> bool: remove a named region's name (True), or
 * False when there is none.  Processes that have it mapped keep it. */
static PyObject *
mod_unlink_region(PyObject *m, PyObject *name)
{
  (void)m;
  if (!PyUnicode_Check(name)) {
    PyErr_Format(PyExc_TypeError, "name must be a str, got %R", name);
    return NULL;
  }
  const char *cname = PyUnicode_AsUTF8(name);
  if (cname == NULL)
    return NULL;
  int rc = buttress_region_unlink(cname);
  if (rc == BUTTRESS_OK)
    Py_RETURN_TRUE;
  if (rc == BUTTRESS_ENOENT)
    Py_RETURN_FALSE;
  if (rc == BUTTRESS_ESYS) {
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    return NULL;
  }
  PyErr_Format(PyExc_ValueError,
               "bad region name %R: '/name' expected (one leading slash, no other, at "
               "most %d bytes)",
               name, BUTTRESS_REGION_NAME_MAX);
  return NULL;
}

static PyMethodDef region_methods[] = {
    {"_open", (PyCFunction)region_open, METH_VARARGS, NULL},
    {"info", (PyCFunction)region_info, METH_NOARGS,
     "info() -> dict: name, size, used (bytes), slots_used, slots, users (breakers "
     "and budgets of this process placed in it)."},
    {"close", (PyCFunction)region_close, METH_NOARGS,
     "Place nothing more in the region; this process's mapping is removed once no "
     "breaker or budget of this process uses it.  Other processes are unaffected."},
    {"unlink", (PyCFunction)region_unlink, METH_NOARGS,
     "Remove the region's name (True), or False when it is already gone or the "
     "region is anonymous.  Processes that have it mapped keep using it."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef region_getset[] = {
    {"name", (getter)region_get_name, NULL, "'/name', or None when anonymous", NULL},
    {"closed", (getter)region_get_closed, NULL, "close() was called (or never opened)",
     NULL},
    {"size", (getter)region_get_size, NULL, "bytes mapped (None once unmapped)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot region_slots[] = {
    {Py_tp_new, region_new},
    {Py_tp_dealloc, region_dealloc},
    {Py_tp_traverse, region_traverse},
    {Py_tp_methods, region_methods},
    {Py_tp_getset, region_getset},
    {0, NULL}};

static PyType_Spec region_spec = {
    "buttress._core.Region", sizeof(RegionObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, region_slots};

/* ------------------------------------------------------------ Backoff */

typedef struct {
  PyObject_HEAD
  modstate *st;
  buttress_backoff *b;
  buttress_backoff_config cfg;
  uint64_t seed;
  int seeded; /* the user gave the seed: keep it across fork */
} BackoffObject;

static PyObject *
backoff_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  (void)args;
  (void)kw;
  BackoffObject *self = (BackoffObject *)tp->tp_alloc(tp, 0);
  if (self == NULL)
    return NULL;
  self->st = state_of_type(tp);
  buttress_backoff_config_init(&self->cfg);
  return (PyObject *)self;
}

static void
backoff_dealloc(BackoffObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  free(self->b);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static int
backoff_traverse(PyObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  return 0;
}

/* Fill a backoff config from validated values (the Python layer checks and
 * names the bad parameter; this is the last line of defence). */
static int
parse_backoff_cfg(buttress_backoff_config *cfg, long long base_ns, long long cap_ns,
                  double multiplier, int jitter)
{
  buttress_backoff_config_init(cfg);
  cfg->base_ns = base_ns;
  cfg->cap_ns = cap_ns;
  cfg->multiplier = multiplier;
  cfg->jitter = jitter;
  int rc = buttress_backoff_config_check(cfg);
  if (rc != 0) {
    raise_core(rc, "bad backoff configuration");
    return -1;
  }
  return 0;
}

static PyObject *
backoff_configure(BackoffObject *self, PyObject *args)
{
  long long base_ns, cap_ns;
  double multiplier;
  int jitter;
  PyObject *seed;
  if (!PyArg_ParseTuple(args, "LLdiO:_configure", &base_ns, &cap_ns, &multiplier,
                        &jitter, &seed))
    return NULL;
  buttress_backoff_config cfg;
  if (parse_backoff_cfg(&cfg, base_ns, cap_ns, multiplier, jitter) < 0)
    return NULL;
  uint64_t s;
  int seeded = seed != Py_None;
  if (seeded) {
    s = PyLong_AsUnsignedLongLongMask(seed);
    if (s == (uint64_t)-1 && PyErr_Occurred())
      return NULL;
  } else {
    s = buttress_entropy_seed();
  }
  buttress_backoff *b = alloc_block(buttress_backoff_sizeof());
  if (b == NULL)
    return NULL;
  int rc = buttress_backoff_init(b, buttress_backoff_sizeof(), &cfg, s);
  if (rc != 0) {
    free(b);
    raise_core(rc, "backoff init");
    return NULL;
  }
  free(self->b);
  self->b = b;
  self->cfg = cfg;
  self->seed = s;
  self->seeded = seeded;
  Py_RETURN_NONE;
}

static int
backoff_ready(BackoffObject *self)
{
  if (self->b == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "Backoff used before __init__");
    return 0;
  }
  return 1;
}

/* delays(n): the first n retry delays.  With a seed they are the same on
 * every call (a fresh generator from that seed), and the same as the C
 * core's; without one they continue the object's random stream. */
static PyObject *
backoff_delays(BackoffObject *self, PyObject *arg)
{
  if (!backoff_ready(self))
    return NULL;
  if (!PyLong_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "n must be an int, got %R", arg);
    return NULL;
  }
  Py_ssize_t n = PyNumber_AsSsize_t(arg, NULL); /* clipped: refused below */
  if (n == -1 && PyErr_Occurred())
    return NULL;
  if (n < 0 || n > 10000000) {
    PyErr_Format(PyExc_ValueError, "n must be in [0, 10000000], got %R", arg);
    return NULL;
  }
  buttress_backoff *b = self->b, *tmp = NULL;
  if (self->seeded) {
    tmp = alloc_block(buttress_backoff_sizeof());
    if (tmp == NULL)
      return NULL;
    buttress_backoff_init(tmp, buttress_backoff_sizeof(), &self->cfg, self->seed);
    b = tmp;
  }
  PyObject *list = PyList_New(n);
  if (list == NULL)
    goto done;
  int64_t prev = NONE_NS;
  for (Py_ssize_t i = 0; i < n; i++) {
    int64_t d = 0;
    int rc = buttress_backoff_next(b, (uint32_t)i, prev, &d);
    if (rc != 0) {
      raise_core(rc, "backoff");
      Py_CLEAR(list);
      goto done;
    }
    prev = d;
    PyObject *f = PyFloat_FromDouble((double)d / 1e9);
    if (f == NULL) {
      Py_CLEAR(list);
      goto done;
    }
    PyList_SET_ITEM(list, i, f);
  }
done:
  free(tmp);
  return list;
}

/* delays_ns(n): the same as integers of nanoseconds (exact). */
static PyObject *
backoff_delays_ns(BackoffObject *self, PyObject *arg)
{
  PyObject *l = backoff_delays(self, arg);
  if (l == NULL)
    return NULL;
  /* recompute exactly rather than round the floats */
  Py_ssize_t n = PyList_GET_SIZE(l);
  buttress_backoff *b = self->b, *tmp = NULL;
  if (self->seeded) {
    tmp = alloc_block(buttress_backoff_sizeof());
    if (tmp == NULL) {
      Py_DECREF(l);
      return NULL;
    }
    buttress_backoff_init(tmp, buttress_backoff_sizeof(), &self->cfg, self->seed);
    b = tmp;
  } else {
    /* unseeded: the float list already consumed the stream; round it */
    for (Py_ssize_t i = 0; i < n; i++) {
      double d = PyFloat_AS_DOUBLE(PyList_GET_ITEM(l, i));
      PyObject *v = PyLong_FromLongLong(llround(d * 1e9));
      if (v == NULL) {
        Py_DECREF(l);
        return NULL;
      }
      PyList_SetItem(l, i, v);
    }
    return l;
  }
  int64_t prev = NONE_NS;
  for (Py_ssize_t i = 0; i < n; i++) {
    int64_t d = 0;
    buttress_backoff_next(b, (uint32_t)i, prev, &d);
    prev = d;
    PyObject *v = PyLong_FromLongLong(d);
    if (v == NULL) {
      Py_DECREF(l);
      l = NULL;
      break;
    }
    PyList_SetItem(l, i, v);
  }
  free(tmp);
  return l;
}

/* ceiling(retry): the un-jittered delay of retry number `retry`. */
static PyObject *
backoff_ceiling(BackoffObject *self, PyObject *arg)
{
  if (!backoff_ready(self))
    return NULL;
  if (!PyLong_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "n must be an int, got %R", arg);
    return NULL;
  }
  int overflow = 0;
  long long r = PyLong_AsLongLongAndOverflow(arg, &overflow);
  if (r == -1 && PyErr_Occurred())
    return NULL;
  if (overflow || r < 0 || r > 0xFFFFFFFFll) {
    PyErr_Format(PyExc_ValueError, "n must be in [0, 2**32 - 1], got %R", arg);
    return NULL;
  }
  int64_t d = 0;
  int rc = buttress_backoff_ceiling(&self->cfg, (uint32_t)r, &d);
  if (rc != 0) {
    raise_core(rc, "backoff ceiling");
    return NULL;
  }
  return PyFloat_FromDouble((double)d / 1e9);
}

/* After fork the child must not repeat its parent's random stream. */
static PyObject *
backoff_reseed(BackoffObject *self, PyObject *unused)
{
  (void)unused;
  if (self->b != NULL && !self->seeded) {
    self->seed = buttress_entropy_seed();
    buttress_backoff_init(self->b, buttress_backoff_sizeof(), &self->cfg, self->seed);
  }
  Py_RETURN_NONE;
}

static PyObject *
backoff_get_config(BackoffObject *self, void *c)
{
  (void)c;
  buttress_backoff_config *g = &self->cfg;
  return Py_BuildValue("{s:d,s:d,s:d,s:s}", "base", (double)g->base_ns / 1e9,
                       "multiplier", g->multiplier, "cap", (double)g->cap_ns / 1e9,
                       "jitter", buttress_jitter_name(g->jitter));
}

static PyObject *
backoff_get_seed(BackoffObject *self, void *c)
{
  (void)c;
  if (!self->seeded)
    Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(self->seed);
}

static PyMethodDef backoff_methods[] = {
    {"_configure", (PyCFunction)backoff_configure, METH_VARARGS, NULL},
    {"delays", (PyCFunction)backoff_delays, METH_O,
     "delays(n) -> list[float]: the first n retry delays, in seconds."},
    {"delays_ns", (PyCFunction)backoff_delays_ns, METH_O,
     "delays_ns(n) -> list[int]: the first n retry delays, in nanoseconds."},
    {"ceiling", (PyCFunction)backoff_ceiling, METH_O,
     "ceiling(retry) -> float: the capped delay before jitter."},
    {"_reseed", (PyCFunction)backoff_reseed, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef backoff_getset[] = {
    {"_config", (getter)backoff_get_config, NULL, NULL, NULL},
    {"seed", (getter)backoff_get_seed, NULL, "the seed given, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot backoff_slots[] = {
    {Py_tp_new, backoff_new},
    {Py_tp_dealloc, backoff_dealloc},
    {Py_tp_traverse, backoff_traverse},
    {Py_tp_methods, backoff_methods},
    {Py_tp_getset, backoff_getset},
    {0, NULL}};

static PyType_Spec backoff_spec = {
    "buttress._core.Backoff", sizeof(BackoffObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, backoff_slots};

/* ------------------------------------------------------------ Budget */

typedef struct {
  PyObject_HEAD
  modstate *st;
  buttress_budget *b;
  RegionObject *region; /* the region b lives in, or NULL: b is ours to free */
} BudgetObject;

static PyObject *
budget_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  (void)args;
  (void)kw;
  BudgetObject *self = (BudgetObject *)tp->tp_alloc(tp, 0);
  if (self != NULL)
    self->st = state_of_type(tp);
  return (PyObject *)self;
}

/* Let go of the state: free it, or leave it to the region. */
static void
budget_drop(BudgetObject *self)
{
  if (self->region != NULL) {
    RegionObject *reg = self->region;
    self->region = NULL;
    self->b = NULL;
    region_release(reg);
  } else {
    free(self->b);
    self->b = NULL;
  }
}

static void
budget_dealloc(BudgetObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  budget_drop(self);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static int
budget_traverse(BudgetObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->region);
  return 0;
}

static PyObject *
budget_configure(BudgetObject *self, PyObject *args)
{
  buttress_budget_config cfg;
  buttress_budget_config_init(&cfg);
  long long window_ns;
  PyObject *name = Py_None, *shared = Py_None;
  if (!PyArg_ParseTuple(args, "ddL|OO:_configure", &cfg.ratio, &cfg.min_per_second,
                        &window_ns, &name, &shared))
    return NULL;
  cfg.window_ns = window_ns;
  int rc = buttress_budget_config_check(&cfg);
  if (rc != 0) {
    raise_core(rc, "bad retry budget configuration");
    return NULL;
  }
  if (shared != Py_None) {
    /* In a region: found by name, or made there by the first process. */
    void *sb = NULL;
    RegionObject *reg =
        region_place(self->st, shared, name, "retry budget", place_budget, &cfg, &sb);
    if (reg == NULL)
      return NULL;
    budget_drop(self);
    self->b = sb;
    self->region = reg;
    Py_RETURN_NONE;
  }
  buttress_budget *b = alloc_block(buttress_budget_sizeof());
  if (b == NULL)
    return NULL;
  rc = buttress_budget_init(b, buttress_budget_sizeof(), &cfg);
  if (rc != 0) {
    free(b);
    raise_core(rc, "budget init");
    return NULL;
  }
  budget_drop(self);
  self->b = b;
  Py_RETURN_NONE;
}

static int
budget_ready(BudgetObject *self)
{
  if (self->b == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "RetryBudget used before __init__");
    return 0;
  }
  return 1;
}

static PyObject *
budget_deposit(BudgetObject *self, PyObject *unused)
{
  (void)unused;
  if (!budget_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  buttress_budget_deposit(self->b, now);
  Py_RETURN_NONE;
}

static PyObject *
budget_withdraw(BudgetObject *self, PyObject *unused)
{
  (void)unused;
  if (!budget_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  return PyBool_FromLong(buttress_budget_withdraw(self->b, now) == 0);
}

static PyObject *
budget_metrics(BudgetObject *self, PyObject *unused)
{
  (void)unused;
  if (!budget_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  buttress_budget_metrics m;
  memset(&m, 0, sizeof m);
  buttress_budget_metrics_get(self->b, now, &m);
  return Py_BuildValue("{s:K,s:K,s:K,s:d,s:K,s:K}", "deposits",
                       (unsigned long long)m.deposits, "withdrawals",
                       (unsigned long long)m.withdrawals, "rejections",
                       (unsigned long long)m.rejections, "available", m.available,
                       "window_calls", (unsigned long long)m.window_calls,
                       "window_retries", (unsigned long long)m.window_retries);
}

static PyMethodDef budget_methods[] = {
    {"_configure", (PyCFunction)budget_configure, METH_VARARGS, NULL},
    {"deposit", (PyCFunction)budget_deposit, METH_NOARGS,
     "Count a call (its first attempt)."},
    {"withdraw", (PyCFunction)budget_withdraw, METH_NOARGS,
     "Spend one retry: True if the budget allowed it."},
    {"metrics", (PyCFunction)budget_metrics, METH_NOARGS, "A dict snapshot."},
    {NULL, NULL, 0, NULL}};

static PyType_Slot budget_slots[] = {
    {Py_tp_new, budget_new},
    {Py_tp_dealloc, budget_dealloc},
    {Py_tp_traverse, budget_traverse},
    {Py_tp_methods, budget_methods},
    {0, NULL}};

static PyType_Spec budget_spec = {
    "buttress._core.Budget", sizeof(BudgetObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, budget_slots};

/* ------------------------------------------------------------ Breaker */

typedef struct {
  PyObject_HEAD
  modstate *st;
  buttress_breaker *br;
  PyObject *name;    /* str */
  PyObject *message; /* the text of every CircuitOpenError, built once */
  PyObject *on;      /* failure: types (tuple) or a predicate */
  PyObject *exclude; /* neutral: types (tuple) or a predicate, or NULL */
  PyObject *fallback;
  PyObject *tickets; /* ContextVar: the `with` stack, (ticket, rest) pairs */
  int on_pred, exclude_pred;
  RegionObject *region; /* the region br lives in, or NULL: br is ours to free */
  sampler_t sampler;    /* which untimed calls to time anyway */
} BreakerObject;

typedef struct {
  PyObject_HEAD
  buttress_ticket t;
  int64_t start_ns;
  int used;
  PyObject *breaker;
} TicketObject;

static PyObject *
breaker_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  (void)args;
  (void)kw;
  BreakerObject *self = (BreakerObject *)tp->tp_alloc(tp, 0);
  if (self != NULL) {
    self->st = state_of_type(tp);
    sampler_init(&self->sampler);
  }
  return (PyObject *)self;
}

static int
breaker_traverse(BreakerObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->name);
  Py_VISIT(self->message);
  Py_VISIT(self->on);
  Py_VISIT(self->exclude);
  Py_VISIT(self->fallback);
  Py_VISIT(self->tickets);
  Py_VISIT(self->region); /* kept until dealloc: br points into it */
  return 0;
}

static int
breaker_clear(BreakerObject *self)
{
  Py_CLEAR(self->name);
  Py_CLEAR(self->message);
  Py_CLEAR(self->on);
  Py_CLEAR(self->exclude);
  Py_CLEAR(self->fallback);
  Py_CLEAR(self->tickets);
  return 0;
}

static void
breaker_dealloc(BreakerObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  breaker_clear(self);
  if (self->region != NULL)
    region_release(self->region); /* the region keeps the state */
  else
    free(self->br);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static int
get_i64(PyObject *d, const char *key, int64_t *out)
{
  PyObject *v = PyDict_GetItemString(d, key);
  if (v == NULL || v == Py_None)
    return 0;
  long long x = PyLong_AsLongLong(v);
  if (x == -1 && PyErr_Occurred())
    return -1;
  *out = x;
  return 0;
}

static int
get_u32(PyObject *d, const char *key, uint32_t *out)
{
  int64_t x = *out;
  if (get_i64(d, key, &x) < 0)
    return -1;
  if (x < 0 || x > 0xFFFFFFFFll) {
    PyErr_Format(PyExc_ValueError, "%s out of range: %lld", key, (long long)x);
    return -1;
  }
  *out = (uint32_t)x;
  return 0;
}

static int
get_double(PyObject *d, const char *key, double *out)
{
  PyObject *v = PyDict_GetItemString(d, key);
  if (v == NULL || v == Py_None)
    return 0;
  double x = PyFloat_AsDouble(v);
  if (x == -1.0 && PyErr_Occurred())
    return -1;
  *out = x;
  return 0;
}

/* _configure(name, cfg, on, on_pred, exclude, exclude_pred, fallback):
 * cfg holds the core's config fields in ns (absent keys keep defaults). */
static PyObject *
breaker_configure(BreakerObject *self, PyObject *args)
{
  PyObject *name, *cfgd, *on, *exclude, *fallback, *shared = Py_None;
  int on_pred, exclude_pred;
  if (!PyArg_ParseTuple(args, "UO!OpOpO|O:_configure", &name, &PyDict_Type, &cfgd, &on,
                        &on_pred, &exclude, &exclude_pred, &fallback, &shared))
    return NULL;
  if (self->br != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "breaker already configured");
    return NULL;
  }
  buttress_breaker_config c;
  buttress_breaker_config_init(&c);
  int64_t wt = c.window_type, urb = c.use_reset_backoff, rbj = c.reset_backoff.jitter;
  if (get_u32(cfgd, "failure_threshold", &c.failure_threshold) < 0 ||
      get_u32(cfgd, "half_open_calls", &c.half_open_calls) < 0 ||
      get_u32(cfgd, "success_threshold", &c.success_threshold) < 0 ||
      get_u32(cfgd, "window_size", &c.window_size) < 0 ||
      get_u32(cfgd, "min_calls", &c.min_calls) < 0 ||
      get_i64(cfgd, "window_type", &wt) < 0 ||
      get_i64(cfgd, "window_ns", &c.window_ns) < 0 ||
      get_i64(cfgd, "reset_timeout_ns", &c.reset_timeout_ns) < 0 ||
      get_i64(cfgd, "trial_timeout_ns", &c.trial_timeout_ns) < 0 ||
      get_i64(cfgd, "slow_call_ns", &c.slow_call_ns) < 0 ||
      get_double(cfgd, "failure_rate", &c.failure_rate) < 0 ||
      get_double(cfgd, "slow_rate", &c.slow_rate) < 0 ||
      get_i64(cfgd, "use_reset_backoff", &urb) < 0 ||
      get_i64(cfgd, "reset_backoff_base_ns", &c.reset_backoff.base_ns) < 0 ||
      get_i64(cfgd, "reset_backoff_cap_ns", &c.reset_backoff.cap_ns) < 0 ||
      get_double(cfgd, "reset_backoff_multiplier", &c.reset_backoff.multiplier) < 0 ||
      get_i64(cfgd, "reset_backoff_jitter", &rbj) < 0)
    return NULL;
  c.window_type = (int32_t)wt;
  c.use_reset_backoff = (int32_t)urb;
  c.reset_backoff.jitter = (int32_t)rbj;
  int rc = buttress_breaker_config_check(&c);
  if (rc != 0) {
    raise_core(rc, "bad circuit breaker configuration");
    return NULL;
  }
  buttress_breaker *br = NULL;
  RegionObject *region = NULL;
  if (shared != Py_None) {
    /* In a region: found by name, or made there by the first process. */
    void *placed = NULL;
    region = region_place(self->st, shared, name, "circuit breaker", place_breaker, &c, &placed);
    if (region == NULL)
      return NULL;
    br = placed;
  } else {
    size_t size = buttress_breaker_sizeof(&c);
    br = alloc_block(size);
    if (br == NULL)
      return NULL;
    rc = buttress_breaker_init(br, size, &c);
    if (rc != 0) {
      free(br);
      raise_core(rc, "breaker init");
      return NULL;
    }
  }
  PyObject *message = PyUnicode_FromFormat("circuit breaker %R is open", name);
  PyObject *tickets = PyContextVar_New("buttress.breaker_tickets", NULL);
  if (message == NULL || tickets == NULL) {
    Py_XDECREF(message);
    Py_XDECREF(tickets);
    if (region != NULL)
      region_release(region);
    else
      free(br);
    return NULL;
  }
  self->br = br;
  self->region = region;
  self->name = Py_NewRef(name);
  self->message = message;
  self->tickets = tickets;
  self->on = Py_NewRef(on);
  self->on_pred = on_pred;
  self->exclude = exclude == Py_None ? NULL : Py_NewRef(exclude);
  self->exclude_pred = exclude_pred;
  self->fallback = fallback == Py_None ? NULL : Py_NewRef(fallback);
  Py_RETURN_NONE;
}

static int
breaker_ready(BreakerObject *self)
{
  if (self->br == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "CircuitBreaker used before __init__");
    return 0;
  }
  return 1;
}

/* Tell the package's hook of a transition this caller made.  Listeners run
 * after the core has committed it; a failing hook never breaks the call. */
static void
fire_transition(BreakerObject *b, int from, int to)
{
  modstate *st = b->st;
  if (st->transition_hook == NULL || from < 0 || to < 0 || from >= BUTTRESS_STATE_COUNT ||
      to >= BUTTRESS_STATE_COUNT)
    return;
  PyObject *saved = PyErr_Occurred() ? fetch_exc() : NULL;
  PyObject *args[3] = {(PyObject *)b, st->state_names[from], st->state_names[to]};
  PyObject *r = PyObject_Vectorcall(st->transition_hook, args, 3, NULL);
  if (r == NULL)
    PyErr_WriteUnraisable(st->transition_hook);
  Py_XDECREF(r);
  if (saved != NULL)
    restore_exc(saved);
}

static void
raise_open(BreakerObject *b, int64_t retry_after_ns)
{
  modstate *st = b->st;
  PyObject *exc = PyObject_CallOneArg(st->CircuitOpenError, b->message);
  if (exc == NULL)
    return;
  PyObject *ra = ns_to_seconds(retry_after_ns);
  if (ra == NULL || PyObject_SetAttr(exc, st->str_breaker, b->name) < 0 ||
      PyObject_SetAttr(exc, st->str_retry_after, ra) < 0) {
    Py_XDECREF(ra);
    Py_DECREF(exc);
    return;
  }
  Py_DECREF(ra);
  PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  Py_DECREF(exc);
}

/* May a call go?  0 admitted (ticket filled, *start set when timed),
 * 1 rejected (CircuitOpenError raised), -1 another error. */
HOT int
guard_allow(BreakerObject *b, buttress_ticket *t, int64_t *start)
{
  int64_t now = NO_CLOCK;
  t->from = t->to = BUTTRESS_STATE_NONE;
  t->flags = 0;
  int rc = buttress_breaker_allow(b->br, NO_CLOCK, t);
  if (rc == BUTTRESS_NEED_CLOCK) {
    now = now_ns(b->st);
    if (now == CLOCK_ERROR)
      return -1;
    rc = buttress_breaker_allow(b->br, now, t);
  }
  if (t->from != BUTTRESS_STATE_NONE)
    fire_transition(b, t->from, t->to);
  if (rc == 0) {
    if (!(t->flags & BUTTRESS_TICKET_TIMED) && sample_now(&b->sampler))
      t->flags |= BUTTRESS_TICKET_TIMED; /* record() then reads the clock */
    if (t->flags & BUTTRESS_TICKET_TIMED) {
      if (now == NO_CLOCK)
        now = now_ns(b->st);
      if (now == CLOCK_ERROR) {
        /* give the permit back before failing */
        buttress_breaker_record(b->br, t, BUTTRESS_CANCELLED, NO_CLOCK,
                                buttress_monotonic_ns());
        return -1;
      }
    }
    *start = now;
    return 0;
  }
  if (rc == BUTTRESS_OPEN) {
    raise_open(b, t->retry_after_ns);
    return 1;
  }
  raise_core(rc, "breaker allow");
  return -1;
}

/* How the admitted call ended.  0 counted, BUTTRESS_STALE ignored by the
 * core, -1 error (the clock hook failed). */
HOT int
guard_record(BreakerObject *b, buttress_ticket *t, int outcome, int64_t start,
             int64_t duration_ns)
{
  int64_t now = NO_CLOCK;
  if (t->flags & BUTTRESS_TICKET_TIMED) {
    now = now_ns(b->st);
    if (now == CLOCK_ERROR)
      return -1;
    if (duration_ns == NO_CLOCK && start >= 0)
      duration_ns = now >= start ? now - start : 0;
  }
  t->from = t->to = BUTTRESS_STATE_NONE;
  int rc = buttress_breaker_record(b->br, t, outcome, duration_ns, now);
  if (rc == BUTTRESS_NEED_CLOCK) {
    now = now_ns(b->st);
    if (now == CLOCK_ERROR)
      return -1;
    rc = buttress_breaker_record(b->br, t, outcome, duration_ns, now);
  }
  if (t->from != BUTTRESS_STATE_NONE)
    fire_transition(b, t->from, t->to);
  if (rc < 0 || (rc > 0 && rc != BUTTRESS_STALE)) {
    raise_core(rc, "breaker record");
    return -1;
  }
  return rc;
}

/* The breaker's verdict on an exception (an Exception instance). */
HOT int
breaker_classify(BreakerObject *b, PyObject *exc)
{
  if (b->exclude != NULL && exc_matches(b->exclude, b->exclude_pred, exc, 0))
    return BUTTRESS_EXCLUDED;
  if (exc_matches(b->on, b->on_pred, exc, 1))
    return BUTTRESS_FAILURE;
  return BUTTRESS_SUCCESS; /* not a failure by `on`: the service answered */
}

static int
outcome_of(BreakerObject *b, PyObject *exc)
{
  if (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception))
    return BUTTRESS_CANCELLED; /* KeyboardInterrupt, CancelledError, ... */
  return breaker_classify(b, exc);
}

/* fallback(exc, *args, **kwargs); consumes exc. */
static PyObject *
call_fallback(PyObject *fallback, PyObject *exc, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject *small[8];
  PyObject **v = small;
  if (nargs + nkw + 1 > 8) {
    v = PyMem_Malloc(sizeof(PyObject *) * (size_t)(nargs + nkw + 1));
    if (v == NULL) {
      Py_DECREF(exc);
      return PyErr_NoMemory();
    }
  }
  v[0] = exc;
  for (Py_ssize_t i = 0; i < nargs + nkw; i++)
    v[i + 1] = args[i];
  PyObject *r = PyObject_Vectorcall(fallback, v, (size_t)nargs + 1, kwnames);
  if (v != small)
    PyMem_Free(v);
  if (r == NULL)
    chain_exc(exc);
  Py_DECREF(exc);
  return r;
}

/* The breaker-only decorator path: allow, call, record. */
HOT PyObject *
breaker_run(BreakerObject *b, PyObject *func, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
  buttress_ticket t;
  int64_t start = NO_CLOCK;
  int k = guard_allow(b, &t, &start);
  if (k != 0) {
    if (k > 0 && b->fallback != NULL)
      return call_fallback(b->fallback, fetch_exc(), args, nargsf, kwnames);
    return NULL;
  }
  PyObject *res = PyObject_Vectorcall(func, args, nargsf, kwnames);
  if (res != NULL) {
    if (guard_record(b, &t, BUTTRESS_SUCCESS, start, NO_CLOCK) < 0) {
      Py_DECREF(res);
      return NULL;
    }
    return res;
  }
  PyObject *exc = fetch_exc();
  int outcome = outcome_of(b, exc);
  if (guard_record(b, &t, outcome, start, NO_CLOCK) < 0) {
    chain_exc(exc);
    Py_DECREF(exc);
    return NULL;
  }
  if (outcome == BUTTRESS_FAILURE && b->fallback != NULL)
    return call_fallback(b->fallback, exc, args, nargsf, kwnames);
  restore_exc(exc);
  return NULL;
}

static PyObject *
breaker_call(BreakerObject *self, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
  if (!breaker_ready(self))
    return NULL;
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "call() needs the function to call");
    return NULL;
  }
  if (!PyCallable_Check(args[0])) { /* misuse: not an attempt that failed */
    PyErr_Format(PyExc_TypeError, "call() needs a callable as fn, got %R", args[0]);
    return NULL;
  }
  return breaker_run(self, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

static PyObject *
make_ticket(BreakerObject *self, buttress_ticket *t, int64_t start)
{
  TicketObject *to = PyObject_GC_New(TicketObject, self->st->ticket_type);
  if (to == NULL)
    return NULL;
  to->t = *t;
  to->start_ns = start;
  to->used = 0;
  to->breaker = Py_NewRef((PyObject *)self);
  PyObject_GC_Track(to);
  return (PyObject *)to;
}

/* allow() -> Ticket, or raises CircuitOpenError: the two-step form. */
static PyObject *
breaker_allow(BreakerObject *self, PyObject *unused)
{
  (void)unused;
  if (!breaker_ready(self))
    return NULL;
  buttress_ticket t;
  int64_t start = NO_CLOCK;
  if (guard_allow(self, &t, &start) != 0)
    return NULL;
  PyObject *tk = make_ticket(self, &t, start);
  if (tk == NULL)
    buttress_breaker_record(self->br, &t, BUTTRESS_CANCELLED, NO_CLOCK,
                            buttress_monotonic_ns());
  return tk;
}

static int
parse_outcome(PyObject *ok)
{
  if (ok == Py_True)
    return BUTTRESS_SUCCESS;
  if (ok == Py_False)
    return BUTTRESS_FAILURE;
  if (PyUnicode_Check(ok)) {
    static const char *names[] = {"success", "failure", "excluded", "cancelled"};
    for (int i = 0; i < 4; i++)
      if (PyUnicode_CompareWithASCIIString(ok, names[i]) == 0)
        return i;
  }
  PyErr_Format(PyExc_ValueError,
               "ok must be True, False, 'success', 'failure', 'excluded' or "
               "'cancelled', got %R",
               ok);
  return -1;
}

static int
check_ticket(BreakerObject *self, PyObject *tk)
{
  if (!PyObject_TypeCheck(tk, self->st->ticket_type)) {
    PyErr_Format(PyExc_TypeError, "ticket must be a Ticket from allow(), got %R", tk);
    return -1;
  }
  TicketObject *t = (TicketObject *)tk;
  if (t->breaker != (PyObject *)self) {
    PyErr_SetString(PyExc_ValueError, "ticket belongs to another breaker");
    return -1;
  }
  if (t->used) {
    PyErr_SetString(PyExc_ValueError, "ticket already recorded");
    return -1;
  }
  return 0;
}

/* record(ticket, ok, duration=None) -> bool: True when counted, False when
 * the ticket was stale (issued under an earlier state). */
static PyObject *
breaker_record(BreakerObject *self, PyObject *args, PyObject *kw)
{
  static char *kwlist[] = {"ticket", "ok", "duration", NULL};
  PyObject *tk, *ok = Py_True, *dur = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:record", kwlist, &tk, &ok, &dur))
    return NULL;
  if (!breaker_ready(self) || check_ticket(self, tk) < 0)
    return NULL;
  int outcome = parse_outcome(ok);
  if (outcome < 0)
    return NULL;
  int64_t d = NO_CLOCK;
  if (dur != Py_None && (d = seconds_to_ns(dur, "duration")) < 0)
    return NULL;
  TicketObject *t = (TicketObject *)tk;
  /* Explicit durations only, as in Lua: None means "not measured". */
  int rc = guard_record(self, &t->t, outcome, -1, d);
  if (rc < 0)
    return NULL;
  t->used = 1;
  return PyBool_FromLong(rc == 0);
}

/* __enter__: admit or raise; the ticket goes on this context's stack, so
 * threads and asyncio tasks entering at once each keep their own. */
static PyObject *
breaker_enter(BreakerObject *self, PyObject *unused)
{
  (void)unused;
  PyObject *tk = breaker_allow(self, NULL);
  if (tk == NULL)
    return NULL;
  PyObject *rest = NULL;
  if (PyContextVar_Get(self->tickets, Py_None, &rest) < 0)
    goto fail;
  PyObject *pair = PyTuple_Pack(2, tk, rest);
  Py_DECREF(rest);
  if (pair == NULL)
    goto fail;
  PyObject *token = PyContextVar_Set(self->tickets, pair);
  Py_DECREF(pair);
  if (token == NULL)
    goto fail;
  Py_DECREF(token);
  return tk;
fail:
  buttress_breaker_record(self->br, &((TicketObject *)tk)->t, BUTTRESS_CANCELLED,
                          NO_CLOCK, buttress_monotonic_ns());
  Py_DECREF(tk);
  return NULL;
}

/* _exit(exc_or_None) -> None: pops this context's ticket and records. */
static PyObject *
breaker_exit_impl(BreakerObject *self, PyObject *exc)
{
  PyObject *pair = NULL;
  if (PyContextVar_Get(self->tickets, Py_None, &pair) < 0)
    return NULL;
  if (pair == Py_None) {
    Py_DECREF(pair);
    PyErr_SetString(PyExc_RuntimeError, "__exit__ without a matching __enter__");
    return NULL;
  }
  TicketObject *t = (TicketObject *)PyTuple_GET_ITEM(pair, 0);
  PyObject *tok = PyContextVar_Set(self->tickets, PyTuple_GET_ITEM(pair, 1));
  Py_XDECREF(tok);
  if (tok == NULL) {
    Py_DECREF(pair);
    return NULL;
  }
  int outcome = exc == Py_None ? BUTTRESS_SUCCESS : outcome_of(self, exc);
  int rc = t->used ? 0 : guard_record(self, &t->t, outcome, t->start_ns, NO_CLOCK);
  t->used = 1;
  Py_DECREF(pair);
  if (rc < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *
breaker_exit(BreakerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
  if (nargs != 3) {
    PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
    return NULL;
  }
  PyObject *r = breaker_exit_impl(self, args[1]);
  if (r == NULL)
    return NULL;
  Py_DECREF(r);
  Py_RETURN_FALSE; /* never swallow the exception */
}

static PyObject *
breaker_exit_o(BreakerObject *self, PyObject *exc)
{
  return breaker_exit_impl(self, exc);
}

static PyObject *
breaker_get_state(BreakerObject *self, void *c)
{
  (void)c;
  if (!breaker_ready(self))
    return NULL;
  int s = buttress_breaker_state(self->br);
  if (s < 0 || s >= BUTTRESS_STATE_COUNT)
    return PyUnicode_FromString("unknown");
  return Py_NewRef(self->st->state_names[s]);
}

static PyObject *
breaker_get_name(BreakerObject *self, void *c)
{
  (void)c;
  if (self->name == NULL)
    Py_RETURN_NONE;
  return Py_NewRef(self->name);
}

typedef int (*manual_fn)(buttress_breaker *, int64_t, buttress_ticket *);

static PyObject *
breaker_manual(BreakerObject *self, manual_fn fn, const char *what)
{
  if (!breaker_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  buttress_ticket t;
  memset(&t, 0, sizeof t);
  t.from = t.to = BUTTRESS_STATE_NONE;
  int rc = fn(self->br, now, &t);
  if (rc != 0) {
    raise_core(rc, what);
    return NULL;
  }
  if (t.from != BUTTRESS_STATE_NONE && t.from != t.to)
    fire_transition(self, t.from, t.to);
  Py_RETURN_NONE;
}

static PyObject *
breaker_force_open(BreakerObject *self, PyObject *u)
{
  (void)u;
  return breaker_manual(self, buttress_breaker_force_open, "force_open");
}

static PyObject *
breaker_disable(BreakerObject *self, PyObject *u)
{
  (void)u;
  return breaker_manual(self, buttress_breaker_disable, "disable");
}

static PyObject *
breaker_reset(BreakerObject *self, PyObject *u)
{
  (void)u;
  return breaker_manual(self, buttress_breaker_reset, "reset");
}

static int
dict_set_u64(PyObject *d, const char *k, uint64_t v)
{
  PyObject *o = PyLong_FromUnsignedLongLong(v);
  int rc = o ? PyDict_SetItemString(d, k, o) : -1;
  Py_XDECREF(o);
  return rc;
}

static int
dict_set_obj(PyObject *d, const char *k, PyObject *o)
{
  int rc = o ? PyDict_SetItemString(d, k, o) : -1;
  Py_XDECREF(o);
  return rc;
}

static PyObject *
latency_dict(const buttress_latency *l)
{
  return Py_BuildValue("{s:K,s:d,s:d,s:d,s:d,s:d}", "count", (unsigned long long)l->count,
                       "p50", (double)l->p50_ns / 1e9, "p95", (double)l->p95_ns / 1e9,
                       "p99", (double)l->p99_ns / 1e9, "max", (double)l->max_ns / 1e9,
                       "mean", l->mean_ns / 1e9);
}

static PyObject *
breaker_metrics(BreakerObject *self, PyObject *u)
{
  (void)u;
  if (!breaker_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  buttress_breaker_metrics m;
  memset(&m, 0, sizeof m);
  int rc = buttress_breaker_metrics_get(self->br, now, &m);
  if (rc != 0) {
    raise_core(rc, "breaker metrics");
    return NULL;
  }
  modstate *st = self->st;
  PyObject *d = PyDict_New(), *tr = PyDict_New(), *last = PyDict_New();
  if (d == NULL || tr == NULL || last == NULL)
    goto fail;
  for (int f = 0; f < BUTTRESS_STATE_COUNT; f++)
    for (int t = 0; t < BUTTRESS_STATE_COUNT; t++) {
      if (f == t)
        continue;
      PyObject *key = PyUnicode_FromFormat("%U>%U", st->state_names[f], st->state_names[t]);
      if (key == NULL)
        goto fail;
      PyObject *n = PyLong_FromUnsignedLongLong(m.transitions[f][t]);
      PyObject *when = m.last_transition_ns[f][t] < 0
                           ? Py_NewRef(Py_None)
                           : PyFloat_FromDouble((double)m.last_transition_ns[f][t] / 1e9);
      int bad = n == NULL || when == NULL || PyDict_SetItem(tr, key, n) < 0 ||
                PyDict_SetItem(last, key, when) < 0;
      Py_DECREF(key);
      Py_XDECREF(n);
      Py_XDECREF(when);
      if (bad)
        goto fail;
    }
  PyObject *sname = m.state >= 0 && m.state < BUTTRESS_STATE_COUNT
                        ? Py_NewRef(st->state_names[m.state])
                        : PyUnicode_FromString("unknown");
  if (dict_set_obj(d, "name", Py_NewRef(self->name)) < 0 ||
      dict_set_obj(d, "state", sname) < 0 || dict_set_u64(d, "calls", m.calls) < 0 ||
      dict_set_u64(d, "successes", m.successes) < 0 ||
      dict_set_u64(d, "failures", m.failures) < 0 ||
      dict_set_u64(d, "excluded", m.excluded) < 0 ||
      dict_set_u64(d, "cancelled", m.cancelled) < 0 ||
      dict_set_u64(d, "stale", m.stale) < 0 || dict_set_u64(d, "rejected", m.rejected) < 0 ||
      dict_set_u64(d, "slow", m.slow) < 0 ||
      dict_set_u64(d, "consecutive_failures", m.consecutive_failures) < 0 ||
      dict_set_u64(d, "half_open_successes", m.half_open_successes) < 0 ||
      dict_set_u64(d, "trips", m.trips) < 0 ||
      dict_set_u64(d, "window_calls", m.window_calls) < 0 ||
      dict_set_u64(d, "window_failures", m.window_failures) < 0 ||
      dict_set_u64(d, "window_slow", m.window_slow) < 0 ||
      dict_set_obj(d, "failure_rate", PyFloat_FromDouble(m.failure_rate)) < 0 ||
      dict_set_obj(d, "slow_rate", PyFloat_FromDouble(m.slow_rate)) < 0 ||
      dict_set_obj(d, "open_until",
                   m.state == BUTTRESS_STATE_OPEN ? ns_to_seconds(m.open_until_ns)
                                                  : Py_NewRef(Py_None)) < 0 ||
      dict_set_obj(d, "latency", latency_dict(&m.latency)) < 0 ||
      dict_set_obj(d, "calls_per_second", PyFloat_FromDouble(m.calls_per_second)) < 0 ||
      dict_set_obj(d, "transitions", Py_NewRef(tr)) < 0 ||
      dict_set_obj(d, "last_transition", Py_NewRef(last)) < 0)
    goto fail;
  Py_DECREF(tr);
  Py_DECREF(last);
  return d;
fail:
  Py_XDECREF(d);
  Py_XDECREF(tr);
  Py_XDECREF(last);
  return NULL;
}

static PyObject *breaker_runner(BreakerObject *self, PyObject *u);

static PyMethodDef breaker_methods[] = {
    {"_configure", (PyCFunction)breaker_configure, METH_VARARGS, NULL},
    {"call", (PyCFunction)(void (*)(void))breaker_call, METH_FASTCALL | METH_KEYWORDS,
     "call(fn, *args, **kwargs): run fn through the breaker."},
    {"allow", (PyCFunction)breaker_allow, METH_NOARGS,
     "allow() -> Ticket: admit a call or raise CircuitOpenError (two-step form)."},
    {"record", (PyCFunction)(void (*)(void))breaker_record, METH_VARARGS | METH_KEYWORDS,
     "record(ticket, ok=True, duration=None) -> bool: report how the admitted "
     "call ended; False when the ticket was stale."},
    {"__enter__", (PyCFunction)breaker_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))breaker_exit, METH_FASTCALL, NULL},
    {"_exit", (PyCFunction)breaker_exit_o, METH_O, NULL},
    {"force_open", (PyCFunction)breaker_force_open, METH_NOARGS,
     "Reject every call until reset()."},
    {"disable", (PyCFunction)breaker_disable, METH_NOARGS,
     "Admit every call and never open, until reset()."},
    {"reset", (PyCFunction)breaker_reset, METH_NOARGS,
     "Back to closed, window and streaks cleared."},
    {"metrics", (PyCFunction)breaker_metrics, METH_NOARGS, "A dict snapshot."},
    {"_runner", (PyCFunction)breaker_runner, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef breaker_getset[] = {
    {"state", (getter)breaker_get_state, NULL,
     "'closed', 'open', 'half_open', 'forced_open' or 'disabled'", NULL},
    {"name", (getter)breaker_get_name, NULL, "the breaker's name", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot breaker_slots[] = {
    {Py_tp_new, breaker_new},
    {Py_tp_dealloc, breaker_dealloc},
    {Py_tp_traverse, breaker_traverse},
    {Py_tp_clear, breaker_clear},
    {Py_tp_methods, breaker_methods},
    {Py_tp_getset, breaker_getset},
    {0, NULL}};

static PyType_Spec breaker_spec = {
    "buttress._core.Breaker", sizeof(BreakerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, breaker_slots};

/* ------------------------------------------------------------ Ticket */

static int
ticket_traverse(TicketObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->breaker);
  return 0;
}

static int
ticket_clear(TicketObject *self)
{
  Py_CLEAR(self->breaker);
  return 0;
}

static void
ticket_dealloc(TicketObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  ticket_clear(self);
  PyObject_GC_Del(self);
  Py_DECREF(tp);
}

static PyObject *
ticket_get_timed(TicketObject *self, void *c)
{
  (void)c;
  return PyBool_FromLong(self->t.flags & BUTTRESS_TICKET_TIMED);
}

static PyObject *
ticket_get_recorded(TicketObject *self, void *c)
{
  (void)c;
  return PyBool_FromLong(self->used);
}

static PyGetSetDef ticket_getset[] = {
    {"timed", (getter)ticket_get_timed, NULL, "record() wants a duration", NULL},
    {"recorded", (getter)ticket_get_recorded, NULL, "record() has been called", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot ticket_slots[] = {
    {Py_tp_dealloc, ticket_dealloc},
    {Py_tp_traverse, ticket_traverse},
    {Py_tp_clear, ticket_clear},
    {Py_tp_getset, ticket_getset},
    {0, NULL}};

static PyType_Spec ticket_spec = {
    "buttress._core.Ticket", sizeof(TicketObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    ticket_slots};

/* ------------------------------------------------------------ Retry */

typedef struct {
  PyObject_HEAD
  modstate *st;
  buttress_retry *r;
  buttress_retry_config cfg;
  uint64_t seed;
  int seeded;
  int retry_open;       /* `on` names ButtressError: CircuitOpenError is retried */
  int on_pred;
  PyObject *budget;     /* BudgetObject or NULL */
  PyObject *breaker;    /* BreakerObject or NULL: the fused form */
  PyObject *on;
  PyObject *result;     /* predicate(value) -> True means retry */
  PyObject *before_sleep;
  PyObject *retry_after;
  PyObject *sleep;
  sampler_t sampler;    /* which untimed calls to time anyway */
} RetryObject;

static PyObject *
retry_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  (void)args;
  (void)kw;
  RetryObject *self = (RetryObject *)tp->tp_alloc(tp, 0);
  if (self != NULL) {
    self->st = state_of_type(tp);
    sampler_init(&self->sampler);
  }
  return (PyObject *)self;
}

static int
retry_traverse(RetryObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->budget);
  Py_VISIT(self->breaker);
  Py_VISIT(self->on);
  Py_VISIT(self->result);
  Py_VISIT(self->before_sleep);
  Py_VISIT(self->retry_after);
  Py_VISIT(self->sleep);
  return 0;
}

static int
retry_clear(RetryObject *self)
{
  Py_CLEAR(self->budget);
  Py_CLEAR(self->breaker);
  Py_CLEAR(self->on);
  Py_CLEAR(self->result);
  Py_CLEAR(self->before_sleep);
  Py_CLEAR(self->retry_after);
  Py_CLEAR(self->sleep);
  return 0;
}

static void
retry_dealloc(RetryObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  retry_clear(self);
  free(self->r);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyObject *
none_to_null(PyObject *o)
{
  return o == Py_None ? NULL : Py_NewRef(o);
}

/* _configure(attempts, deadline_ns, base_ns, cap_ns, multiplier, jitter,
 *            seed, budget, breaker, on, on_pred, retry_open, result,
 *            before_sleep, retry_after, sleep) */
static PyObject *
retry_configure(RetryObject *self, PyObject *args)
{
  unsigned long attempts;
  long long deadline_ns, base_ns, cap_ns;
  double multiplier;
  int jitter, on_pred, retry_open;
  PyObject *seed, *budget, *breaker, *on, *result, *before_sleep, *retry_after, *sleep;
  if (!PyArg_ParseTuple(args, "kLLLdiOOOOppOOOO:_configure", &attempts, &deadline_ns,
                        &base_ns, &cap_ns, &multiplier, &jitter, &seed, &budget, &breaker,
                        &on, &on_pred, &retry_open, &result, &before_sleep, &retry_after,
                        &sleep))
    return NULL;
  if (self->r != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "retry policy already configured");
    return NULL;
  }
  modstate *st = self->st;
  if (budget != Py_None && !PyObject_TypeCheck(budget, st->budget_type)) {
    PyErr_Format(PyExc_TypeError, "budget must be a RetryBudget, got %R", budget);
    return NULL;
  }
  if (breaker != Py_None && !PyObject_TypeCheck(breaker, st->breaker_type)) {
    PyErr_Format(PyExc_TypeError, "breaker must be a CircuitBreaker, got %R", breaker);
    return NULL;
  }
  if (attempts > 0xFFFFFFFFul) {
    PyErr_Format(PyExc_ValueError, "attempts out of range: %lu", attempts);
    return NULL;
  }
  buttress_retry_config cfg;
  buttress_retry_config_init(&cfg);
  cfg.attempts = (uint32_t)attempts;
  cfg.deadline_ns = deadline_ns;
  if (parse_backoff_cfg(&cfg.backoff, base_ns, cap_ns, multiplier, jitter) < 0)
    return NULL;
  int rc = buttress_retry_config_check(&cfg);
  if (rc != 0) {
    raise_core(rc, "bad retry configuration");
    return NULL;
  }
  uint64_t s;
  int seeded = seed != Py_None;
  if (seeded) {
    s = PyLong_AsUnsignedLongLongMask(seed);
    if (s == (uint64_t)-1 && PyErr_Occurred())
      return NULL;
  } else {
    s = buttress_entropy_seed();
  }
  buttress_retry *r = alloc_block(buttress_retry_sizeof());
  if (r == NULL)
    return NULL;
  rc = buttress_retry_init(r, buttress_retry_sizeof(), &cfg, s);
  if (rc != 0) {
    free(r);
    raise_core(rc, "retry init");
    return NULL;
  }
  self->r = r;
  self->cfg = cfg;
  self->seed = s;
  self->seeded = seeded;
  self->budget = none_to_null(budget);
  self->breaker = none_to_null(breaker);
  self->on = Py_NewRef(on);
  self->on_pred = on_pred;
  self->retry_open = retry_open;
  self->result = none_to_null(result);
  self->before_sleep = none_to_null(before_sleep);
  self->retry_after = none_to_null(retry_after);
  self->sleep = none_to_null(sleep);
  Py_RETURN_NONE;
}

static int
retry_ready(RetryObject *self)
{
  if (self->r == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "retry policy used before __init__");
    return 0;
  }
  return 1;
}

static PyObject *
retry_metrics(RetryObject *self, PyObject *u)
{
  (void)u;
  if (!retry_ready(self))
    return NULL;
  int64_t now = now_ns(self->st);
  if (now == CLOCK_ERROR)
    return NULL;
  buttress_retry_metrics m;
  memset(&m, 0, sizeof m);
  buttress_retry_metrics_get(self->r, now, &m);
  PyObject *d = Py_BuildValue(
      "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:d}", "calls", (unsigned long long)m.calls,
      "attempts", (unsigned long long)m.attempts, "retries", (unsigned long long)m.retries,
      "successes", (unsigned long long)m.successes, "failures",
      (unsigned long long)m.failures, "giveups_attempts",
      (unsigned long long)m.giveups_attempts, "giveups_deadline",
      (unsigned long long)m.giveups_deadline, "giveups_budget",
      (unsigned long long)m.giveups_budget, "latency", latency_dict(&m.latency),
      "calls_per_second", m.calls_per_second);
  if (d != NULL) { /* RetryPolicy keeps its name as a Python attribute */
    PyObject *name = PyObject_GetAttrString((PyObject *)self, "name");
    if (name == NULL)
      PyErr_Clear();
    else if (dict_set_obj(d, "name", name) < 0)
      Py_CLEAR(d);
  }
  /* the fused form: the breaker's own metrics ride along */
  if (d != NULL && self->breaker != NULL &&
      dict_set_obj(d, "breaker", breaker_metrics((BreakerObject *)self->breaker, NULL)) < 0)
    Py_CLEAR(d);
  return d;
}

/* After fork: a new random stream for the child.  The core has no reseed
 * call, so the state is initialised again (the child's counters restart). */
static PyObject *
retry_reseed(RetryObject *self, PyObject *u)
{
  (void)u;
  if (self->r != NULL && !self->seeded) {
    self->seed = buttress_entropy_seed();
    buttress_retry_init(self->r, buttress_retry_sizeof(), &self->cfg, self->seed);
  }
  Py_RETURN_NONE;
}

/* -------------------------------------------------- one call's progress */

/* The per-call state of a retry and/or breaker: on the C stack for sync
 * calls, inside a RetryCall object for async calls and the block form. */
typedef struct {
  modstate *st;
  RetryObject *r;   /* borrowed; NULL: breaker only */
  BreakerObject *b; /* borrowed; NULL: retry only */
  buttress_retry_call call;
  buttress_ticket t;
  int64_t start_ns;
  int64_t call_start_ns; /* the whole call's start when timed, else NO_CLOCK */
  int holding;     /* a breaker ticket is out */
  int fallback_ok; /* the error at hand is one the breaker's fallback replaces */
  int ended;
  int no_value;    /* the block form: attempts return nothing to judge */
  PyObject *token; /* deadline ContextVar token to reset */
  /* The error a retry is sleeping after (an exception, or the result the
   * `result` predicate rejected): re-raised if the sleep overruns the
   * deadline. */
  PyObject *last_exc, *last_result;
} run_t;

HOT void
run_init(run_t *rs, modstate *st, RetryObject *r, BreakerObject *b)
{
  rs->st = st;
  rs->r = r;
  rs->b = b;
  rs->holding = 0;
  rs->fallback_ok = 0;
  rs->ended = 0;
  rs->token = NULL;
  rs->no_value = 0;
  rs->last_exc = rs->last_result = NULL;
  rs->start_ns = NO_CLOCK;
  rs->call_start_ns = NO_CLOCK;
  /* begin() fills the rest; these are read even when there is no retry */
  rs->call.deadline_ns = NONE_NS;
  rs->call.delay_ns = 0;
  rs->call.attempt = 0;
  rs->call.reason = 0;
}

HOT int64_t
outer_deadline(modstate *st)
{
  if (!st->deadlines_used)
    return NONE_NS;
  PyObject *v = NULL;
  if (PyContextVar_Get(st->deadline_var, NULL, &v) < 0)
    return CLOCK_ERROR;
  if (v == NULL)
    return NONE_NS;
  long long d = PyLong_AsLongLong(v);
  Py_DECREF(v);
  if (d == -1 && PyErr_Occurred())
    return CLOCK_ERROR;
  return d;
}

static void retry_event(run_t *rs, int is_retry, PyObject *what);

static void
raise_deadline(modstate *st)
{
  PyErr_SetString(st->DeadlineExceeded, "deadline passed before the first attempt");
}

/* Start the call: 0, or -1 with an error (DeadlineExceeded when the
 * inherited deadline has already passed). */
HOT int
run_begin(run_t *rs)
{
  RetryObject *r = rs->r;
  if (r == NULL)
    return 0;
  modstate *st = rs->st;
  int64_t outer = outer_deadline(st);
  if (outer == CLOCK_ERROR)
    return -1;
  buttress_budget *bud = r->budget ? ((BudgetObject *)r->budget)->b : NULL;
  int rc = buttress_retry_begin(r->r, &rs->call, bud, outer, NO_CLOCK);
  if (rc == BUTTRESS_NEED_CLOCK) {
    int64_t now = now_ns(st);
    if (now == CLOCK_ERROR)
      return -1;
    rc = buttress_retry_begin(r->r, &rs->call, bud, outer, now);
  }
  if (rc == BUTTRESS_DEADLINE) {
    rs->ended = 1;
    retry_event(rs, 0, NULL); /* a give-up like any other, with no attempt */
    raise_deadline(st);
    return -1;
  }
  if (rc != 0) {
    rs->ended = 1;
    raise_core(rc, "retry begin");
    return -1;
  }
  if (rs->call.started_ns >= 0) {
    rs->call_start_ns = rs->call.started_ns; /* read for the deadline anyway */
  } else if (sample_now(&r->sampler)) {
    rs->call_start_ns = now_ns(st);
    if (rs->call_start_ns == CLOCK_ERROR)
      return -1;
  }
  int64_t d = rs->call.deadline_ns;
  if (d >= 0 && (outer < 0 || d < outer)) {
    /* inner calls and remaining() see the earlier deadline */
    PyObject *v = PyLong_FromLongLong(d);
    if (v == NULL)
      return -1;
    rs->token = PyContextVar_Set(st->deadline_var, v);
    Py_DECREF(v);
    if (rs->token == NULL)
      return -1;
    st->deadlines_used = 1;
  }
  return 0;
}

static void raise_exhausted(run_t *rs, PyObject *result);

/* Before a retry: a sleep that overran the deadline ends the call with the
 * last error instead of an attempt with no time left.  0 go, -1 error set. */
static int
run_resume(run_t *rs)
{
  int64_t now = now_ns(rs->st);
  if (now == CLOCK_ERROR)
    return -1;
  int rc = buttress_retry_resume(rs->r->r, &rs->call, now);
  if (rc == 0)
    return 0;
  rs->ended = 1;
  if (rc != BUTTRESS_DEADLINE) {
    raise_core(rc, "retry resume");
    return -1;
  }
  retry_event(rs, 0, rs->last_exc ? rs->last_exc : rs->last_result);
  if (rs->last_exc != NULL)
    restore_exc(Py_NewRef(rs->last_exc)); /* the last exception itself */
  else
    raise_exhausted(rs, rs->last_result ? rs->last_result : Py_None);
  return -1;
}

/* 0 admitted (or no breaker), 1 rejected (error set), -1 error. */
HOT int
run_admit(run_t *rs)
{
  rs->fallback_ok = 0;
  if (rs->call.attempt > 1 && rs->call.deadline_ns >= 0 && rs->r != NULL && !rs->ended &&
      run_resume(rs) < 0)
    return -1;
  if (rs->b == NULL)
    return 0;
  int k = guard_allow(rs->b, &rs->t, &rs->start_ns);
  if (k == 0)
    rs->holding = 1;
  else if (k > 0)
    rs->fallback_ok = 1;
  return k;
}

HOT void
run_end(run_t *rs, int outcome)
{
  if (rs->r != NULL && !rs->ended) {
    buttress_retry_end(rs->r->r, &rs->call, outcome);
    rs->ended = 1;
  }
}

static PyObject *
make_retry_state(run_t *rs, PyObject *exc, PyObject *result)
{
  PyObject *s = PyStructSequence_New(rs->st->retry_state_type);
  if (s == NULL)
    return NULL;
  /* next() already counted the coming attempt: report the one that ended */
  PyObject *a = PyLong_FromUnsignedLong(rs->call.attempt ? rs->call.attempt - 1 : 0);
  PyObject *d = PyFloat_FromDouble((double)rs->call.delay_ns / 1e9);
  if (a == NULL || d == NULL) {
    Py_XDECREF(a);
    Py_XDECREF(d);
    Py_DECREF(s);
    return NULL;
  }
  PyStructSequence_SetItem(s, 0, a);
  PyStructSequence_SetItem(s, 1, d);
  PyStructSequence_SetItem(s, 2, Py_NewRef(exc ? exc : Py_None));
  PyStructSequence_SetItem(s, 3, Py_NewRef(result ? result : Py_None));
  return s;
}

/* Tell the package's log hook of a retry or a give-up (rare: retries
 * sleep).  A failing hook never changes the call's outcome. */
static void
retry_event(run_t *rs, int is_retry, PyObject *what)
{
  modstate *st = rs->st;
  if (st->event_hook == NULL)
    return;
  PyObject *saved = PyErr_Occurred() ? fetch_exc() : NULL;
  PyObject *kind = is_retry ? st->str_retry : st->str_giveup;
  if (st->logger != NULL) {
    /* skip the hook's frame when the record would be dropped anyway */
    PyObject *args[2] = {st->logger, is_retry ? st->level_debug : st->level_info};
    PyObject *on = PyObject_VectorcallMethod(st->str_is_enabled_for, args,
                                             2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    int enabled = on ? PyObject_IsTrue(on) : -1;
    Py_XDECREF(on);
    if (enabled <= 0) {
      if (enabled < 0)
        PyErr_WriteUnraisable(st->logger);
      if (saved != NULL)
        restore_exc(saved);
      return;
    }
  }
  static const char *why[] = {"", "", "attempts", "deadline", "budget"};
  int code = rs->call.reason;
  PyObject *attempt = PyLong_FromUnsignedLong(rs->call.attempt);
  PyObject *delay = PyFloat_FromDouble((double)rs->call.delay_ns / 1e9);
  PyObject *reason = is_retry || code < 2 || code > 4 ? Py_NewRef(Py_None)
                                                      : PyUnicode_FromString(why[code]);
  PyObject *r = NULL;
  if (attempt != NULL && delay != NULL && reason != NULL) {
    PyObject *args[6] = {kind, (PyObject *)rs->r, attempt, delay, what ? what : Py_None,
                         reason};
    r = PyObject_Vectorcall(st->event_hook, args, 6, NULL);
  }
  Py_XDECREF(attempt);
  Py_XDECREF(delay);
  Py_XDECREF(reason);
  if (r == NULL)
    PyErr_WriteUnraisable(st->event_hook);
  Py_XDECREF(r);
  if (saved != NULL)
    restore_exc(saved);
}

/* Ask the core for another attempt.  1 retry after call.delay_ns, 0 gave
 * up (call.reason says why), -1 error. */
static int
run_next(run_t *rs, PyObject *exc, PyObject *result)
{
  RetryObject *r = rs->r;
  int64_t override = NONE_NS;
  if (r->retry_after != NULL) {
    PyObject *v = PyObject_CallOneArg(r->retry_after, exc ? exc : result);
    if (v == NULL)
      return -1;
    if (v != Py_None)
      override = seconds_to_ns(v, "retry_after() result");
    Py_DECREF(v);
    if (override == -1 && PyErr_Occurred())
      return -1;
  }
  buttress_budget *bud = r->budget ? ((BudgetObject *)r->budget)->b : NULL;
  int rc = buttress_retry_next(r->r, &rs->call, bud, override, NO_CLOCK);
  if (rc == BUTTRESS_NEED_CLOCK) {
    int64_t now = now_ns(rs->st);
    if (now == CLOCK_ERROR)
      return -1;
    rc = buttress_retry_next(r->r, &rs->call, bud, override, now);
  }
  if (rc != 0) {
    rs->ended = 1; /* the core counted the give-up */
    if (rc < 0) {
      raise_core(rc, "retry next");
      return -1;
    }
    retry_event(rs, 0, exc ? exc : result);
    return 0;
  }
  retry_event(rs, 1, exc ? exc : result);
  if (r->before_sleep != NULL) {
    PyObject *s = make_retry_state(rs, exc, result);
    if (s == NULL)
      return -1;
    PyObject *v = PyObject_CallOneArg(r->before_sleep, s);
    Py_DECREF(s);
    if (v == NULL)
      return -1;
    Py_DECREF(v);
  }
  return 1;
}

/* The attempt raised `exc` (borrowed).  1: retry after call.delay_ns;
 * 0: give up, re-raise exc; -1: a new error is set. */
static int
run_failed(run_t *rs, PyObject *exc)
{
  int is_exc = PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception);
  int outcome = is_exc ? BUTTRESS_FAILURE : BUTTRESS_CANCELLED;
  if (rs->holding) {
    rs->holding = 0;
    if (is_exc)
      outcome = breaker_classify(rs->b, exc);
    if (guard_record(rs->b, &rs->t, outcome, rs->start_ns, NO_CLOCK) < 0)
      return -1;
    rs->fallback_ok = outcome == BUTTRESS_FAILURE;
  }
  RetryObject *r = rs->r;
  if (r == NULL || rs->ended)
    return 0;
  if (!is_exc) {
    rs->ended = 1; /* interrupted: neither success nor failure */
    return 0;
  }
  int retryable = outcome != BUTTRESS_EXCLUDED && exc_matches(r->on, r->on_pred, exc, 0);
  if (retryable && !r->retry_open &&
      PyObject_TypeCheck(exc, (PyTypeObject *)rs->st->CircuitOpenError))
    retryable = 0;
  if (!retryable) {
    run_end(rs, BUTTRESS_FAILURE);
    return 0;
  }
  int k = run_next(rs, exc, NULL);
  if (k == 1 && rs->call.deadline_ns >= 0) {
    Py_XSETREF(rs->last_exc, Py_NewRef(exc));
    Py_CLEAR(rs->last_result);
  }
  return k;
}

/* The attempt returned `result` (borrowed).  0: done, return it; 1: the
 * result predicate asks for a retry after call.delay_ns; -1: error
 * (RetryExhausted when retries ran out on a bad result). */
HOT int
run_succeeded(run_t *rs, PyObject *result)
{
  RetryObject *r = rs->r;
  int bad = 0;
  if (r != NULL && r->result != NULL && !rs->no_value) {
    PyObject *v = PyObject_CallOneArg(r->result, result);
    bad = v ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    if (bad < 0) {
      if (rs->holding) {
        rs->holding = 0;
        guard_record(rs->b, &rs->t, BUTTRESS_CANCELLED, rs->start_ns, NO_CLOCK);
      }
      run_end(rs, BUTTRESS_FAILURE);
      return -1;
    }
  }
  if (rs->holding) {
    rs->holding = 0;
    if (guard_record(rs->b, &rs->t, bad ? BUTTRESS_FAILURE : BUTTRESS_SUCCESS,
                     rs->start_ns, NO_CLOCK) < 0)
      return -1;
  }
  if (!bad) {
    run_end(rs, BUTTRESS_SUCCESS);
    return 0;
  }
  int k = run_next(rs, NULL, result);
  if (k == 1 && rs->call.deadline_ns >= 0) {
    Py_XSETREF(rs->last_result, Py_NewRef(result));
    Py_CLEAR(rs->last_exc);
  }
  if (k != 0)
    return k;
  raise_exhausted(rs, result);
  return -1;
}

/* RetryExhausted for a call whose results the `result` predicate kept
 * rejecting, with why it stopped. */
static void
raise_exhausted(run_t *rs, PyObject *result)
{
  modstate *st = rs->st;
  static const char *why[] = {"", "", "attempts", "deadline", "budget"};
  int reason = rs->call.reason;
  PyObject *exc = PyObject_CallFunction(
      st->RetryExhausted, "s", reason >= 2 && reason <= 4 ? why[reason] : "attempts");
  if (exc == NULL)
    return;
  PyObject *n = PyLong_FromUnsignedLong(rs->call.attempt);
  if (n == NULL || PyObject_SetAttr(exc, st->str_last_result, result) < 0 ||
      PyObject_SetAttr(exc, st->str_attempts, n) < 0) {
    Py_XDECREF(n);
    Py_DECREF(exc);
    return;
  }
  Py_DECREF(n);
  PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  Py_DECREF(exc);
}

/* The call is over, however it ended: give back a ticket still out and
 * restore the outer deadline.  Keeps a pending exception. */
static void
run_close_slow(run_t *rs)
{
  PyObject *saved = PyErr_Occurred() ? fetch_exc() : NULL;
  if (rs->holding) {
    rs->holding = 0;
    if (guard_record(rs->b, &rs->t, BUTTRESS_CANCELLED, rs->start_ns, NO_CLOCK) < 0)
      PyErr_WriteUnraisable((PyObject *)rs->b);
  }
  if (rs->token != NULL) {
    if (PyContextVar_Reset(rs->st->deadline_var, rs->token) < 0)
      PyErr_Clear(); /* reset from another context: nothing to restore */
    Py_CLEAR(rs->token);
  }
  if (rs->call_start_ns >= 0 && rs->r != NULL) {
    /* a timed call: its whole length, retries and sleeps included */
    int64_t now = now_ns(rs->st);
    if (now == CLOCK_ERROR)
      PyErr_WriteUnraisable((PyObject *)rs->r);
    else
      buttress_retry_observe(rs->r->r, now >= rs->call_start_ns ? now - rs->call_start_ns : 0,
                             now);
    rs->call_start_ns = NO_CLOCK;
  }
  Py_CLEAR(rs->last_exc);
  Py_CLEAR(rs->last_result);
  if (saved != NULL)
    restore_exc(saved);
}

static inline void
run_close(run_t *rs)
{
  if (rs->holding || rs->token != NULL || rs->call_start_ns >= 0 || rs->last_exc != NULL ||
      rs->last_result != NULL)
    run_close_slow(rs);
}

static int
do_sleep(modstate *st, RetryObject *r, int64_t ns)
{
  PyObject *fn = r->sleep ? Py_NewRef(r->sleep)
                 : st->sleep_hook ? Py_NewRef(st->sleep_hook)
                                  : PyObject_GetAttr(st->time_module, st->str_sleep);
  if (fn == NULL)
    return -1;
  PyObject *secs = PyFloat_FromDouble((double)ns / 1e9);
  PyObject *v = secs ? PyObject_CallOneArg(fn, secs) : NULL;
  Py_DECREF(fn);
  Py_XDECREF(secs);
  if (v == NULL)
    return -1;
  Py_DECREF(v);
  return 0;
}

/* The sync loop of a retry (optionally fused with a breaker). */
HOT PyObject *
retry_run(RetryObject *r, PyObject *func, PyObject *const *args, size_t nargsf,
          PyObject *kwnames)
{
  run_t rs;
  run_init(&rs, r->st, r, (BreakerObject *)r->breaker);
  if (run_begin(&rs) < 0) {
    run_close(&rs);
    return NULL;
  }
  for (;;) {
    PyObject *exc;
    int k = run_admit(&rs);
    if (k < 0)
      goto error;
    if (k == 0) {
      PyObject *res = PyObject_Vectorcall(func, args, nargsf, kwnames);
      if (res != NULL) {
        k = run_succeeded(&rs, res);
        if (k == 0) {
          run_close(&rs);
          return res;
        }
        Py_DECREF(res);
        if (k < 0)
          goto error;
        goto sleep;
      }
    }
    exc = fetch_exc();
    k = run_failed(&rs, exc);
    if (k < 0) {
      chain_exc(exc);
      Py_DECREF(exc);
      goto error;
    }
    if (k == 0) {
      run_close(&rs);
      if (rs.fallback_ok && rs.b != NULL && rs.b->fallback != NULL)
        return call_fallback(rs.b->fallback, exc, args, nargsf, kwnames);
      restore_exc(exc); /* the last exception itself */
      return NULL;
    }
    Py_DECREF(exc);
  sleep:
    if (rs.call.delay_ns > 0 && do_sleep(r->st, r, rs.call.delay_ns) < 0)
      goto error; /* KeyboardInterrupt lands here */
  }
error:
  run_close(&rs);
  return NULL;
}

/* begin() -> RetryCall: one call driven step by step (async wrappers, the
 * block form, scenario replay). */
static PyObject *call_create(modstate *st, RetryObject *r, BreakerObject *b);

static PyObject *
retry_begin(RetryObject *self, PyObject *u)
{
  (void)u;
  if (!retry_ready(self))
    return NULL;
  return call_create(self->st, self, (BreakerObject *)self->breaker);
}

static PyObject *
breaker_runner(BreakerObject *self, PyObject *u)
{
  (void)u;
  if (!breaker_ready(self))
    return NULL;
  return call_create(self->st, NULL, self);
}

static PyObject *
retry_call(RetryObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
  if (!retry_ready(self))
    return NULL;
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "call() needs the function to call");
    return NULL;
  }
  if (!PyCallable_Check(args[0])) { /* misuse: not an attempt that failed */
    PyErr_Format(PyExc_TypeError, "call() needs a callable as fn, got %R", args[0]);
    return NULL;
  }
  return retry_run(self, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

static PyObject *
retry_get_attempts(RetryObject *self, void *c)
{
  (void)c;
  return PyLong_FromUnsignedLong(self->cfg.attempts);
}

static PyObject *
retry_get_deadline(RetryObject *self, void *c)
{
  (void)c;
  return ns_to_seconds(self->cfg.deadline_ns);
}

static PyObject *
retry_get_breaker(RetryObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->breaker ? self->breaker : Py_None);
}

static PyObject *
retry_get_budget(RetryObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->budget ? self->budget : Py_None);
}

static PyObject *
retry_get_sleep(RetryObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->sleep ? self->sleep : Py_None);
}

static PyMethodDef retry_methods[] = {
    {"_configure", (PyCFunction)retry_configure, METH_VARARGS, NULL},
    {"metrics", (PyCFunction)retry_metrics, METH_NOARGS, "A dict snapshot."},
    {"begin", (PyCFunction)retry_begin, METH_NOARGS,
     "begin() -> RetryCall: start one call, driven step by step."},
    {"call", (PyCFunction)(void (*)(void))retry_call, METH_FASTCALL | METH_KEYWORDS,
     "call(fn, *args, **kwargs): run fn under this policy."},
    {"_reseed", (PyCFunction)retry_reseed, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef retry_getset[] = {
    {"attempts", (getter)retry_get_attempts, NULL, "total attempts", NULL},
    {"deadline", (getter)retry_get_deadline, NULL, "seconds, or None", NULL},
    {"breaker", (getter)retry_get_breaker, NULL, "the fused breaker, or None", NULL},
    {"budget", (getter)retry_get_budget, NULL, "the retry budget, or None", NULL},
    {"sleep", (getter)retry_get_sleep, NULL, "the replacement sleep, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot retry_slots[] = {
    {Py_tp_new, retry_new},
    {Py_tp_dealloc, retry_dealloc},
    {Py_tp_traverse, retry_traverse},
    {Py_tp_clear, retry_clear},
    {Py_tp_methods, retry_methods},
    {Py_tp_getset, retry_getset},
    {0, NULL}};

static PyType_Spec retry_spec = {
    "buttress._core.Retry", sizeof(RetryObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, retry_slots};

/* ------------------------------------------------------------ RetryCall */

typedef struct {
  PyObject_HEAD
  run_t rs;
  PyObject *retry;   /* strong refs behind rs.r / rs.b */
  PyObject *breaker;
  int begun;
  int closed;
} CallObject;

static PyObject *
call_create(modstate *st, RetryObject *r, BreakerObject *b)
{
  CallObject *c = PyObject_GC_New(CallObject, st->call_type);
  if (c == NULL)
    return NULL;
  run_init(&c->rs, st, r, b);
  c->retry = Py_XNewRef((PyObject *)r);
  c->breaker = Py_XNewRef((PyObject *)b);
  c->begun = 0;
  c->closed = 0;
  PyObject_GC_Track(c);
  if (run_begin(&c->rs) < 0) {
    c->closed = 1;
    Py_DECREF(c);
    return NULL;
  }
  c->begun = 1;
  return (PyObject *)c;
}

static int
call_traverse(CallObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->retry);
  Py_VISIT(self->breaker);
  Py_VISIT(self->rs.token);
  Py_VISIT(self->rs.last_exc);
  Py_VISIT(self->rs.last_result);
  return 0;
}

static int
call_clear(CallObject *self)
{
  Py_CLEAR(self->rs.token);
  Py_CLEAR(self->rs.last_exc);
  Py_CLEAR(self->rs.last_result);
  Py_CLEAR(self->retry);
  Py_CLEAR(self->breaker);
  self->rs.r = NULL;
  self->rs.b = NULL;
  self->rs.holding = 0;
  return 0;
}

static void
call_dealloc(CallObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->rs.holding && self->rs.b != NULL) {
    /* dropped mid-call: give the permit back */
    self->rs.holding = 0;
    buttress_breaker_record(self->rs.b->br, &self->rs.t, BUTTRESS_CANCELLED, NO_CLOCK,
                            buttress_monotonic_ns());
  }
  call_clear(self);
  PyObject_GC_Del(self);
  Py_DECREF(tp);
}

static int
call_usable(CallObject *self)
{
  if (self->closed) {
    PyErr_SetString(PyExc_RuntimeError, "this RetryCall is over");
    return 0;
  }
  return 1;
}

static PyObject *
call_admit(CallObject *self, PyObject *u)
{
  (void)u;
  if (!call_usable(self))
    return NULL;
  if (self->rs.holding) {
    PyErr_SetString(PyExc_RuntimeError, "admit() twice without an outcome");
    return NULL;
  }
  if (run_admit(&self->rs) != 0)
    return NULL;
  Py_RETURN_NONE;
}

/* The call is over when a step returns None or raises: close it then, so
 * that drivers need no `finally` on their fast path. */
static PyObject *
delay_or_close(CallObject *self, int k)
{
  if (k > 0)
    return PyFloat_FromDouble((double)self->rs.call.delay_ns / 1e9);
  self->closed = 1;
  run_close(&self->rs);
  if (k < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* failed(exc) -> float | None: the delay before the next attempt, or None
 * to re-raise exc (the call is then over). */
static PyObject *
call_failed(CallObject *self, PyObject *exc)
{
  if (!call_usable(self))
    return NULL;
  if (!PyExceptionInstance_Check(exc)) {
    PyErr_Format(PyExc_TypeError, "failed() takes an exception, got %R", exc);
    return NULL;
  }
  return delay_or_close(self, run_failed(&self->rs, exc));
}

/* succeeded(result) -> float | None: None to return the result (the call
 * is then over), or the delay before the next attempt (the result
 * predicate asked for one). */
static PyObject *
call_succeeded(CallObject *self, PyObject *result)
{
  if (!call_usable(self))
    return NULL;
  return delay_or_close(self, run_succeeded(&self->rs, result));
}

/* next(retry_after=None) -> float | None: low level, no classification:
 * the current attempt failed with a retryable error. */
static PyObject *
call_next(CallObject *self, PyObject *args, PyObject *kw)
{
  static char *kwlist[] = {"retry_after", NULL};
  PyObject *ra = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:next", kwlist, &ra))
    return NULL;
  if (!call_usable(self))
    return NULL;
  run_t *rs = &self->rs;
  if (rs->r == NULL || rs->ended) {
    PyErr_SetString(PyExc_RuntimeError, "no retry in progress");
    return NULL;
  }
  int64_t override = NONE_NS;
  if (ra != Py_None && (override = seconds_to_ns(ra, "retry_after")) < 0)
    return NULL;
  RetryObject *r = rs->r;
  buttress_budget *bud = r->budget ? ((BudgetObject *)r->budget)->b : NULL;
  int rc = buttress_retry_next(r->r, &rs->call, bud, override, NO_CLOCK);
  if (rc == BUTTRESS_NEED_CLOCK) {
    int64_t now = now_ns(rs->st);
    if (now == CLOCK_ERROR)
      return NULL;
    rc = buttress_retry_next(r->r, &rs->call, bud, override, now);
  }
  if (rc < 0) {
    raise_core(rc, "retry next");
    return NULL;
  }
  if (rc > 0) {
    rs->ended = 1;
    Py_RETURN_NONE;
  }
  return PyFloat_FromDouble((double)rs->call.delay_ns / 1e9);
}

/* end(ok=True): low level: the call ended without a give-up. */
static PyObject *
call_end(CallObject *self, PyObject *args)
{
  int ok = 1;
  if (!PyArg_ParseTuple(args, "|p:end", &ok))
    return NULL;
  if (!call_usable(self))
    return NULL;
  run_end(&self->rs, ok ? BUTTRESS_SUCCESS : BUTTRESS_FAILURE);
  Py_RETURN_NONE;
}

static PyObject *
call_close(CallObject *self, PyObject *u)
{
  (void)u;
  if (!self->closed) {
    self->closed = 1;
    run_close(&self->rs);
  }
  Py_RETURN_NONE;
}

static PyObject *
call_remaining(CallObject *self, PyObject *u)
{
  (void)u;
  int64_t d = self->rs.call.deadline_ns;
  if (d < 0)
    Py_RETURN_NONE;
  int64_t now = now_ns(self->rs.st);
  if (now == CLOCK_ERROR)
    return NULL;
  return PyFloat_FromDouble(d > now ? (double)(d - now) / 1e9 : 0.0);
}

static PyObject *
call_get_reason(CallObject *self, void *c)
{
  (void)c;
  switch (self->rs.call.reason) {
  case BUTTRESS_EXHAUSTED:
    return PyUnicode_FromString("attempts");
  case BUTTRESS_DEADLINE:
    return PyUnicode_FromString("deadline");
  case BUTTRESS_BUDGET:
    return PyUnicode_FromString("budget");
  default:
    Py_RETURN_NONE;
  }
}

static PyObject *
call_get_attempt(CallObject *self, void *c)
{
  (void)c;
  return PyLong_FromUnsignedLong(self->rs.call.attempt);
}

static PyObject *
call_get_delay(CallObject *self, void *c)
{
  (void)c;
  return PyFloat_FromDouble((double)self->rs.call.delay_ns / 1e9);
}

static PyObject *
call_get_delay_ns(CallObject *self, void *c)
{
  (void)c;
  return PyLong_FromLongLong(self->rs.call.delay_ns);
}

static PyObject *
call_get_fallback(CallObject *self, void *c)
{
  (void)c;
  if (self->rs.fallback_ok && self->rs.b != NULL && self->rs.b->fallback != NULL)
    return Py_NewRef(self->rs.b->fallback);
  Py_RETURN_NONE;
}

static PyObject *
call_get_sleep(CallObject *self, void *c)
{
  (void)c;
  RetryObject *r = self->rs.r;
  return Py_NewRef(r && r->sleep ? r->sleep : Py_None);
}

/* done() -> None or a delay: the attempt succeeded and has no value for
 * the `result` predicate (the block form): never a retry for a result. */
static PyObject *
call_done(CallObject *self, PyObject *u)
{
  (void)u;
  if (!call_usable(self))
    return NULL;
  self->rs.no_value = 1;
  return delay_or_close(self, run_succeeded(&self->rs, Py_None));
}

static PyMethodDef call_methods[] = {
    {"done", (PyCFunction)call_done, METH_NOARGS,
     "done() -> None: an attempt with no value succeeded (the block form)."},
    {"admit", (PyCFunction)call_admit, METH_NOARGS,
     "Ask the fused breaker for a ticket; raises CircuitOpenError."},
    {"failed", (PyCFunction)call_failed, METH_O,
     "failed(exc) -> delay, or None: re-raise (the call is over)."},
    {"succeeded", (PyCFunction)call_succeeded, METH_O,
     "succeeded(result) -> None: return it (the call is over), or a delay."},
    {"next", (PyCFunction)(void (*)(void))call_next, METH_VARARGS | METH_KEYWORDS,
     "next(retry_after=None) -> delay or None (gave up; see .reason)."},
    {"end", (PyCFunction)call_end, METH_VARARGS, "end(ok=True)"},
    {"close", (PyCFunction)call_close, METH_NOARGS,
     "The call is over: give back a ticket still out, restore the deadline."},
    {"remaining", (PyCFunction)call_remaining, METH_NOARGS,
     "Seconds left before this call's deadline, or None."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef call_getset[] = {
    {"reason", (getter)call_get_reason, NULL,
     "why it gave up: 'attempts', 'deadline', 'budget', or None", NULL},
    {"attempt", (getter)call_get_attempt, NULL, "attempts started so far", NULL},
    {"delay", (getter)call_get_delay, NULL, "the last delay decided, seconds", NULL},
    {"delay_ns", (getter)call_get_delay_ns, NULL, "the same, nanoseconds", NULL},
    {"fallback", (getter)call_get_fallback, NULL,
     "the breaker's fallback when it applies to the error at hand", NULL},
    {"sleep", (getter)call_get_sleep, NULL, "the policy's replacement sleep", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot call_slots[] = {
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_traverse, call_traverse},
    {Py_tp_clear, call_clear},
    {Py_tp_methods, call_methods},
    {Py_tp_getset, call_getset},
    {0, NULL}};

static PyType_Spec call_spec = {
    "buttress._core.RetryCall", sizeof(CallObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    call_slots};

/* ------------------------------------------------------------ Awaitable */

/* What an `async def` wrapper returns when called: an awaitable driving
 * the attempts in C (no Python frame of its own), delegating to the
 * function's coroutine and to asyncio.sleep between attempts.  It behaves
 * as a coroutine: send / throw / close, registered as one. */

enum { AW_NEW = 0, AW_ATTEMPT = 1, AW_SLEEP = 2, AW_DONE = 3 };

typedef struct {
  PyObject_HEAD
  run_t rs;
  PyObject *retry;   /* strong refs behind rs.r / rs.b */
  PyObject *breaker;
  PyObject *func;
  PyObject *args;    /* positional then keyword values */
  PyObject *kwnames; /* or NULL */
  Py_ssize_t nargs;
  PyObject *it;      /* the iterator delegated to, or NULL */
  int state;
} AwaitObject;

static int
await_traverse(AwaitObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->retry);
  Py_VISIT(self->breaker);
  Py_VISIT(self->func);
  Py_VISIT(self->args);
  Py_VISIT(self->kwnames);
  Py_VISIT(self->it);
  Py_VISIT(self->rs.token);
  Py_VISIT(self->rs.last_exc);
  Py_VISIT(self->rs.last_result);
  return 0;
}

static int
await_clear(AwaitObject *self)
{
  Py_CLEAR(self->it);
  Py_CLEAR(self->rs.token);
  Py_CLEAR(self->rs.last_exc);
  Py_CLEAR(self->rs.last_result);
  Py_CLEAR(self->args);
  Py_CLEAR(self->kwnames);
  Py_CLEAR(self->func);
  Py_CLEAR(self->retry);
  Py_CLEAR(self->breaker);
  self->rs.r = NULL;
  self->rs.b = NULL;
  self->rs.holding = 0;
  return 0;
}

/* The call is over: give back a ticket still out, restore the deadline,
 * drop what is no longer needed.  Keeps a pending exception. */
static void
await_finish(AwaitObject *self)
{
  if (self->state == AW_DONE)
    return;
  int started = self->state != AW_NEW;
  self->state = AW_DONE;
  if (started)
    run_close(&self->rs);
  Py_CLEAR(self->it);
  Py_CLEAR(self->args);
  Py_CLEAR(self->kwnames);
}

static void
await_dealloc(AwaitObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->state == AW_ATTEMPT || self->state == AW_SLEEP) {
    PyObject *saved = PyErr_Occurred() ? fetch_exc() : NULL;
    Py_CLEAR(self->it); /* abandoned mid-call: close the coroutine first */
    await_finish(self);
    if (PyErr_Occurred())
      PyErr_WriteUnraisable((PyObject *)self);
    if (saved != NULL)
      restore_exc(saved);
  }
  await_clear(self);
  PyObject_GC_Del(self);
  Py_DECREF(tp);
}

/* The iterator that `await obj` would drive. */
static PyObject *
await_iter_of(PyObject *obj)
{
  if (PyCoro_CheckExact(obj))
    return Py_NewRef(obj);
  PyAsyncMethods *am = Py_TYPE(obj)->tp_as_async;
  if (am == NULL || am->am_await == NULL) {
    PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression",
                 Py_TYPE(obj)->tp_name);
    return NULL;
  }
  return am->am_await(obj);
}

/* Start an attempt: admit, call the function, take its coroutine.
 * 0, or -1 with the attempt's error pending. */
static int
await_start_attempt(AwaitObject *self)
{
  self->state = AW_ATTEMPT;
  if (run_admit(&self->rs) != 0)
    return -1;
  PyObject *coro = PyObject_Vectorcall(self->func, &PyTuple_GET_ITEM(self->args, 0),
                                       (size_t)self->nargs, self->kwnames);
  if (coro == NULL)
    return -1;
  self->it = await_iter_of(coro);
  Py_DECREF(coro);
  return self->it ? 0 : -1;
}

static PySendResult
await_send_to(AwaitObject *self, PyObject *arg, PyObject **val)
{
  return PyIter_Send(self->it, arg, val);
}

/* Go on from what the delegate did (r, val) until the next value to
 * yield, the result, or an error. */
static PySendResult
await_advance(AwaitObject *self, PySendResult r, PyObject *val, PyObject **out)
{
  modstate *st = self->rs.st;
  for (;;) {
    if (r == PYGEN_NEXT) {
      *out = val;
      return PYGEN_NEXT;
    }
    if (self->state == AW_SLEEP) {
      Py_CLEAR(self->it);
      if (r == PYGEN_ERROR) { /* cancelled while waiting: not retried */
        await_finish(self);
        return PYGEN_ERROR;
      }
      Py_DECREF(val);
      if (await_start_attempt(self) < 0)
        r = PYGEN_ERROR;
      else
        r = await_send_to(self, Py_None, &val);
      continue;
    }
    /* An attempt ended. */
    Py_CLEAR(self->it);
    int k;
    if (r == PYGEN_RETURN) {
      k = run_succeeded(&self->rs, val);
      if (k == 0) {
        await_finish(self);
        *out = val;
        return PYGEN_RETURN;
      }
      Py_DECREF(val);
      if (k < 0) {
        await_finish(self);
        return PYGEN_ERROR;
      }
    } else {
      PyObject *exc = fetch_exc();
      if (exc == NULL) { /* an error without an exception: should not be */
        PyErr_SetString(PyExc_SystemError, "attempt failed without an exception");
        await_finish(self);
        return PYGEN_ERROR;
      }
      k = run_failed(&self->rs, exc);
      if (k <= 0) {
        if (k < 0)
          chain_exc(exc);
        else
          restore_exc(Py_NewRef(exc));
        Py_DECREF(exc);
        await_finish(self);
        return PYGEN_ERROR;
      }
      Py_DECREF(exc);
    }
    /* Retry, after a sleep when the delay is not zero. */
    if (self->rs.call.delay_ns > 0) {
      PyObject *aw = NULL;
      if (st->async_sleeper == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "buttress: no async sleeper installed");
      } else {
        RetryObject *ro = self->rs.r;
        PyObject *a[2] = {ro && ro->sleep ? ro->sleep : Py_None, NULL};
        a[1] = PyFloat_FromDouble((double)self->rs.call.delay_ns / 1e9);
        if (a[1] != NULL) {
          aw = PyObject_Vectorcall(st->async_sleeper, a, 2, NULL);
          Py_DECREF(a[1]);
        }
      }
      if (aw == NULL) {
        await_finish(self);
        return PYGEN_ERROR;
      }
      self->it = await_iter_of(aw);
      Py_DECREF(aw);
      if (self->it == NULL) {
        await_finish(self);
        return PYGEN_ERROR;
      }
      self->state = AW_SLEEP;
      r = await_send_to(self, Py_None, &val);
      continue;
    }
    if (await_start_attempt(self) < 0)
      r = PYGEN_ERROR;
    else
      r = await_send_to(self, Py_None, &val);
  }
}

static PySendResult
await_am_send(AwaitObject *self, PyObject *arg, PyObject **out)
{
  *out = NULL;
  switch (self->state) {
  case AW_DONE:
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  case AW_NEW: {
    if (arg != Py_None) {
      PyErr_SetString(PyExc_TypeError,
                      "can't send non-None value to a just-started coroutine");
      return PYGEN_ERROR;
    }
    self->state = AW_ATTEMPT;
    if (run_begin(&self->rs) < 0) {
      await_finish(self);
      return PYGEN_ERROR;
    }
    PyObject *val = NULL;
    PySendResult r = PYGEN_ERROR;
    if (await_start_attempt(self) == 0)
      r = await_send_to(self, Py_None, &val);
    return await_advance(self, r, val, out);
  }
  default: {
    PyObject *val = NULL;
    PySendResult r = await_send_to(self, arg, &val);
    return await_advance(self, r, val, out);
  }
  }
}

/* A send result as a method's return value. */
static PyObject *
send_result(PySendResult r, PyObject *val)
{
  if (r == PYGEN_NEXT)
    return val;
  if (r == PYGEN_RETURN) {
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, val);
    Py_DECREF(val);
    if (stop != NULL) {
      PyErr_SetObject(PyExc_StopIteration, stop);
      Py_DECREF(stop);
    }
  }
  return NULL;
}

static PyObject *
await_send(AwaitObject *self, PyObject *arg)
{
  PyObject *val = NULL;
  PySendResult r = await_am_send(self, arg, &val);
  return send_result(r, val);
}

static PyObject *
await_iternext(AwaitObject *self)
{
  PyObject *val = NULL;
  PySendResult r = await_am_send(self, Py_None, &val);
  if (r == PYGEN_RETURN) {
    if (val == Py_None) { /* StopIteration with no value: the common case */
      Py_DECREF(val);
      PyErr_SetNone(PyExc_StopIteration);
      return NULL;
    }
    return send_result(r, val);
  }
  return r == PYGEN_NEXT ? val : NULL;
}

static PyObject *
await_await(AwaitObject *self)
{
  return Py_NewRef((PyObject *)self);
}

/* Raise the exception described by throw()'s arguments. */
static void
raise_thrown(PyObject *args)
{
  PyObject *typ = PyTuple_GET_ITEM(args, 0);
  PyObject *val = PyTuple_GET_SIZE(args) > 1 ? PyTuple_GET_ITEM(args, 1) : Py_None;
  if (PyExceptionInstance_Check(typ)) {
    PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
  } else if (PyExceptionClass_Check(typ)) {
    PyErr_SetObject(typ, val);
  } else {
    PyErr_SetString(PyExc_TypeError, "throw() takes an exception");
  }
}

/* throw(exc): into the delegate; whatever comes out goes on as in send(). */
static PyObject *
await_throw(AwaitObject *self, PyObject *args)
{
  if (PyTuple_GET_SIZE(args) < 1 || PyTuple_GET_SIZE(args) > 3) {
    PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
    return NULL;
  }
  if (self->state == AW_NEW || self->state == AW_DONE || self->it == NULL) {
    await_finish(self);
    raise_thrown(args);
    return NULL;
  }
  PyObject *val = NULL;
  PySendResult r;
  PyObject *meth = PyObject_GetAttrString(self->it, "throw");
  if (meth == NULL) {
    PyErr_Clear();
    raise_thrown(args);
    r = PYGEN_ERROR;
  } else {
    val = PyObject_Call(meth, args, NULL);
    Py_DECREF(meth);
    if (val != NULL) {
      r = PYGEN_NEXT;
    } else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
      PyObject *stop = fetch_exc();
      val = stop ? PyObject_GetAttrString(stop, "value") : NULL;
      Py_XDECREF(stop);
      r = val ? PYGEN_RETURN : PYGEN_ERROR;
    } else {
      r = PYGEN_ERROR;
    }
  }
  PyObject *out = NULL;
  r = await_advance(self, r, val, &out);
  return send_result(r, out);
}

static PyObject *
await_close(AwaitObject *self, PyObject *u)
{
  (void)u;
  if (self->state == AW_ATTEMPT || self->state == AW_SLEEP) {
    PyObject *r = self->it ? PyObject_CallMethod(self->it, "close", NULL) : NULL;
    if (r == NULL && self->it != NULL)
      PyErr_Clear(); /* a delegate without close(), or one that failed: we end anyway */
    Py_XDECREF(r);
  }
  await_finish(self); /* a ticket still out is given back as cancelled */
  Py_RETURN_NONE;
}

static PyMethodDef await_methods[] = {
    {"send", (PyCFunction)await_send, METH_O, NULL},
    {"throw", (PyCFunction)await_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)await_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyType_Slot await_slots[] = {
    {Py_tp_dealloc, await_dealloc},
    {Py_tp_traverse, await_traverse},
    {Py_tp_clear, await_clear},
    {Py_tp_iter, await_await},
    {Py_tp_iternext, await_iternext},
    {Py_am_await, await_await},
    {Py_am_send, await_am_send},
    {Py_tp_methods, await_methods},
    {0, NULL}};

static PyType_Spec await_spec = {
    "buttress._core.Attempts", sizeof(AwaitObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    await_slots};

static PyObject *
await_create(modstate *st, PyObject *func, RetryObject *r, BreakerObject *b,
             PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject *tuple = PyTuple_New(nargs + nkw); /* kept for the retries */
  if (tuple == NULL)
    return NULL;
  for (Py_ssize_t i = 0; i < nargs + nkw; i++)
    PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
  AwaitObject *a = PyObject_GC_New(AwaitObject, st->await_type);
  if (a == NULL) {
    Py_DECREF(tuple);
    return NULL;
  }
  run_init(&a->rs, st, r, b);
  a->retry = Py_XNewRef((PyObject *)r);
  a->breaker = Py_XNewRef((PyObject *)b);
  a->func = Py_NewRef(func);
  a->args = tuple;
  a->kwnames = Py_XNewRef(kwnames);
  a->nargs = nargs;
  a->it = NULL;
  a->state = AW_NEW;
  PyObject_GC_Track(a);
  return (PyObject *)a;
}

/* ------------------------------------------------------------ Wrapper */

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *func;
  PyObject *retry;   /* RetryObject or NULL */
  PyObject *breaker; /* BreakerObject (breaker-only form) or NULL */
  PyObject *dict;
  PyObject *weakreflist;
  modstate *st;
  int is_async;      /* calls return an awaitable driving the attempts */
} WrapperObject;

static PyObject *
wrapper_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
  WrapperObject *w = (WrapperObject *)self;
  if (w->is_async) {
    RetryObject *r = (RetryObject *)w->retry;
    BreakerObject *b = r ? (BreakerObject *)r->breaker : (BreakerObject *)w->breaker;
    return await_create(w->st, w->func, r, b, args, nargsf, kwnames);
  }
  if (w->retry == NULL)
    return breaker_run((BreakerObject *)w->breaker, w->func, args, nargsf, kwnames);
  return retry_run((RetryObject *)w->retry, w->func, args, nargsf, kwnames);
}

/* Wrapper(func, retry=None, breaker=None) */
static PyObject *
wrapper_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
  static char *kwlist[] = {"func", "retry", "breaker", "is_async", NULL};
  PyObject *func, *retry = Py_None, *breaker = Py_None;
  int is_async = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOp:Wrapper", kwlist, &func, &retry,
                                   &breaker, &is_async))
    return NULL;
  modstate *st = state_of_type(tp);
  if (st == NULL)
    return NULL;
  if (!PyCallable_Check(func)) {
    PyErr_Format(PyExc_TypeError, "the decorated object must be callable, got %R", func);
    return NULL;
  }
  if (retry != Py_None && !PyObject_TypeCheck(retry, st->retry_type)) {
    PyErr_Format(PyExc_TypeError, "retry must be a retry policy, got %R", retry);
    return NULL;
  }
  if (breaker != Py_None && !PyObject_TypeCheck(breaker, st->breaker_type)) {
    PyErr_Format(PyExc_TypeError, "breaker must be a CircuitBreaker, got %R", breaker);
    return NULL;
  }
  if (retry == Py_None && breaker == Py_None) {
    PyErr_SetString(PyExc_TypeError, "Wrapper needs a retry policy or a breaker");
    return NULL;
  }
  if (retry != Py_None && !retry_ready((RetryObject *)retry))
    return NULL;
  if (breaker != Py_None && !breaker_ready((BreakerObject *)breaker))
    return NULL;
  WrapperObject *w = (WrapperObject *)tp->tp_alloc(tp, 0);
  if (w == NULL)
    return NULL;
  w->vectorcall = wrapper_vectorcall;
  w->st = st;
  w->is_async = is_async;
  w->func = Py_NewRef(func);
  w->retry = retry == Py_None ? NULL : Py_NewRef(retry);
  w->breaker = breaker == Py_None ? NULL : Py_NewRef(breaker);
  return (PyObject *)w;
}

static int
wrapper_traverse(WrapperObject *self, visitproc visit, void *arg)
{
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->func);
  Py_VISIT(self->retry);
  Py_VISIT(self->breaker);
  Py_VISIT(self->dict);
  return 0;
}

static int
wrapper_clear(WrapperObject *self)
{
  Py_CLEAR(self->func);
  Py_CLEAR(self->retry);
  Py_CLEAR(self->breaker);
  Py_CLEAR(self->dict);
  return 0;
}

static void
wrapper_dealloc(WrapperObject *self)
{
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (self->weakreflist != NULL)
    PyObject_ClearWeakRefs((PyObject *)self);
  wrapper_clear(self);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

/* Method binding, as for plain functions. */
static PyObject *
wrapper_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
  (void)type;
  if (obj == NULL || obj == Py_None)
    return Py_NewRef(self);
  return PyMethod_New(self, obj);
}

static PyObject *
wrapper_repr(WrapperObject *self)
{
  return PyUnicode_FromFormat("<buttress wrapper of %R>", self->func);
}

static PyObject *
wrapper_metrics(WrapperObject *self, PyObject *u)
{
  (void)u;
  if (self->retry == NULL)
    return breaker_metrics((BreakerObject *)self->breaker, NULL);
  return retry_metrics((RetryObject *)self->retry, NULL);
}

static PyObject *
wrapper_get_retry(WrapperObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->retry ? self->retry : Py_None);
}

static PyObject *
wrapper_get_breaker(WrapperObject *self, void *c)
{
  (void)c;
  PyObject *b = self->breaker;
  if (b == NULL && self->retry != NULL)
    b = ((RetryObject *)self->retry)->breaker;
  return Py_NewRef(b ? b : Py_None);
}

static PyObject *
wrapper_get_func(WrapperObject *self, void *c)
{
  (void)c;
  return Py_NewRef(self->func);
}

/* Pickled by reference, as functions are: the name it has in its module. */
static PyObject *
wrapper_reduce(PyObject *self, PyObject *u)
{
  (void)u;
  return PyObject_GetAttrString(self, "__qualname__");
}

static PyMethodDef wrapper_methods[] = {
    {"metrics", (PyCFunction)wrapper_metrics, METH_NOARGS,
     "Retries and give-ups of this function (and its breaker's metrics)."},
    {"__reduce__", wrapper_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef wrapper_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"retry", (getter)wrapper_get_retry, NULL, "the retry policy, or None", NULL},
    {"breaker", (getter)wrapper_get_breaker, NULL, "the circuit breaker, or None", NULL},
    {"_func", (getter)wrapper_get_func, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef wrapper_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(WrapperObject, vectorcall), READONLY,
     NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(WrapperObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(WrapperObject, weakreflist), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL}};

static PyType_Slot wrapper_slots[] = {
    {Py_tp_new, wrapper_new},
    {Py_tp_dealloc, wrapper_dealloc},
    {Py_tp_traverse, wrapper_traverse},
    {Py_tp_clear, wrapper_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wrapper_descr_get},
    {Py_tp_repr, wrapper_repr},
    {Py_tp_methods, wrapper_methods},
    {Py_tp_getset, wrapper_getset},
    {Py_tp_members, wrapper_members},
    {0, NULL}};

static PyType_Spec wrapper_spec = {
    "buttress._core.Wrapper", sizeof(WrapperObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    wrapper_slots};

/* ------------------------------------------------------------ module */

static PyObject *
mod_monotonic(PyObject *m, PyObject *u)
{
  (void)u;
  int64_t now = now_ns(PyModule_GetState(m));
  if (now == CLOCK_ERROR)
    return NULL;
  return PyFloat_FromDouble((double)now / 1e9);
}

static PyObject *
mod_monotonic_ns(PyObject *m, PyObject *u)
{
  (void)u;
  int64_t now = now_ns(PyModule_GetState(m));
  if (now == CLOCK_ERROR)
    return NULL;
  return PyLong_FromLongLong(now);
}

static PyObject *
mod_remaining(PyObject *m, PyObject *u)
{
  (void)u;
  modstate *st = PyModule_GetState(m);
  int64_t d = outer_deadline(st);
  if (d == CLOCK_ERROR)
    return NULL;
  if (d < 0)
    Py_RETURN_NONE;
  int64_t now = now_ns(st);
  if (now == CLOCK_ERROR)
    return NULL;
  return PyFloat_FromDouble(d > now ? (double)(d - now) / 1e9 : 0.0);
}

static PyObject *
mod_deadline_ns(PyObject *m, PyObject *u)
{
  (void)u;
  int64_t d = outer_deadline(PyModule_GetState(m));
  if (d == CLOCK_ERROR)
    return NULL;
  if (d < 0)
    Py_RETURN_NONE;
  return PyLong_FromLongLong(d);
}

/* _push_deadline(abs_ns) -> token: an enclosing deadline (the earlier of
 * it and the current one) for the calls made until _pop_deadline(token). */
static PyObject *
mod_push_deadline(PyObject *m, PyObject *arg)
{
  modstate *st = PyModule_GetState(m);
  long long d = PyLong_AsLongLong(arg);
  if (d == -1 && PyErr_Occurred())
    return NULL;
  if (d < 0)
    d = 0;
  int64_t outer = outer_deadline(st);
  if (outer == CLOCK_ERROR)
    return NULL;
  if (outer >= 0 && outer < d)
    d = outer;
  PyObject *v = PyLong_FromLongLong(d);
  if (v == NULL)
    return NULL;
  PyObject *token = PyContextVar_Set(st->deadline_var, v);
  Py_DECREF(v);
  if (token != NULL)
    st->deadlines_used = 1;
  return token;
}

static PyObject *
mod_pop_deadline(PyObject *m, PyObject *token)
{
  modstate *st = PyModule_GetState(m);
  if (PyContextVar_Reset(st->deadline_var, token) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *
set_hook(PyObject **slot, PyObject *fn)
{
  if (fn != Py_None && !PyCallable_Check(fn)) {
    PyErr_Format(PyExc_TypeError, "expected a callable or None, got %R", fn);
    return NULL;
  }
  PyObject *old = *slot ? *slot : Py_NewRef(Py_None);
  *slot = fn == Py_None ? NULL : Py_NewRef(fn);
  return old;
}

/* _set_clock(fn) -> previous: fn() returns the time in integer ns. */
static PyObject *
mod_set_clock(PyObject *m, PyObject *fn)
{
  return set_hook(&((modstate *)PyModule_GetState(m))->clock, fn);
}

static PyObject *
mod_set_sleep(PyObject *m, PyObject *fn)
{
  return set_hook(&((modstate *)PyModule_GetState(m))->sleep_hook, fn);
}

static PyObject *
mod_set_transition_hook(PyObject *m, PyObject *fn)
{
  return set_hook(&((modstate *)PyModule_GetState(m))->transition_hook, fn);
}

static PyObject *
mod_set_async_sleeper(PyObject *m, PyObject *fn)
{
  return set_hook(&((modstate *)PyModule_GetState(m))->async_sleeper, fn);
}

/* _set_event_hook(fn, logger=None): fn(kind, policy, attempt, delay, what)
 * for each retry and give-up, called only when logger.isEnabledFor(level)
 * (DEBUG for retries, INFO for give-ups). */
static PyObject *
mod_set_event_hook(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "_set_event_hook(fn, logger=None)");
    return NULL;
  }
  modstate *st = PyModule_GetState(m);
  PyObject *old = set_hook(&st->event_hook, args[0]);
  if (old == NULL)
    return NULL;
  Py_CLEAR(st->logger);
  if (nargs == 2 && args[1] != Py_None)
    st->logger = Py_NewRef(args[1]);
  return old;
}

static PyObject *
mod_get_sleep_hook(PyObject *m, PyObject *u)
{
  (void)u;
  modstate *st = PyModule_GetState(m);
  return Py_NewRef(st->sleep_hook ? st->sleep_hook : Py_None);
}

static PyObject *
mod_entropy_seed(PyObject *m, PyObject *u)
{
  (void)m;
  (void)u;
  return PyLong_FromUnsignedLongLong(buttress_entropy_seed());
}

static PyObject *
mod_jitter_parse(PyObject *m, PyObject *arg)
{
  (void)m;
  const char *s = PyUnicode_AsUTF8(arg);
  if (s == NULL)
    return NULL;
  return PyLong_FromLong(buttress_jitter_parse(s));
}

static PyObject *
mod_strerror(PyObject *m, PyObject *arg)
{
  (void)m;
  int code = PyLong_AsLong(arg);
  if (code == -1 && PyErr_Occurred())
    return NULL;
  return Py_BuildValue("(ss)", buttress_errname(code), buttress_strerror(code));
}

/* The defaults, read from the core's *_config_init (defined once, in C). */
static PyObject *
mod_defaults(PyObject *m, PyObject *u)
{
  (void)m;
  (void)u;
  buttress_retry_config r;
  buttress_breaker_config b;
  buttress_budget_config g;
  buttress_retry_config_init(&r);
  buttress_breaker_config_init(&b);
  buttress_budget_config_init(&g);
  return Py_BuildValue(
      "{s:k,s:d,s:d,s:d,s:s,s:k,s:d,s:k,s:k,s:k,s:k,s:d,s:s,s:d,s:d,s:d}", "attempts",
      (unsigned long)r.attempts, "base", (double)r.backoff.base_ns / 1e9, "multiplier",
      r.backoff.multiplier, "cap", (double)r.backoff.cap_ns / 1e9, "jitter",
      buttress_jitter_name(r.backoff.jitter), "failure_threshold",
      (unsigned long)b.failure_threshold, "reset_timeout",
      (double)b.reset_timeout_ns / 1e9, "half_open_calls", (unsigned long)b.half_open_calls,
      "success_threshold", (unsigned long)b.success_threshold, "window",
      (unsigned long)b.window_size, "min_calls", (unsigned long)b.min_calls,
      "time_window", (double)b.window_ns / 1e9, "window_type",
      b.window_type == BUTTRESS_WINDOW_TIME ? "time" : "count", "budget_ratio", g.ratio,
      "budget_min_per_second", g.min_per_second, "budget_window",
      (double)g.window_ns / 1e9);
}

static PyMethodDef mod_methods[] = {
    {"monotonic", mod_monotonic, METH_NOARGS, "The clock buttress uses, in seconds."},
    {"monotonic_ns", mod_monotonic_ns, METH_NOARGS, "The same in nanoseconds."},
    {"remaining", mod_remaining, METH_NOARGS,
     "Seconds left before the innermost active deadline, or None."},
    {"_deadline_ns", mod_deadline_ns, METH_NOARGS, NULL},
    {"_push_deadline", mod_push_deadline, METH_O, NULL},
    {"_pop_deadline", mod_pop_deadline, METH_O, NULL},
    {"_set_clock", mod_set_clock, METH_O, NULL},
    {"_set_sleep", mod_set_sleep, METH_O, NULL},
    {"_get_sleep_hook", mod_get_sleep_hook, METH_NOARGS, NULL},
    {"_set_transition_hook", mod_set_transition_hook, METH_O, NULL},
    {"_set_event_hook", (PyCFunction)(void (*)(void))mod_set_event_hook, METH_FASTCALL,
     NULL},
    {"_set_async_sleeper", mod_set_async_sleeper, METH_O, NULL},
    {"entropy_seed", mod_entropy_seed, METH_NOARGS, NULL},
    {"jitter_parse", mod_jitter_parse, METH_O, NULL},
    {"strerror", mod_strerror, METH_O, NULL},
    {"defaults", mod_defaults, METH_NOARGS, "The library defaults, from the C core."},
    {"unlink_region", mod_unlink_region, METH_O,
     "unlink_region(name) -> bool: remove a named region's name."},
    {NULL, NULL, 0, NULL}};

static PyStructSequence_Field retry_state_fields[] = {
    {"attempt", "attempts made so far"},
    {"delay", "seconds before the next attempt"},
    {"exception", "the exception of the failed attempt, or None"},
    {"result", "the result the predicate rejected, or None"},
    {NULL, NULL}};

static PyStructSequence_Desc retry_state_desc = {
    "buttress.RetryState", "What before_sleep is told.", retry_state_fields, 4};

static int
add_type(PyObject *m, PyTypeObject **slot, PyType_Spec *spec, PyObject *base)
{
  *slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, base);
  if (*slot == NULL)
    return -1;
  return PyModule_AddType(m, *slot);
}

static PyObject *
new_exc(PyObject *m, const char *name, const char *doc, PyObject *base, PyObject *dict)
{
  PyObject *e = PyErr_NewExceptionWithDoc(name, doc, base, dict);
  if (e == NULL)
    return NULL;
  const char *dot = strrchr(name, '.');
  if (PyModule_AddObjectRef(m, dot + 1, e) < 0) {
    Py_DECREF(e);
    return NULL;
  }
  return e;
}

static int
core_exec(PyObject *m)
{
  modstate *st = PyModule_GetState(m);
  if (buttress_abi_version() <= 0) {
    PyErr_SetString(PyExc_ImportError, "buttress core reports no ABI version");
    return -1;
  }
  if (add_type(m, &st->backoff_type, &backoff_spec, NULL) < 0 ||
      add_type(m, &st->budget_type, &budget_spec, NULL) < 0 ||
      add_type(m, &st->breaker_type, &breaker_spec, NULL) < 0 ||
      add_type(m, &st->ticket_type, &ticket_spec, NULL) < 0 ||
      add_type(m, &st->retry_type, &retry_spec, NULL) < 0 ||
      add_type(m, &st->call_type, &call_spec, NULL) < 0 ||
      add_type(m, &st->wrapper_type, &wrapper_spec, NULL) < 0 ||
      add_type(m, &st->await_type, &await_spec, NULL) < 0 ||
      add_type(m, &st->region_type, &region_spec, NULL) < 0)
    return -1;
  st->retry_state_type = PyStructSequence_NewType(&retry_state_desc);
  if (st->retry_state_type == NULL ||
      PyModule_AddObjectRef(m, "RetryState", (PyObject *)st->retry_state_type) < 0)
    return -1;

  st->ButtressError = new_exc(m, "buttress.ButtressError",
                              "Base class of the errors buttress raises.",
                              PyExc_Exception, NULL);
  if (st->ButtressError == NULL)
    return -1;
  PyObject *d = Py_BuildValue("{s:O,s:O}", "breaker", Py_None, "retry_after", Py_None);
  if (d == NULL)
    return -1;
  st->CircuitOpenError = new_exc(
      m, "buttress.CircuitOpenError",
      "A circuit breaker rejected the call.  .breaker is its name, .retry_after "
      "the seconds until a call may be admitted (None when forced open).",
      st->ButtressError, d);
  Py_DECREF(d);
  d = Py_BuildValue("{s:O,s:i}", "last_result", Py_None, "attempts", 0);
  if (st->CircuitOpenError == NULL || d == NULL)
    return -1;
  st->RetryExhausted = new_exc(
      m, "buttress.RetryExhausted",
      "Retries driven by the result predicate ran out.  .last_result is the "
      "last value returned, .attempts the number of attempts made.",
      st->ButtressError, d);
  Py_DECREF(d);
  if (st->RetryExhausted == NULL)
    return -1;
  PyObject *bases = PyTuple_Pack(2, st->ButtressError, PyExc_TimeoutError);
  if (bases == NULL)
    return -1;
  st->DeadlineExceeded =
      new_exc(m, "buttress.DeadlineExceeded",
              "An inherited deadline had passed before the first attempt.", bases, NULL);
  Py_DECREF(bases);
  if (st->DeadlineExceeded == NULL)
    return -1;
  bases = PyTuple_Pack(2, st->ButtressError, PyExc_OSError);
  if (bases == NULL)
    return -1;
  st->RegionError = new_exc(
      m, "buttress.RegionError",
      "A shared-memory region cannot be used: full, busy, or not a buttress "
      "region of this version.  An OSError; .errno is ENOSPC, EBUSY or None.",
      bases, NULL);
  Py_DECREF(bases);
  if (st->RegionError == NULL)
    return -1;

  for (int i = 0; i < BUTTRESS_STATE_COUNT; i++) {
    st->state_names[i] = PyUnicode_InternFromString(buttress_state_name(i));
    if (st->state_names[i] == NULL)
      return -1;
  }
  st->deadline_var = PyContextVar_New("buttress.deadline", NULL);
  st->time_module = PyImport_ImportModule("time");
  st->str_sleep = PyUnicode_InternFromString("sleep");
  st->str_breaker = PyUnicode_InternFromString("breaker");
  st->str_retry_after = PyUnicode_InternFromString("retry_after");
  st->str_last_result = PyUnicode_InternFromString("last_result");
  st->str_attempts = PyUnicode_InternFromString("attempts");
  st->str_retry = PyUnicode_InternFromString("retry");
  st->str_giveup = PyUnicode_InternFromString("giveup");
  st->str_is_enabled_for = PyUnicode_InternFromString("isEnabledFor");
  st->level_debug = PyLong_FromLong(10); /* logging.DEBUG */
  st->level_info = PyLong_FromLong(20);  /* logging.INFO */
  if (st->str_retry == NULL || st->str_giveup == NULL || st->str_is_enabled_for == NULL ||
      st->level_debug == NULL || st->level_info == NULL)
    return -1;
  if (st->deadline_var == NULL || st->time_module == NULL || st->str_sleep == NULL ||
      st->str_breaker == NULL || st->str_retry_after == NULL ||
      st->str_last_result == NULL || st->str_attempts == NULL)
    return -1;
  if (PyModule_AddStringConstant(m, "CORE_VERSION", BUTTRESS_VERSION) < 0 ||
      PyModule_AddIntConstant(m, "ABI_VERSION", buttress_abi_version()) < 0)
    return -1;
  return 0;
}

static int
core_traverse(PyObject *m, visitproc visit, void *arg)
{
  modstate *st = PyModule_GetState(m);
  Py_VISIT(st->backoff_type);
  Py_VISIT(st->budget_type);
  Py_VISIT(st->breaker_type);
  Py_VISIT(st->ticket_type);
  Py_VISIT(st->retry_type);
  Py_VISIT(st->call_type);
  Py_VISIT(st->wrapper_type);
  Py_VISIT(st->retry_state_type);
  Py_VISIT(st->ButtressError);
  Py_VISIT(st->CircuitOpenError);
  Py_VISIT(st->RetryExhausted);
  Py_VISIT(st->DeadlineExceeded);
  Py_VISIT(st->clock);
  Py_VISIT(st->sleep_hook);
  Py_VISIT(st->transition_hook);
  Py_VISIT(st->event_hook);
  Py_VISIT(st->logger);
  Py_VISIT(st->async_sleeper);
  Py_VISIT(st->await_type);
  Py_VISIT(st->region_type);
  Py_VISIT(st->RegionError);
  return 0;
}

static int
core_clear(PyObject *m)
{
  modstate *st = PyModule_GetState(m);
  Py_CLEAR(st->backoff_type);
  Py_CLEAR(st->budget_type);
  Py_CLEAR(st->breaker_type);
  Py_CLEAR(st->ticket_type);
  Py_CLEAR(st->retry_type);
  Py_CLEAR(st->call_type);
  Py_CLEAR(st->wrapper_type);
  Py_CLEAR(st->retry_state_type);
  Py_CLEAR(st->ButtressError);
  Py_CLEAR(st->CircuitOpenError);
  Py_CLEAR(st->RetryExhausted);
  Py_CLEAR(st->DeadlineExceeded);
  for (int i = 0; i < BUTTRESS_STATE_COUNT; i++)
    Py_CLEAR(st->state_names[i]);
  Py_CLEAR(st->deadline_var);
  Py_CLEAR(st->clock);
  Py_CLEAR(st->sleep_hook);
  Py_CLEAR(st->transition_hook);
  Py_CLEAR(st->event_hook);
  Py_CLEAR(st->logger);
  Py_CLEAR(st->async_sleeper);
  Py_CLEAR(st->str_retry);
  Py_CLEAR(st->str_giveup);
  Py_CLEAR(st->str_is_enabled_for);
  Py_CLEAR(st->level_debug);
  Py_CLEAR(st->level_info);
  Py_CLEAR(st->await_type);
  Py_CLEAR(st->region_type);
  Py_CLEAR(st->RegionError);
  Py_CLEAR(st->time_module);
  Py_CLEAR(st->str_sleep);
  Py_CLEAR(st->str_breaker);
  Py_CLEAR(st->str_retry_after);
  Py_CLEAR(st->str_last_result);
  Py_CLEAR(st->str_attempts);
  return 0;
}

static void
core_free(void *m)
{
  core_clear((PyObject *)m);
}

static PyModuleDef_Slot core_slots[] = {{Py_mod_exec, core_exec}, {0, NULL}};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    "buttress._core",
    "The C core of buttress: retry, backoff, circuit breaker, retry budget.",
    sizeof(modstate),
    mod_methods,
    core_slots,
    core_traverse,
    core_clear,
    core_free};

PyMODINIT_FUNC
PyInit__core(void)
{
  return PyModuleDef_Init(&core_module);
}
