"""buttress: retry with backoff and jitter, circuit breakers, retry budgets and
deadlines.  The decisions are made by a lock-free C core (buttress._core);
this package checks arguments, builds the policies and wraps functions.

    @buttress.retry(attempts=3, deadline=10.0)
    def fetch(url): ...

    payments = buttress.CircuitBreaker("payments", failure_threshold=5)

    @payments
    def charge(card): ...
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import threading
import time
import uuid
import weakref
from typing import (Any, Awaitable, Callable, Concatenate, Iterator, Literal, Optional, ParamSpec, Protocol,
                    TypeVar, overload)

from . import _core
from ._core import (
    ButtressError,
    CircuitOpenError,
    DeadlineExceeded,
    RegionError,
    RetryExhausted,
    RetryState,
    remaining,
)

__all__ = [
    "Backoff",
    "ButtressError",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadlineExceeded",
    "Decorator",
    "FakeClock",
    "Guarded",
    "Region",
    "RegionError",
    "RetryBudget",
    "RetryExhausted",
    "RetryPolicy",
    "RetryState",
    "correlation",
    "deadline",
    "log_exception_messages",
    "metrics",
    "monotonic",
    "remaining",
    "retry",
    "retrying",
    "testing",
    "unlink_region",
]

__version__ = _core.CORE_VERSION

_log = logging.getLogger("buttress")

# The defaults live once, in the C core (*_config_init).
DEFAULTS: dict[str, Any] = _core.defaults()
_D = DEFAULTS

_MAX_NS = 1 << 62
_JITTERS = ("none", "full", "equal", "decorrelated")

# --------------------------------------------------------------- typing
P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R2 = TypeVar("R2")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")


class Guarded(Protocol[P, R_co]):
    """What the decorators return: the function's own signature, plus
    metrics(); binds like a function when used as a method."""

    __wrapped__: Callable[..., Any]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def metrics(self) -> dict[str, Any]: ...

    @overload
    def __get__(self, obj: None, owner: Any) -> "Guarded[P, R_co]": ...

    @overload
    def __get__(self: "Guarded[Concatenate[S, P2], R2]", obj: S,
                owner: Any) -> "Guarded[P2, R2]": ...

    def __get__(self, obj: Any, owner: Any) -> Any: ...


class Decorator(Protocol):
    """What retry(...) returns."""

    def __call__(self, fn: Callable[P, R], /) -> Guarded[P, R]: ...


# --------------------------------------------------------------- checks
# Each names the parameter and the bad value, and runs before anything is
# built, so a bad configuration leaves nothing half-made.


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _seconds(name: str, v: object, *, positive: bool = False) -> int:
    """Seconds (int or float) to integer nanoseconds."""
    if not _is_number(v):
        raise TypeError(f"{name} must be a number of seconds, got {v!r}")
    too_large = f"{name} is too large (at most {_MAX_NS / 1e9:.0f} s), got {v!r}"
    try:
        f = float(v)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond any float
        raise ValueError(too_large) from None
    if not math.isfinite(f) or f < 0 or (positive and f == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {need}, got {v!r}")
    if f * 1e9 > _MAX_NS:  # before round(): 1e300 s would overflow it
        raise ValueError(too_large)
    ns = round(f * 1e9)
    if ns > _MAX_NS:
        raise ValueError(too_large)
    if positive and ns == 0:
        raise ValueError(f"{name} must be at least 1 ns, got {v!r}")
    return ns


_MIN_WINDOW_NS = 10_000_000  # BUTTRESS_MIN_WINDOW_NS: ten buckets of >= 1 ms


def _window_ns(v: object) -> int:
    ns = _seconds("window", v, positive=True)
    if ns < _MIN_WINDOW_NS:
        raise ValueError(f"window must be at least 0.01 s (ten buckets of 1 ms), got {v!r}")
    return ns


def _opt_seconds(name: str, v: object, *, positive: bool = False) -> Optional[int]:
    return None if v is None else _seconds(name, v, positive=positive)


def _int(name: str, v: object, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v!r}")
    return v


def _real(name: str, v: object, lo: float, hi: float = math.inf, *,
          lo_open: bool = False) -> float:
    if not _is_number(v):
        raise TypeError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond any float: not finite either
        f = math.inf
    if not math.isfinite(f) or f < lo or f > hi or (lo_open and f == lo):
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        hi_s = "" if hi == math.inf else f" and <= {hi}"
        raise ValueError(f"{name} must be finite, {lo_s}{hi_s}, got {v!r}")
    return f


def _callable(name: str, v: object) -> Any:
    if v is not None and not callable(v):
        raise TypeError(f"{name} must be callable or None, got {v!r}")
    return v


def _exc_spec(name: str, v: object) -> tuple[Any, bool]:
    """An exception type, a tuple of them, or a predicate -> (spec, is_pred)."""
    if isinstance(v, type):
        if not issubclass(v, BaseException):
            raise TypeError(f"{name} must be an exception type, a tuple of them or a "
                            f"predicate, got {v!r}")
        return (v,), False
    if isinstance(v, tuple):
        for t in v:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(f"{name} must hold exception types only, got {t!r} "
                                f"in {v!r}")
        return v, False
    if callable(v):
        return v, True
    raise TypeError(f"{name} must be an exception type, a tuple of them or a "
                    f"predicate, got {v!r}")


def _jitter(name: str, v: object) -> int:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, _JITTERS))}, got {v!r}")
    code = _core.jitter_parse(v)
    if code < 0:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, _JITTERS))}, got {v!r}")
    return int(code)


def _backoff_ns(base: object, multiplier: object, cap: object, jitter: object,
                prefix: str = "") -> tuple[int, int, float, int]:
    base_ns = _seconds(prefix + "base", base)
    mult = _real(prefix + "multiplier", multiplier, 1.0)
    cap_ns = _seconds(prefix + "cap", cap)
    if cap_ns < base_ns:
        raise ValueError(f"{prefix}cap must be >= {prefix}base ({base!r}), got {cap!r}")
    return base_ns, cap_ns, mult, _jitter(prefix + "jitter", jitter)


# --------------------------------------------------------------- fork
# A forked child must not replay its parent's random stream: reseed every
# generator that was not given an explicit seed.
_seeded: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _reseed_after_fork() -> None:
    for obj in list(_seeded):
        obj._reseed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)

# --------------------------------------------------------------- Backoff


class Backoff(_core.Backoff):
    """Capped exponential backoff with jitter applied after the cap.

    Delay of retry n (0-based): jitter(min(cap, base * multiplier**n)).
    jitter: "none" | "full" (uniform in [0, d]) | "equal" (d/2 + uniform in
    [0, d/2]) | "decorrelated" (uniform in [base, min(cap, 3 * previous)]).
    """

    def __init__(self, base: float = _D["base"], multiplier: float = _D["multiplier"],
                 cap: float = _D["cap"], jitter: str = _D["jitter"],
                 seed: Optional[int] = None) -> None:
        base_ns, cap_ns, mult, jit = _backoff_ns(base, multiplier, cap, jitter)
        if seed is not None:
            _int("seed", seed, 0, 2**64 - 1)
        self._configure(base_ns, cap_ns, mult, jit, seed)
        if seed is None:
            _seeded.add(self)

    @property
    def base(self) -> float:
        return float(self._config["base"])

    @property
    def multiplier(self) -> float:
        return float(self._config["multiplier"])

    @property
    def cap(self) -> float:
        return float(self._config["cap"])

    @property
    def jitter(self) -> str:
        return str(self._config["jitter"])

    def __repr__(self) -> str:
        c = self._config
        return (f"Backoff(base={c['base']!r}, multiplier={c['multiplier']!r}, "
                f"cap={c['cap']!r}, jitter={c['jitter']!r}, seed={self.seed!r})")


# --------------------------------------------------------------- regions

REGION_SIZE = 1 << 20  # default size of a Region: 1 MiB, room for ~100 breakers
_REGION_MIN_SIZE = 65536  # BUTTRESS_REGION_MIN_SIZE
_REGION_NAME_MAX = 200  # BUTTRESS_REGION_NAME_MAX, bytes
_SLOT_NAME_MAX = 63  # BUTTRESS_SLOT_NAME_MAX: breaker and budget names, bytes


def _region_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str ('/name') or None, got {name!r}")
    if not name.startswith("/") or len(name) < 2 or "/" in name[1:] or "\0" in name:
        raise ValueError(f"name must be '/name': one leading slash and no other, got {name!r}")
    n = len(name.encode("utf-8", "surrogatepass"))
    if n > _REGION_NAME_MAX:
        raise ValueError(f"name is too long: {n} bytes, at most {_REGION_NAME_MAX}: {name!r}")
    return name


def _check_name(name: object) -> None:
    """A name labels metrics and log records: a non-empty str, or None."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    if name == "":
        raise ValueError("name must not be empty (it labels metrics and log records); "
                         "give a name or None, got ''")


