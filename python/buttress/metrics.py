"""Metrics of buttress's named objects, for dashboards and alerts.

    buttress.metrics.snapshot()     # {"breakers": {name: metrics}, "retries": ..., "budgets": ...}
    buttress.metrics.prometheus()   # the same as Prometheus text exposition (format 0.0.4)

    REGISTRY.register(buttress.metrics.PrometheusCollector())   # prometheus_client
    buttress.metrics.instrument_otel(meter_provider)             # OpenTelemetry

Which objects are reported: every CircuitBreaker (by its name), every
RetryPolicy built with name= (what @retry(name=...) builds for each function),
and whatever register() was given (a RetryBudget has no name of its own).
The registry holds them weakly: a breaker that nobody uses any more leaves the
report when it is collected.  Several live objects with one name: the one made
(or registered) last is reported; when it is collected, the newest earlier one
still alive is reported again.

prometheus_client and opentelemetry-api are optional: nothing here imports
them until PrometheusCollector.collect() or instrument_otel() runs.

The one table below (_TABLE) names every metric: its field in metrics(), its
Prometheus family, its OpenTelemetry instrument, unit and help text.  Numeric
fields that the table does not know (added to the core later) still reach
Prometheus, as gauges named after the field.
"""
from __future__ import annotations

import importlib
import math
import re
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import buttress as _b

__all__ = ["PrometheusCollector", "instrument_otel", "prometheus", "register", "snapshot"]

STATES = ("closed", "open", "half_open", "forced_open", "disabled")
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


class _Spec(NamedTuple):
    key: str   # field of the object's metrics() dict
    how: str   # counter | gauge | state | edges | edge_time | reasons | summary
    prom: str  # family name after "buttress_<kind>_" (counters: without _total)
    otel: str  # instrument name after "buttress.<kind>."
    unit: str  # OpenTelemetry unit (UCUM)
    help: str


def _c(key: str, unit: str, help: str) -> _Spec:
    return _Spec(key, "counter", key, key, unit, help)


def _g(key: str, unit: str, help: str) -> _Spec:
    return _Spec(key, "gauge", key, key, unit, help)


_LATENCY = "latency_seconds"

# kind -> (section of snapshot(), the label naming the object, its metrics)
_TABLE: dict[str, tuple[str, tuple[_Spec, ...]]] = {
    "breaker": ("breakers", (
        _c("calls", "{call}", "Calls whose outcome was recorded (successes, failures, "
                              "excluded, cancelled and stale)."),
        _c("successes", "{call}", "Calls recorded as successes."),
        _c("failures", "{call}", "Calls recorded as failures."),
        _c("excluded", "{call}", "Calls that raised an excluded exception: neither "
                                 "success nor failure."),
        _c("cancelled", "{call}", "Calls cancelled or interrupted (a BaseException that "
                                  "is not an Exception)."),
        _c("stale", "{call}", "Outcomes of calls admitted before a transition, ignored."),
        _c("rejected", "{call}", "Calls rejected without being made (CircuitOpenError)."),
        _c("slow", "{call}", "Calls that took slow_call seconds or more."),
        _Spec("state", "state", "state", "state", "1",
              "1 for the breaker's current state (label state), 0 for the others."),
        _Spec("transitions", "edges", "transitions", "transitions", "{transition}",
              "State transitions, by edge (labels from, to)."),
        _Spec("last_transition", "edge_time", "last_transition_timestamp_seconds",
              "last_transition.timestamp", "s",
              "Unix time of the last transition, by edge (labels from, to)."),
        _g("trips", "{trip}", "Successive openings since the breaker last closed (0 when "
                              "closed); all openings: transitions_total{to=\"open\"}."),
        _g("consecutive_failures", "{call}", "Current run of consecutive failures."),
        _g("half_open_successes", "{call}", "Trial successes in the current half-open period."),
        _g("window_calls", "{call}", "Calls in the window."),
        _g("window_failures", "{call}", "Failures in the window."),
        _g("window_slow", "{call}", "Slow calls in the window."),
        _g("failure_rate", "1", "Failures / calls in the window, 0 to 1."),
        _g("slow_rate", "1", "Slow calls / calls in the window, 0 to 1."),
        _g("calls_per_second", "{call}/s", "Outcomes recorded per second over about the "
                                           "last minute."),
        _Spec("latency", "summary", _LATENCY, "latency", "s",
              "Latency of the timed calls (all when a rule needs durations, else a "
              "sample of about 1 in 16), seconds."),
    )),
    "retry": ("retries", (
        _c("calls", "{call}", "Calls of the function (each may make several attempts)."),
        _c("attempts", "{attempt}", "Attempts: first attempts and retries."),
        _c("retries", "{retry}", "Retries decided (each one after a backoff delay)."),
        _c("successes", "{call}", "Calls that ended in success."),
        _c("failures", "{call}", "Calls that ended with an error that is not retried."),
        _Spec("giveups_", "reasons", "giveups", "giveups", "{call}",
              "Calls given up, by reason: attempts, deadline or budget."),
        _g("calls_per_second", "{call}/s", "Calls per second over about the last minute."),
        _Spec("latency", "summary", _LATENCY, "latency", "s",
              "Latency of whole calls, first attempt to last outcome, sleeps included "
              "(timed calls: see the docs), seconds."),
    )),
    "budget": ("budgets", (
        _c("deposits", "{call}", "Calls counted by the budget."),
        _c("withdrawals", "{retry}", "Retries the budget allowed."),
        _c("rejections", "{retry}", "Retries the budget refused."),
        _g("available", "{retry}", "Retries allowed right now."),
        _g("window_calls", "{call}", "Calls in the budget's window."),
        _g("window_retries", "{retry}", "Retries in the budget's window."),
    )),
}