def _slot_name(kind: str, name: object) -> str:
    """The name a shared breaker or budget is found by in its region."""
    if name is None:
        raise TypeError(f"a shared {kind} needs a name: every process finds it in the "
                        "region by that name")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    n = len(name.encode("utf-8", "surrogatepass"))
    if n == 0 or "\0" in name:
        raise ValueError(f"the name of a shared {kind} must be non-empty, without NUL "
                         f"characters, got {name!r}")
    if n > _SLOT_NAME_MAX:
        raise ValueError(f"name is too long for a shared {kind}: {n} bytes in UTF-8, at "
                         f"most {_SLOT_NAME_MAX}: {name!r}")
    return name


def _shared(kind: str, shared: object) -> "Optional[Region]":
    if shared is None:
        return None
    if not isinstance(shared, _core.Region):
        raise TypeError(f"shared must be a buttress.Region or None, got {shared!r}")
    if shared.closed:
        raise ValueError(f"shared: the region {shared!r} is closed: no {kind} can be "
                         "placed in it")
    return shared  # type: ignore[return-value]


class Region(_core.Region):
    """Memory shared by processes, holding circuit breakers and retry budgets
    by name, so that every worker of a server uses one breaker.

        Region("/myapp-breakers")      # named POSIX shared memory (mode 0600)
        Region(None)                   # anonymous: make it before forking

    A named region is created if missing and attached otherwise; attaching
    never resets the state that is there (`size` is then ignored).
    `create=False` only attaches (FileNotFoundError when missing).  An
    anonymous region is seen by the processes forked after it was made.
    Then CircuitBreaker(name, ..., shared=region) and
    RetryBudget(..., name=..., shared=region) find or create their state in
    it.  The mapping stays while any breaker or budget of this process uses
    it, whatever happens to this object.
    """

    def __init__(self, name: Optional[str], size: int = REGION_SIZE, *,
                 create: bool = True, mode: int = 0o600) -> None:
        if name is not None:
            _region_name(name)
        _int("size", size, _REGION_MIN_SIZE, 2**63 - 1)
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, got {create!r}")
        _int("mode", mode, 0, 0o777)
        if name is None and not create:
            raise ValueError("create=False needs a name: an anonymous region is always new")
        self._open(name, size, create, mode)

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        what = "anonymous" if self.name is None else repr(self.name)
        if self.closed:
            return f"<Region {what} closed>"
        return f"<Region {what} size={self.size}>"


def unlink_region(name: str) -> bool:
    """Remove a named region's name: True, or False when there was none.
    Processes that have it mapped keep using it; the memory is freed when
    the last of them unmaps it.  The next Region(name) creates a fresh one."""
    return bool(_core.unlink_region(_region_name(name)))


# --------------------------------------------------------------- budget


class RetryBudget(_core.Budget):
    """Caps retries across many call sites: within any `window` seconds,
    retries may number at most min_per_second * window + ratio * calls."""

    def __init__(self, ratio: float = _D["budget_ratio"],
                 min_per_second: float = _D["budget_min_per_second"],
                 window: float = _D["budget_window"], *, name: Optional[str] = None,
                 shared: Optional[Region] = None) -> None:
        r = _real("ratio", ratio, 0.0)
        m = _real("min_per_second", min_per_second, 0.0)
        w = _window_ns(window)
        _check_name(name)
        region = _shared("retry budget", shared)
        if region is not None:
            _slot_name("retry budget", name)
            self._configure(r, m, w, name, region)
        else:
            self._configure(r, m, w)
        self.ratio, self.min_per_second, self.window = r, m, float(window)
        self.name = name
        self._shared = region
        if name is not None:
            _budgets[name] = self  # buttress.metrics reports named budgets

    @property
    def shared(self) -> Optional[Region]:
        """The Region holding this budget's state, or None."""
        return self._shared

    def __repr__(self) -> str:
        extra = "" if self.name is None else f", name={self.name!r}"
        if self._shared is not None:
            extra += f", shared={self._shared!r}"
        return (f"RetryBudget(ratio={self.ratio!r}, min_per_second="
                f"{self.min_per_second!r}, window={self.window!r}{extra})")


# --------------------------------------------------------------- breaker