# Fields that are not exported: the name is the label; open_until is on the
# monotonic clock (meaningless to another process); a fused retry's breaker
# is exported under breakers.
_SKIP = frozenset({"name", "open_until", "breaker"})

_REGISTRIES = {"breaker": _b._breakers, "retry": _b._retries, "budget": _b._budgets}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------- registry


def register(obj: Any, name: Optional[str] = None) -> None:
    """Report `obj` (a CircuitBreaker, a RetryPolicy, a function decorated by
    buttress, or a RetryBudget) under `name` (default: its own name).  Held
    weakly, like the objects registered by their constructors."""
    target = obj
    if not isinstance(obj, (_b.CircuitBreaker, _b.RetryPolicy, _b.RetryBudget)):
        # a decorated function: its retry policy, else its breaker
        target = getattr(obj, "retry", None)
        if target is None:
            target = getattr(obj, "breaker", None)
    if isinstance(target, _b.CircuitBreaker):
        kind = "breaker"
    elif isinstance(target, _b.RetryPolicy):
        kind = "retry"
    elif isinstance(target, _b.RetryBudget):
        kind = "budget"
    else:
        raise TypeError(f"register() takes a CircuitBreaker, RetryPolicy, RetryBudget or "
                        f"a function decorated by buttress, got {obj!r}")
    if name is None:
        name = getattr(target, "name", None)
        if name is None:
            raise ValueError(f"{obj!r} has no name: pass register(obj, name)")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    _REGISTRIES[kind][name] = target