class _Registry:
    """Named objects for buttress.metrics, held weakly.  Several live objects
    may share a name: the newest is reported; once it is collected, the newest
    earlier one still alive is reported again (so the throwaway policy that
    retry() builds to check its arguments never hides a live one)."""

    def __init__(self) -> None:
        self._refs: dict[str, list[weakref.ref[Any]]] = {}
        self._lock = threading.Lock()
        self._dead = 0

    def _died(self, ref: Any) -> None:
        self._dead += 1  # no lock: the GC may run this anywhere

    def _prune(self) -> None:
        self._dead = 0
        for name in list(self._refs):
            live = [r for r in self._refs[name] if r() is not None]
            if live:
                self._refs[name] = live
            else:
                del self._refs[name]

    def __setitem__(self, name: str, obj: Any) -> None:
        with self._lock:
            if self._dead > 64 and 2 * self._dead >= len(self._refs):
                self._prune()  # amortised: names of dead objects do not pile up
            refs = [r for r in self._refs.get(name, ()) if r() is not None and r() is not obj]
            refs.append(weakref.ref(obj, self._died))
            self._refs[name] = refs

    def get(self, name: str, default: Any = None) -> Any:
        with self._lock:
            for r in reversed(self._refs.get(name, ())):
                obj = r()
                if obj is not None:
                    return obj
        return default

    def __getitem__(self, name: str) -> Any:
        obj = self.get(name)
        if obj is None:
            raise KeyError(name)
        return obj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, Any]]:
        """(name, newest live object) pairs, sorted by name."""
        out = []
        with self._lock:
            if self._dead:
                self._prune()
            for name in sorted(self._refs):
                for r in reversed(self._refs[name]):
                    obj = r()
                    if obj is not None:
                        out.append((name, obj))
                        break
        return out

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self.items()])

    def __len__(self) -> int:
        return len(self.items())


_breakers: _Registry = _Registry()  # every CircuitBreaker, by name
_retries: _Registry = _Registry()   # RetryPolicy objects given name=
_budgets: _Registry = _Registry()   # RetryBudget objects given name=


def _registry_locks_after_fork() -> None:
    # a thread of the parent may have held one at the fork: it never lets go
    for reg in (_breakers, _retries, _budgets):
        reg._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry_locks_after_fork)

_breaker_serial = 0
_correlation: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "buttress.correlation", default=None)
_log_messages = False


@contextlib.contextmanager
def correlation(cid: Optional[str] = None) -> Iterator[str]:
    """Set the correlation id that buttress's log records carry, for the
    block (a contextvar: asyncio tasks created inside inherit it; a thread
    needs contextvars.copy_context().run).  None makes a new random id.
    Yields the id."""
    if cid is None:
        cid = uuid.uuid4().hex
    elif not isinstance(cid, str):
        raise TypeError(f"correlation id must be a str or None, got {type(cid).__name__}")
    token = _correlation.set(cid)
    try:
        yield cid
    finally:
        _correlation.reset(token)


def log_exception_messages(enabled: bool = True) -> bool:
    """Opt in to exception messages in buttress's retry and give-up log
    records (field `error`, and in the message).  Off by default: a message
    may hold a secret (a token in a URL, a password in a DSN); records then
    carry only the exception's type (`error_type`).  Returns the previous
    setting.  Argument values and results are never logged."""
    global _log_messages
    prev, _log_messages = _log_messages, bool(enabled)
    return prev


def _type_name(obj: Any) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    mod = getattr(t, "__module__", None)
    qual = str(getattr(t, "__qualname__", None) or getattr(t, "__name__", "?"))
    return qual if mod in (None, "builtins") else f"{mod}.{qual}"


def _on_transition(breaker: "CircuitBreaker", old: str, new: str) -> None:
    """Called by the core binding once per transition, by the caller whose
    ticket made it, after the transition is committed.  Each listener is
    isolated: one that raises is logged and the others still run."""
    name = breaker.name
    if _log.isEnabledFor(logging.INFO):
        _log.info("circuit breaker %r: %s -> %s", name, old, new,
                  extra={"event": "state_change", "breaker": name, "old": old, "new": new,
                         "correlation_id": _correlation.get()})
    for listener in getattr(breaker, "_listeners", ()):
        try:
            listener(breaker, old, new)
        except Exception:
            # the listener's own bug: its traceback is what fixes it
            _log.exception("on_state_change listener %s of circuit breaker %r failed",
                           getattr(listener, "__qualname__", None) or _type_name(listener),
                           name,
                           extra={"event": "listener_error", "breaker": name, "old": old,
                                  "new": new, "correlation_id": _correlation.get()})


_core._set_transition_hook(_on_transition)


def _on_retry_event(kind: str, policy: Any, attempt: int, delay: float, what: Any,
                    reason: Any = None) -> None:
    """One log record per retry (DEBUG) and per give-up (INFO); the binding
    calls this only when the logger is enabled for that level.  `what` is the
    exception or the rejected result: only the exception's type is logged
    (its message too after log_exception_messages()), never a result."""
    name = getattr(policy, "name", None)
    label = name if name is not None else "<unnamed>"
    if isinstance(what, BaseException):
        etype: Optional[str] = _type_name(what)
        desc = etype
    elif what is None and attempt == 0:
        etype, desc = None, "none: no time left to make an attempt"
    else:
        etype, desc = None, "result rejected"
    extra: dict[str, Any] = {"event": kind, "retry": name, "error_type": etype,
                             "correlation_id": _correlation.get()}
    br = getattr(policy, "breaker", None)
    if br is not None:
        extra["breaker"] = br.name
    if _log_messages and isinstance(what, BaseException):
        try:
            extra["error"] = str(what)
        except Exception:
            extra["error"] = "<str() failed>"
        desc = f"{etype}: {extra['error']}"
    if kind == "retry":
        attempt -= 1  # the core already counts the coming attempt
        extra.update(attempt=attempt, delay=delay)
        _log.debug("retry %s: attempt %d failed (%s); next in %.3f s", label, attempt,
                   desc, delay, extra=extra)
    else:
        why = reason  # the core's: "attempts", "deadline" or "budget"
        extra.update(attempt=attempt, reason=why)
        _log.info("retry %s: giving up (%s) after %d attempts; last error %s", label, why,
                  attempt, desc, extra=extra)


_core._set_event_hook(_on_retry_event, _log)