def _objects(kind: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, obj in _REGISTRIES[kind].items():
        out.append((name, obj.metrics()))
    return out


def snapshot() -> dict[str, dict[str, dict[str, Any]]]:
    """{"breakers": {name: breaker.metrics()}, "retries": {name:
    policy.metrics()}, "budgets": {name: budget.metrics()}}: every live
    registered object, sorted by name."""
    return {section: dict(_objects(kind)) for kind, (section, _) in _TABLE.items()}


# --------------------------------------------------------------- families
# One intermediate form serves the text exposition and prometheus_client.


class _Family(NamedTuple):
    name: str   # counters without _total, as prometheus_client names them
    type: str   # counter | gauge | summary
    help: str
    samples: list[tuple[str, dict[str, str], float]]


_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _edge(key: str) -> Optional[tuple[str, str]]:
    a, sep, b = key.partition(">")
    return (a, b) if sep else None


def _summary_like(v: object) -> bool:
    return isinstance(v, dict) and "count" in v and any(q in v for _, q in QUANTILES)


def _families_of(kind: str, objs: list[tuple[str, dict[str, Any]]],
                 unix_offset: float) -> list[_Family]:
    _, specs = _TABLE[kind]
    base = f"buttress_{kind}_"
    fams: list[_Family] = []
    used: set[str] = set()

    def family(name: str, typ: str, help: str) -> _Family:
        f = _Family(base + name, typ, help, [])
        fams.append(f)
        used.add(name)
        return f

    def summary(key: str, prom: str, help: str) -> None:
        s = family(prom, "summary", help)
        mx = family(prom[:-len("_seconds")] + "_max_seconds" if prom.endswith("_seconds")
                    else prom + "_max", "gauge", f"Maximum of {key}.")
        for name, m in objs:
            lat: Any = m.get(key)
            if not _summary_like(lat):
                continue
            n = lat["count"]
            lab = {kind: name}
            for q, k in QUANTILES:
                if k in lat:
                    s.samples.append((s.name, {**lab, "quantile": q},
                                      float(lat[k]) if n else math.nan))
            if _is_number(lat.get("mean")):
                s.samples.append((s.name + "_sum", lab, float(lat["mean"]) * n))
            s.samples.append((s.name + "_count", lab, n))
            if _is_number(lat.get("max")):
                mx.samples.append((mx.name, lab, float(lat["max"]) if n else math.nan))

    known = {sp.key for sp in specs}
    for sp in specs:
        if sp.how in ("counter", "gauge"):
            f = family(sp.prom, sp.how, sp.help)
            sample = f.name + "_total" if sp.how == "counter" else f.name
            for name, m in objs:
                v: Any = m.get(sp.key)
                if _is_number(v):
                    f.samples.append((sample, {kind: name}, v))
        elif sp.how == "state":
            f = family(sp.prom, "gauge", sp.help)
            for name, m in objs:
                cur = m.get(sp.key)
                if isinstance(cur, str):
                    states = STATES if cur in STATES else STATES + (cur,)
                    for s in states:
                        f.samples.append((f.name, {kind: name, "state": s}, int(s == cur)))
        elif sp.how == "edges":
            f = family(sp.prom, "counter", sp.help)
            for name, m in objs:
                for key, n in sorted((m.get(sp.key) or {}).items()):
                    e = _edge(key)
                    if e and _is_number(n) and n > 0:
                        f.samples.append((f.name + "_total",
                                          {kind: name, "from": e[0], "to": e[1]}, n))
        elif sp.how == "edge_time":
            f = family(sp.prom, "gauge", sp.help)
            for name, m in objs:
                for key, t in sorted((m.get(sp.key) or {}).items()):
                    e = _edge(key)
                    if e and _is_number(t):
                        f.samples.append((f.name, {kind: name, "from": e[0], "to": e[1]},
                                          float(t) + unix_offset))
        elif sp.how == "reasons":
            f = family(sp.prom, "counter", sp.help)
            for name, m in objs:
                for key, n in m.items():
                    if key.startswith(sp.key) and _is_number(n):
                        f.samples.append((f.name + "_total",
                                          {kind: name, "reason": key[len(sp.key):]}, n))
            known.update(k for _, m in objs for k in m if k.startswith(sp.key))
        elif sp.how == "summary":
            summary(sp.key, sp.prom, sp.help)
    # Fields the table does not know yet: numbers as gauges, latency-like
    # dicts as summaries.
    extra: dict[str, str] = {}
    for _, m in objs:
        for key, v in m.items():
            if key in known or key in _SKIP or key in extra:
                continue
            if _is_number(v):
                extra[key] = "gauge"
            elif _summary_like(v):
                extra[key] = "summary"
    for key, how in extra.items():
        prom = _NAME_BAD.sub("_", key)
        if how == "summary":
            prom += "_seconds"
            if prom in used:
                continue
            summary(key, prom, f"The {key!r} field of {kind} metrics(), seconds.")
            continue
        if prom in used:
            continue
        f = family(prom, "gauge", f"The {key!r} field of {kind} metrics().")
        for name, m in objs:
            v = m.get(key)
            if _is_number(v):
                f.samples.append((f.name, {kind: name}, v))
    return [f for f in fams if f.samples]


def _unix_offset() -> float:
    """Add to a time of buttress's monotonic clock to get Unix time."""
    return time.time() - _b.monotonic()


def _families(snap: Optional[dict[str, Any]] = None) -> list[_Family]:
    if snap is None:
        snap = snapshot()
    off = _unix_offset()
    out: list[_Family] = []
    for kind, (section, _) in _TABLE.items():
        objs = sorted((snap.get(section) or {}).items())
        if objs:
            out.extend(_families_of(kind, objs, off))
    return out


# --------------------------------------------------------------- text format


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def prometheus(snap: Optional[dict[str, Any]] = None) -> str:
    """The Prometheus text exposition format (version 0.0.4) of snapshot(),
    or of `snap`, a dict shaped like it.  Serve it as
    "text/plain; version=0.0.4; charset=utf-8"."""
    lines: list[str] = []
    for f in _families(snap):
        head = f.name + "_total" if f.type == "counter" else f.name
        lines.append(f"# HELP {head} {_escape_help(f.help)}")
        lines.append(f"# TYPE {head} {f.type}")
        for sample, labels, v in f.samples:
            lab = ",".join(f'{k}="{_escape_label(str(x))}"' for k, x in labels.items())
            lines.append(f"{sample}{{{lab}}} {_value(v)}")
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------- prometheus_client


class PrometheusCollector:
    """A prometheus_client collector of every registered buttress object:

        from prometheus_client import REGISTRY
        REGISTRY.register(buttress.metrics.PrometheusCollector())

    The same families as prometheus().  prometheus_client is imported when
    collect() first runs, never by importing buttress."""

    def __init__(self, snapshot: Optional[Callable[[], dict[str, Any]]] = None) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        core = importlib.import_module("prometheus_client.core")
        snap = self._snapshot() if self._snapshot is not None else None
        for f in _families(snap):
            m = core.Metric(f.name, f.help, f.type)
            for sample, labels, v in f.samples:
                m.add_sample(sample, labels, v)
            yield m


# --------------------------------------------------------------- OpenTelemetry

_otel_lock = threading.Lock()
_otel_done: "weakref.WeakKeyDictionary[Any, list[Any]]" = weakref.WeakKeyDictionary()
_otel_global: Optional[list[Any]] = None


def _observations(kind: str, sp: _Spec, part: str, observation: Any) -> Callable[[Any], Any]:
    def callback(options: Any) -> Iterable[Any]:
        out = []
        for name, m in _objects(kind):
            lab = {kind: name}
            v: Any = m.get(sp.key)
            if sp.how in ("counter", "gauge"):
                if _is_number(v):
                    out.append(observation(v, lab))
            elif sp.how == "state":
                if isinstance(v, str):
                    for s in STATES:
                        out.append(observation(int(s == v), {**lab, "state": s}))
            elif sp.how in ("edges", "edge_time"):
                off = _unix_offset()
                for key, n in sorted((v or {}).items()):
                    e = _edge(key)
                    if e is None or not _is_number(n):
                        continue
                    attrs = {**lab, "from": e[0], "to": e[1]}
                    if sp.how == "edges" and n > 0:
                        out.append(observation(n, attrs))
                    elif sp.how == "edge_time":
                        out.append(observation(float(n) + off, attrs))
            elif sp.how == "reasons":
                for key, n in m.items():
                    if key.startswith(sp.key) and _is_number(n):
                        out.append(observation(n, {**lab, "reason": key[len(sp.key):]}))
            elif sp.how == "summary" and _summary_like(v):
                if part == "count":
                    out.append(observation(v["count"], lab))
                elif v["count"] and part == "max" and _is_number(v.get("max")):
                    out.append(observation(float(v["max"]), lab))
                elif v["count"] and part == "quantiles":
                    for q, k in QUANTILES:
                        if _is_number(v.get(k)):
                            out.append(observation(float(v[k]), {**lab, "quantile": q}))
        return out

    return callback


def instrument_otel(meter_provider: Any = None) -> list[Any]:
    """Create OpenTelemetry observable instruments (through opentelemetry-api)
    that report every registered buttress object at each collection.  Returns
    the instruments.  meter_provider: None for the global one.  Calling it
    again for the same provider returns the instruments made the first time.

    Names: buttress.<kind>.<field> (kind: breaker, retry, budget); counters
    are observable counters, the rest observable gauges; attributes name the
    object (breaker=..., retry=..., budget=...).  See docs/observability.md."""
    global _otel_global
    try:
        api = importlib.import_module("opentelemetry.metrics")
    except ImportError as e:
        raise ImportError("buttress.metrics.instrument_otel needs opentelemetry-api "
                          "(pip install 'buttress[otel]')") from e
    with _otel_lock:
        done = _otel_global if meter_provider is None else _otel_done.get(meter_provider)
        if done is not None:
            return done
        meter = api.get_meter("buttress", _b.__version__, meter_provider=meter_provider)
        obs = api.Observation
        made: list[Any] = []

        def counter(name: str, cb: Any, unit: str, desc: str) -> None:
            made.append(meter.create_observable_counter(name, callbacks=[cb], unit=unit,
                                                        description=desc))

        def gauge(name: str, cb: Any, unit: str, desc: str) -> None:
            made.append(meter.create_observable_gauge(name, callbacks=[cb], unit=unit,
                                                      description=desc))

        for kind, (_, specs) in _TABLE.items():
            for sp in specs:
                name = f"buttress.{kind}.{sp.otel}"
                if sp.how == "summary":
                    gauge(name, _observations(kind, sp, "quantiles", obs), sp.unit,
                          sp.help + " Quantiles 0.5, 0.95, 0.99 (attribute quantile).")
                    gauge(name + ".max", _observations(kind, sp, "max", obs), sp.unit,
                          "Maximum of " + sp.key + ", seconds.")
                    counter(name + ".count", _observations(kind, sp, "count", obs), "{call}",
                            "Calls timed for " + sp.key + ".")
                elif sp.how in ("counter", "edges", "reasons"):
                    counter(name, _observations(kind, sp, "", obs), sp.unit, sp.help)
                else:
                    gauge(name, _observations(kind, sp, "", obs), sp.unit, sp.help)
        if meter_provider is None:
            _otel_global = made
        else:
            _otel_done[meter_provider] = made
        return made