class CircuitBreaker(_core.Breaker):
    """A circuit breaker: closed (calls pass), open (calls rejected with
    CircuitOpenError), half-open (a few trial calls decide).

    Use it as a decorator, as `with breaker:` / `async with breaker:`,
    through breaker.call(fn, ...), or in two steps: ticket = breaker.allow();
    ...; breaker.record(ticket, ok).
    """

    def __init__(self, name: Optional[str] = None, *,
                 failure_threshold: int = _D["failure_threshold"],
                 reset_timeout: float = _D["reset_timeout"],
                 half_open_calls: int = _D["half_open_calls"],
                 success_threshold: int = _D["success_threshold"],
                 trial_timeout: Optional[float] = None,
                 failure_rate: Optional[float] = None,
                 slow_call: Optional[float] = None,
                 slow_rate: Optional[float] = None,
                 window: float = _D["window"],
                 window_type: str = _D["window_type"],
                 min_calls: int = _D["min_calls"],
                 reset_backoff: Optional[Backoff] = None,
                 on: Any = Exception,
                 exclude: Any = (),
                 fallback: Optional[Callable[..., Any]] = None,
                 on_state_change: Any = None,
                 shared: Optional[Region] = None) -> None:
        global _breaker_serial
        region = _shared("circuit breaker", shared)
        if region is not None:
            _slot_name("circuit breaker", name)
        if name is None:
            _breaker_serial += 1
            name = f"breaker-{_breaker_serial}"
        else:
            _check_name(name)
        cfg: dict[str, Any] = {
            "failure_threshold": _int("failure_threshold", failure_threshold, 0, 65535),
            "reset_timeout_ns": _seconds("reset_timeout", reset_timeout, positive=True),
            "half_open_calls": _int("half_open_calls", half_open_calls, 1, 1024),
            "success_threshold": _int("success_threshold", success_threshold, 1, 65535),
            "min_calls": _int("min_calls", min_calls, 1, 2**32 - 1),
        }
        cfg["trial_timeout_ns"] = _opt_seconds("trial_timeout", trial_timeout, positive=True)
        if failure_rate is not None:
            cfg["failure_rate"] = _real("failure_rate", failure_rate, 0.0, 1.0, lo_open=True)
        cfg["slow_call_ns"] = _opt_seconds("slow_call", slow_call, positive=True)
        if slow_rate is not None:
            cfg["slow_rate"] = _real("slow_rate", slow_rate, 0.0, 1.0, lo_open=True)
            if slow_call is None:
                raise ValueError(f"slow_rate={slow_rate!r} needs slow_call (the duration "
                                 "from which a call is slow)")
        if window_type not in ("count", "time"):
            raise ValueError(f"window_type must be 'count' or 'time', got {window_type!r}")
        if window_type == "count":
            cfg["window_size"] = _int("window", window, 1, 65536)
            cfg["window_type"] = 0
        else:
            cfg["window_ns"] = _window_ns(window)
            cfg["window_type"] = 1
        if reset_backoff is not None:
            if not isinstance(reset_backoff, Backoff):
                raise TypeError(f"reset_backoff must be a Backoff or None, got {reset_backoff!r}")
            c = reset_backoff._config
            cfg.update(use_reset_backoff=1,
                       reset_backoff_base_ns=round(c["base"] * 1e9),
                       reset_backoff_cap_ns=round(c["cap"] * 1e9),
                       reset_backoff_multiplier=c["multiplier"],
                       reset_backoff_jitter=_core.jitter_parse(c["jitter"]))
        on_spec, on_pred = _exc_spec("on", on)
        if isinstance(exclude, (list, set, frozenset)):
            exclude = tuple(exclude)
        ex_spec, ex_pred = _exc_spec("exclude", exclude)
        _callable("fallback", fallback)
        if on_state_change is None:
            listeners: tuple[Any, ...] = ()
        elif callable(on_state_change):
            listeners = (on_state_change,)
        elif isinstance(on_state_change, (list, tuple)):
            listeners = tuple(on_state_change)
            for fn in listeners:
                _callable("on_state_change", fn)
        else:
            raise TypeError(f"on_state_change must be a callable or a list of them, got "
                            f"{on_state_change!r}")
        self._listeners = listeners
        self._fallback = fallback
        self._shared = region
        self._configure(name, cfg, on_spec, on_pred,
                        ex_spec if (ex_pred or ex_spec) else None, ex_pred, fallback,
                        region)
        _breakers[name] = self

    @property
    def shared(self) -> Optional[Region]:
        """The Region holding this breaker's state, or None (private)."""
        return self._shared

    def add_listener(self, listener: Callable[[Any, str, str], Any]) -> None:
        """Add an on_state_change listener: listener(breaker, old, new)."""
        _callable("listener", listener)
        self._listeners = self._listeners + (listener,)

    def __call__(self, fn: Callable[P, R]) -> Guarded[P, R]:
        """@breaker: guard a function, method or async function."""
        return _decorate(fn, None, self, None)  # type: ignore[no-any-return]

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> Literal[False]:
        self._exit(ev)
        return False

    async def call_async(self, fn: Callable[P, Awaitable[R]], /, *args: P.args,
                         **kwargs: P.kwargs) -> R:
        """await breaker.call_async(async_fn, ...): call() for coroutines
        (call() itself would count the creation of the coroutine, not its
        outcome)."""
        if not callable(fn):  # misuse, not a failed call: the breaker is untouched
            raise TypeError(f"call_async() needs a callable as fn, got {fn!r}")
        result: R = await _aio.run_once(self._runner(), fn, args, kwargs, None)
        return result

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state}>"


# --------------------------------------------------------------- retry


class RetryPolicy(_core.Retry):
    """One retry policy with its own metrics: what @retry builds for each
    decorated function.  policy.call(fn, ...) runs fn under it; begin()
    gives a RetryCall to drive one call by hand."""

    def __init__(self, attempts: int = _D["attempts"], backoff: Optional[Backoff] = None,
                 deadline: Optional[float] = None, *, name: Optional[str] = None,
                 on: Any = Exception, result: Optional[Callable[[Any], Any]] = None,
                 budget: Optional[RetryBudget] = None,
                 breaker: Optional[CircuitBreaker] = None,
                 before_sleep: Optional[Callable[[Any], Any]] = None,
                 retry_after: Optional[Callable[[Any], Any]] = None,
                 sleep: Optional[Callable[[float], Any]] = None) -> None:
        n = _int("attempts", attempts, 1, 2**32 - 1)
        if backoff is None:
            backoff = _default_backoff()
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff or None, got {backoff!r}")
        deadline_ns = _opt_seconds("deadline", deadline, positive=True)
        _check_name(name)
        on_spec, on_pred = _exc_spec("on", on)
        # CircuitOpenError is retried only when `on` names it (or a base of
        # it below Exception) or is a predicate.
        retry_open = on_pred or any(issubclass(t, ButtressError) for t in on_spec)
        if result is not None:
            _callable("result", result)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        _callable("before_sleep", before_sleep)
        _callable("retry_after", retry_after)
        _callable("sleep", sleep)
        c = backoff._config
        self._configure(n, -1 if deadline_ns is None else deadline_ns,
                        round(c["base"] * 1e9), round(c["cap"] * 1e9), c["multiplier"],
                        _core.jitter_parse(c["jitter"]), backoff.seed, budget, breaker,
                        on_spec, on_pred, retry_open, result, before_sleep, retry_after,
                        sleep)
        self.name = name
        self.backoff = backoff
        if name is not None:
            _retries[name] = self
        if backoff.seed is None:
            _seeded.add(self)

    def __repr__(self) -> str:
        return (f"RetryPolicy(attempts={self.attempts!r}, backoff={self.backoff!r}, "
                f"deadline={self.deadline!r}, name={self.name!r})")


_DEFAULT_BACKOFF: Optional[Backoff] = None


def _default_backoff() -> Backoff:
    global _DEFAULT_BACKOFF
    if _DEFAULT_BACKOFF is None:
        _DEFAULT_BACKOFF = Backoff()
    return _DEFAULT_BACKOFF


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))


def _decorate(fn: Any, policy: Optional[RetryPolicy], breaker: Optional[CircuitBreaker],
              timeout: Optional[float]) -> Any:
    if isinstance(fn, (classmethod, staticmethod)):
        # Wrap the function inside and put the descriptor back around it.
        return type(fn)(_decorate(fn.__func__, policy, breaker, timeout))
    if not callable(fn):
        raise TypeError(f"buttress decorators apply to callables, got {fn!r}")
    if _is_async(fn):
        return _aio.wrap(fn, policy, breaker, timeout)
    if timeout is not None:
        raise TypeError(
            f"timeout={timeout!r} works on async def functions only: Python cannot stop a "
            f"running thread.  For {getattr(fn, '__qualname__', fn)!r} use deadline= "
            "and pass buttress.remaining() as the timeout of the call inside.")
    w = _core.Wrapper(fn, policy, breaker)
    functools.update_wrapper(w, fn)
    return w


def retry(attempts: int = _D["attempts"], backoff: Optional[Backoff] = None,
          deadline: Optional[float] = None, name: Optional[str] = None,
          on: Any = Exception, result: Optional[Callable[[Any], Any]] = None,
          budget: Optional[RetryBudget] = None, breaker: Optional[CircuitBreaker] = None,
          before_sleep: Optional[Callable[[Any], Any]] = None,
          retry_after: Optional[Callable[[Any], Any]] = None,
          timeout: Optional[float] = None,
          sleep: Optional[Callable[[float], Any]] = None) -> Decorator:
    """Retry a function (sync or async) with capped exponential backoff.

    Exhausted retries re-raise the last exception itself; retries driven by
    `result` that run out raise RetryExhausted.  BaseExceptions that are not
    Exception are never retried.  See docs/python.md for every parameter.
    """
    kw = dict(attempts=attempts, backoff=backoff, deadline=deadline, name=name, on=on,
              result=result, budget=budget, breaker=breaker, before_sleep=before_sleep,
              retry_after=retry_after, sleep=sleep)
    RetryPolicy(**kw)  # check everything now, at construction
    if timeout is not None:
        _seconds("timeout", timeout, positive=True)

    def decorator(fn: Any) -> Any:
        # Each decorated function gets its own policy, hence its own metrics.
        return _decorate(fn, RetryPolicy(**kw), None, timeout)

    return decorator


# --------------------------------------------------------------- block form


class Attempt:
    """One attempt of a retrying() loop; use it as `with attempt:`."""

    __slots__ = ("_run", "number", "_delay", "_entered")

    def __init__(self, run: Any, number: int) -> None:
        self._run = run
        self.number = number
        self._delay: Optional[float] = None
        self._entered = False

    def __enter__(self) -> "Attempt":
        self._entered = True
        run = self._run
        while True:
            try:
                run.admit()
                return self
            except Exception as exc:
                # A fused breaker rejected the attempt: it ends the call (or
                # is retried, when `on` says so) as in the wrappers, so the
                # policy counts it.  The body has not run: retry it here.
                delay = run.failed(exc)
                if delay is None:
                    raise
                if delay > 0:
                    (run.sleep or _core._get_sleep_hook() or time.sleep)(delay)

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        if ev is None:
            self._delay = self._run.done()  # no value: `result=` is not asked
            return False
        self._delay = self._run.failed(ev)
        return self._delay is not None  # swallow only what will be retried


def _sync_sleep(policy: RetryPolicy, delay: float) -> None:
    fn = policy.sleep or _core._get_sleep_hook() or time.sleep
    fn(delay)


def retrying(attempts: int = _D["attempts"], backoff: Optional[Backoff] = None,
             deadline: Optional[float] = None, *, policy: Optional[RetryPolicy] = None,
             **kw: Any) -> Iterator[Attempt]:
    """The block form:

        for attempt in buttress.retrying(attempts=5, deadline=10.0):
            with attempt:
                do_work()

    Takes retry()'s arguments (timeout excepted), or policy= to share one
    RetryPolicy (and its metrics) between loops.
    """
    if policy is None:
        if kw.get("result") is not None:
            # `with attempt:` has no value to show the predicate
            raise TypeError("result= needs a return value: use @buttress.retry(result=...) "
                            "or policy.call(fn); in retrying(), raise an exception to retry")
        policy = RetryPolicy(attempts, backoff, deadline, **kw)
    elif not isinstance(policy, RetryPolicy):
        raise TypeError(f"policy must be a RetryPolicy, got {policy!r}")
    return _iterate(policy)


def _iterate(policy: RetryPolicy) -> Iterator[Attempt]:
    run = policy.begin()
    try:
        n = 0
        while True:
            n += 1
            a = Attempt(run, n)
            yield a
            if not a._entered:
                raise RuntimeError("each attempt of retrying() must be used as `with attempt:`")
            if a._delay is None:
                return
            if a._delay > 0:
                _sync_sleep(policy, a._delay)
    finally:
        run.close()


# --------------------------------------------------------------- testing


class FakeClock:
    """A clock for tests: starts at `start` seconds, moves only when told
    (advance) or when buttress sleeps under testing(clock=True)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now_ns = round(start * 1e9)

    def __call__(self) -> float:
        return self.now_ns / 1e9

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)

    def set(self, seconds: float) -> None:
        self.now_ns = round(seconds * 1e9)

    def _ns(self) -> int:
        return self.now_ns


class Testing:
    """What testing() yields: the delays buttress slept (or would have)."""

    def __init__(self, really_sleep: bool, clock: Optional[FakeClock]) -> None:
        self.delays: list[float] = []
        self.clock = clock
        self._really_sleep = really_sleep

    @property
    def sleeps(self) -> int:
        return len(self.delays)

    def _sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        if self._really_sleep:
            time.sleep(seconds)


@contextlib.contextmanager
def testing(sleep: bool = False, clock: Any = None) -> Iterator[Testing]:
    """For test suites: with sleep=False no real sleeping, delays recorded
    in .delays.  clock=True installs a FakeClock (advanced by each recorded
    sleep); clock=callable returning seconds replaces the monotonic clock.
    Policies given their own sleep= keep it."""
    from . import _aio

    fake: Optional[FakeClock]
    if clock is None or clock is False:
        fake, hook = None, None
    elif clock is True:
        fake = FakeClock()
        hook = fake._ns
    elif isinstance(clock, FakeClock):
        fake, hook = clock, clock._ns
    elif callable(clock):
        fake = None
        hook = lambda: round(clock() * 1e9)  # noqa: E731
    else:
        raise TypeError(f"clock must be None, True, a FakeClock or a callable, got {clock!r}")
    t = Testing(bool(sleep), fake)
    prev_sleep = _core._set_sleep(t._sleep)
    prev_clock = _core._set_clock(hook) if hook is not None else None
    prev_async = _aio.set_sleep_hook(t._sleep)
    try:
        yield t
    finally:
        _core._set_sleep(prev_sleep)
        if hook is not None:
            _core._set_clock(prev_clock)
        _aio.set_sleep_hook(prev_async)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every retry inside the block by `seconds` from now (or by an
    earlier enclosing deadline); buttress.remaining() reports what is left."""
    ns = _seconds("seconds", seconds)
    token = _core._push_deadline(_core.monotonic_ns() + ns)
    try:
        yield
    finally:
        _core._pop_deadline(token)


@contextlib.contextmanager
def _deadline_at(abs_ns: int) -> Iterator[None]:
    """An enclosing deadline at an absolute time of buttress's clock (tests)."""
    token = _core._push_deadline(abs_ns)
    try:
        yield
    finally:
        _core._pop_deadline(token)


def monotonic() -> float:
    """The clock buttress uses (monotonic seconds; the fake one under testing)."""
    return float(_core.monotonic())


from . import _aio  # noqa: E402  (needs the names above)
from . import metrics  # noqa: E402
