"""buttress.metrics: every breaker and retry metric against known sequences
on a fake clock, latency quantile accuracy, the registry, the Prometheus text
(parsed by prometheus_client's own parser), the prometheus_client collector
and the OpenTelemetry instruments (read back through the SDK's in-memory
reader)."""
import gc
import math
import os
import random
import subprocess
import sys
import time
import uuid

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError
from buttress import metrics as bm


class Boom(Exception):
    pass


class Interrupted(BaseException):
    """Neither success nor failure: a cancelled call."""


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fail():
    raise Boom("boom")


# --------------------------------------------------------------- breaker


def test_every_breaker_metric_after_a_known_sequence():
    clk = buttress.FakeClock(1000.0)
    name = uniq("seq")
    with buttress.testing(clock=clk):
        br = CircuitBreaker(name, failure_threshold=3, reset_timeout=10.0, slow_call=1.0,
                            window=20, min_calls=100, exclude=KeyError)

        def slow_ok():
            clk.advance(2.0)  # timed by the breaker: slow (>= 1 s)
            return "ok"

        assert br.call(lambda: 1) == 1                  # success
        assert br.call(slow_ok) == "ok"                 # success, slow
        with pytest.raises(KeyError):                   # excluded
            br.call(lambda: {}["k"])
        with pytest.raises(Boom):                       # failure, streak 1
            br.call(fail)
        with pytest.raises(Interrupted):                # cancelled
            with br:
                raise Interrupted()
        m = br.metrics()
        assert m["consecutive_failures"] == 1
        assert (m["window_calls"], m["window_failures"], m["window_slow"]) == (3, 1, 1)
        assert m["failure_rate"] == pytest.approx(1 / 3)
        assert m["slow_rate"] == pytest.approx(1 / 3)
        assert m["state"] == "closed" and m["trips"] == 0

        ticket = br.allow()                             # admitted while closed
        br.force_open()                                 # closed>forced_open at 1002
        assert br.record(ticket, True) is False         # stale: changes nothing
        with pytest.raises(CircuitOpenError):           # rejected
            br.call(lambda: None)
        clk.advance(1.0)
        br.reset()                                      # forced_open>closed at 1003

        for _ in range(3):                              # failures 2..4: opens at 1003
            with pytest.raises(Boom):
                br.call(fail)
        m = br.metrics()
        assert m["state"] == "open" and m["trips"] == 1
        assert m["open_until"] == pytest.approx(1013.0, abs=0.0011)
        for _ in range(2):                              # rejected 2, 3
            with pytest.raises(CircuitOpenError):
                br.call(lambda: None)
        clk.advance(10.0)
        assert br.call(lambda: "trial") == "trial"      # open>half_open>closed at 1013
        clk.advance(5.0)
        br.disable()                                    # closed>disabled at 1018
        with pytest.raises(Boom):                       # counted, never opens
            br.call(fail)
        br.reset()                                      # disabled>closed at 1018

    m = br.metrics()
    assert m["name"] == name and m["state"] == "closed"
    assert m["successes"] == 3          # 1, slow_ok, the trial
    assert m["failures"] == 5           # 1 + 3 + 1 while disabled
    assert m["excluded"] == 1
    assert m["cancelled"] == 1
    assert m["stale"] == 1
    assert m["rejected"] == 3
    assert m["slow"] == 1
    assert m["calls"] == 3 + 5 + 1 + 1 + 1  # successes+failures+excluded+cancelled+stale
    assert m["trips"] == 0              # successive openings: none since it closed
    assert m["consecutive_failures"] == 0
    assert m["open_until"] is None
    # the window is cleared when the breaker closes (reset)
    assert (m["window_calls"], m["window_failures"], m["window_slow"]) == (0, 0, 0)
    assert m["failure_rate"] == 0.0 and m["slow_rate"] == 0.0
    expected = {"closed>forced_open": 1, "forced_open>closed": 1, "closed>open": 1,
                "open>half_open": 1, "half_open>closed": 1, "closed>disabled": 1,
                "disabled>closed": 1}
    assert {k: v for k, v in m["transitions"].items() if v} == expected
    assert set(m["transitions"]) == set(m["last_transition"])
    when = {k: v for k, v in m["last_transition"].items() if v is not None}
    assert when == pytest.approx({"closed>forced_open": 1002.0, "forced_open>closed": 1003.0,
                                  "closed>open": 1003.0, "open>half_open": 1013.0,
                                  "half_open>closed": 1013.0, "closed>disabled": 1018.0,
                                  "disabled>closed": 1018.0})
    lat = m["latency"]
    assert lat["count"] >= 1 and lat["max"] == pytest.approx(2.0, rel=0.02)


def test_transitions_count_each_edge_and_keep_the_time_of_the_last():
    clk = buttress.FakeClock(50.0)
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("edges"), failure_threshold=1, reset_timeout=5.0)
        for _ in range(3):  # closed>open, open>half_open, half_open>open, ...
            with pytest.raises(Boom):
                br.call(fail)
            clk.advance(5.0)
        assert br.call(lambda: 1) == 1  # open>half_open>closed
        t_close = clk()
    m = br.metrics()
    tr = {k: v for k, v in m["transitions"].items() if v}
    assert tr == {"closed>open": 1, "open>half_open": 3, "half_open>open": 2,
                  "half_open>closed": 1}
    last = m["last_transition"]
    assert last["closed>open"] == pytest.approx(50.0)
    assert last["half_open>open"] == pytest.approx(60.0)   # the second reopening
    assert last["open>half_open"] == pytest.approx(t_close)
    assert last["half_open>closed"] == pytest.approx(t_close)
    assert last["open>closed"] is None
    assert m["trips"] == 0  # closed again


def test_trips_count_successive_openings_until_the_breaker_closes():
    clk = buttress.FakeClock()
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("trips"), failure_threshold=1, reset_timeout=1.0)
        for n in (1, 2, 3):
            with pytest.raises(Boom):
                br.call(fail)
            assert br.metrics()["trips"] == n
            clk.advance(1.0)
        br.call(lambda: None)
        assert br.metrics()["trips"] == 0


def test_failure_and_slow_rates_over_a_count_window():
    clk = buttress.FakeClock()
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("rates"), failure_threshold=0, slow_call=1.0, window=4)

        def call(ok, seconds):
            def fn():
                clk.advance(seconds)
                if not ok:
                    raise Boom()
            if ok:
                br.call(fn)
            else:
                with pytest.raises(Boom):
                    br.call(fn)

        # S F slowS F S slowF: the last four are slowS F S slowF
        for ok, s in [(1, 0), (0, 0), (1, 3), (0, 0), (1, 0), (0, 2)]:
            call(ok, s)
    m = br.metrics()
    assert (m["window_calls"], m["window_failures"], m["window_slow"]) == (4, 2, 2)
    assert m["failure_rate"] == 0.5 and m["slow_rate"] == 0.5
    assert (m["failures"], m["slow"], m["successes"]) == (3, 2, 3)
    assert m["state"] == "closed"  # no rule asked to open it


def test_failure_rate_over_a_time_window_forgets_old_calls():
    clk = buttress.FakeClock()
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("twin"), failure_threshold=0, window=10.0,
                            window_type="time")
        for _ in range(3):
            with pytest.raises(Boom):
                br.call(fail)
        br.call(lambda: None)
        m = br.metrics()
        assert (m["window_calls"], m["window_failures"]) == (4, 3)
        assert m["failure_rate"] == 0.75
        clk.advance(25.0)  # two whole windows later
        br.call(lambda: None)
        m = br.metrics()
        assert (m["window_calls"], m["window_failures"]) == (1, 0)
        assert m["failure_rate"] == 0.0
        assert m["failures"] == 3  # lifetime counters keep everything


def test_calls_per_second_is_reported():
    clk = buttress.FakeClock(10.0)
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("cps"), slow_call=5.0)
        for _ in range(20):
            br.call(lambda: clk.advance(0.1))
        m = br.metrics()
    assert "calls_per_second" in m, "the core's calls-per-second field is missing"
    assert m["calls_per_second"] >= 0.0
    assert math.isfinite(m["calls_per_second"])


def exact_quantile(sorted_values, q):
    """Nearest rank: the smallest value with at least q of the values <= it."""
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]


def test_latency_quantiles_within_2_percent_of_the_exact_ones():
    rng = random.Random(20240607)
    # A long-tailed mix: most calls fast, some slow, a few very slow.
    values = [rng.lognormvariate(math.log(0.02), 0.6) for _ in range(3000)]
    values += [rng.uniform(0.2, 1.5) for _ in range(300)]
    values += [rng.uniform(2.0, 8.0) for _ in range(40)]
    rng.shuffle(values)
    values = [round(v * 1e9) / 1e9 for v in values]  # what a ns clock can time
    clk = buttress.FakeClock(5.0)
    with buttress.testing(clock=clk):
        # slow_call: a rule that needs durations, so every call is timed
        br = CircuitBreaker(uniq("lat"), slow_call=100.0, failure_threshold=0)
        for v in values:
            br.call(clk.advance, v)
        lat = br.metrics()["latency"]
    values.sort()
    assert lat["count"] == len(values)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = exact_quantile(values, q)
        assert abs(lat[key] - exact) <= 0.02 * exact, (key, lat[key], exact)
    assert lat["max"] == pytest.approx(values[-1], abs=1e-9)
    assert lat["mean"] == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_latency_recorded_from_explicit_durations():
    br = CircuitBreaker(uniq("rec"), slow_call=100.0)
    durations = [0.001 * (i + 1) for i in range(1000)]  # 1 ms .. 1 s, uniform
    for d in durations:
        t = br.allow()
        br.record(t, True, duration=d)
    lat = br.metrics()["latency"]
    assert lat["count"] == 1000
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = exact_quantile(durations, q)
        assert abs(lat[key] - exact) <= 0.02 * exact


# --------------------------------------------------------------- retry


def test_retry_metrics_and_give_ups_by_reason():
    name = uniq("r")
    with buttress.testing(clock=True):
        calls = {"n": 0}

        @buttress.retry(attempts=3, name=name, backoff=buttress.Backoff(base=0.1, jitter="none"),
                        on=Boom)
        def flaky(x):
            calls["n"] += 1
            if x == "bad":
                raise Boom()
            if x == "fatal":
                raise ValueError()
            if x == "once" and calls["n"] % 2 == 1:
                raise Boom()
            return x

        for _ in range(2):                           # 2 calls x 3 attempts: give up
            with pytest.raises(Boom):
                flaky("bad")
        calls["n"] = 0
        assert flaky("once") == "once"               # 1 retry then success
        assert flaky("ok") == "ok"
        with pytest.raises(ValueError):              # not retried: a failure
            flaky("fatal")

        @buttress.retry(attempts=10, deadline=1.0, name=name + "-dl",
                        backoff=buttress.Backoff(base=0.6, multiplier=2, jitter="none"))
        def late():
            raise Boom()

        with pytest.raises(Boom):  # t=0 fails, sleeps 0.6; 0.6 + 1.2 >= 1.0: give up
            late()

        budget = buttress.RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)

        @buttress.retry(attempts=10, budget=budget, name=name + "-bud",
                        backoff=buttress.Backoff(base=0))
        def spent():
            raise Boom()

        with pytest.raises(Boom):  # 0.1/s x 10 s = one retry, then the budget
            spent()

    m = flaky.metrics()
    assert m["name"] == name
    assert m["calls"] == 5
    assert m["attempts"] == 3 + 3 + 2 + 1 + 1
    assert m["retries"] == 2 + 2 + 1
    assert m["successes"] == 2
    assert m["failures"] == 1
    assert (m["giveups_attempts"], m["giveups_deadline"], m["giveups_budget"]) == (2, 0, 0)
    d = late.metrics()
    assert (d["calls"], d["attempts"], d["retries"]) == (1, 2, 1)
    assert (d["giveups_attempts"], d["giveups_deadline"], d["giveups_budget"]) == (0, 1, 0)
    b = spent.metrics()
    assert (b["calls"], b["attempts"], b["retries"]) == (1, 2, 1)
    assert (b["giveups_attempts"], b["giveups_deadline"], b["giveups_budget"]) == (0, 0, 1)
    snap = bm.snapshot()["retries"]
    assert snap[name]["giveups_attempts"] == 2
    assert snap[name + "-dl"]["giveups_deadline"] == 1
    assert snap[name + "-bud"]["giveups_budget"] == 1


def test_every_finished_call_counts_once():
    clk = buttress.FakeClock()
    name = uniq("once")
    with buttress.testing(clock=clk):
        @buttress.retry(attempts=2, name=name, backoff=buttress.Backoff(base=0.1), on=Boom)
        def f(x):
            if x == "boom":
                raise Boom()
            if x == "type":
                raise TypeError()
            if x == "interrupt":
                raise KeyboardInterrupt()
            return x

        f("ok")
        with pytest.raises(Boom):
            f("boom")
        with pytest.raises(TypeError):  # not retried: a failure
            f("type")
        with buttress.deadline(1.0):
            clk.advance(2.0)
            with pytest.raises(buttress.DeadlineExceeded):  # before the first attempt
                f("ok")
        with pytest.raises(KeyboardInterrupt):
            f("interrupt")
    m = f.metrics()
    assert m["calls"] == 5
    assert (m["successes"], m["failures"]) == (1, 1)
    assert (m["giveups_attempts"], m["giveups_deadline"], m["giveups_budget"]) == (1, 1, 0)
    # the interrupted call counts in calls only
    assert m["calls"] == m["successes"] + m["failures"] + m["giveups_attempts"] + \
        m["giveups_deadline"] + m["giveups_budget"] + 1


def test_exporters_are_optional_dependencies():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "setup.py")) as fh:
        setup = fh.read()
    assert "install_requires" not in setup
    assert '"prometheus": ["prometheus_client"]' in setup
    assert '"otel": ["opentelemetry-api"]' in setup


def test_fused_retry_reports_its_breaker_too():
    bname, rname = uniq("fb"), uniq("fr")
    br = CircuitBreaker(bname, failure_threshold=10)
    with buttress.testing():
        f = buttress.retry(attempts=2, breaker=br, name=rname)(fail)
        with pytest.raises(Boom):
            f()
    snap = bm.snapshot()
    assert snap["retries"][rname]["breaker"]["failures"] == 2
    assert snap["breakers"][bname]["failures"] == 2


# --------------------------------------------------------------- registry


def test_snapshot_holds_named_objects_weakly():
    bname, rname, uname = uniq("wb"), uniq("wr"), uniq("wu")
    br = CircuitBreaker(bname)
    f = buttress.retry(name=rname)(lambda: 1)
    budget = buttress.RetryBudget(name=uname)
    unnamed = buttress.retry()(lambda: 2)
    snap = bm.snapshot()
    assert set(snap) == {"breakers", "retries", "budgets"}
    assert snap["breakers"][bname]["name"] == bname
    assert snap["retries"][rname]["name"] == rname
    assert "withdrawals" in snap["budgets"][uname]
    assert unnamed.retry not in [buttress._retries.get(n) for n in snap["retries"]]
    del br, f, budget
    gc.collect()
    snap = bm.snapshot()
    assert bname not in snap["breakers"]
    assert rname not in snap["retries"]
    assert uname not in snap["budgets"]


def test_registry_does_not_grow_with_dead_objects():
    gc.collect()
    reg = buttress._breakers
    before = len(reg._refs)
    for i in range(2000):
        CircuitBreaker(uniq(f"churn{i}"))  # dropped at once
    assert len(reg._refs) <= before + 200
    policy_reg = buttress._retries
    before = len(policy_reg._refs)
    for i in range(2000):
        buttress.retry(name=uniq(f"churn{i}"))(lambda: 1)
    assert len(policy_reg._refs) <= before + 200


def test_duplicate_names_report_the_newest_live_object():
    name = uniq("dup")
    old = CircuitBreaker(name)
    old.force_open()
    new = CircuitBreaker(name)
    assert bm.snapshot()["breakers"][name]["state"] == "closed"  # the newest
    del new
    gc.collect()
    assert bm.snapshot()["breakers"][name]["state"] == "forced_open"  # back to the old one
    # retry(): the policy built only to check the arguments never hides a live one
    rname = uniq("rdup")
    first = buttress.retry(name=rname)(lambda: 1)
    first()
    buttress.retry(name=rname)  # builds (and drops) a throwaway policy
    gc.collect()
    assert bm.snapshot()["retries"][rname]["calls"] == 1
    second = buttress.retry(name=rname)(lambda: 2)
    assert bm.snapshot()["retries"][rname]["calls"] == 0
    del second
    gc.collect()
    assert bm.snapshot()["retries"][rname]["calls"] == 1
    del first


def test_register_budgets_decorated_functions_and_other_names():
    budget = buttress.RetryBudget()
    name = uniq("budget")
    bm.register(budget, name)
    f = buttress.retry()(lambda: 1)
    fname = uniq("fn")
    bm.register(f, fname)
    f()
    g = CircuitBreaker()(lambda: 2)
    gname = uniq("g")
    bm.register(g, gname)
    snap = bm.snapshot()
    assert snap["budgets"][name]["deposits"] == 0
    assert snap["retries"][fname]["calls"] == 1
    assert gname in snap["breakers"]
    with pytest.raises(ValueError):
        bm.register(buttress.RetryBudget())  # no name of its own
    with pytest.raises(TypeError):
        bm.register(object(), "x")
    with pytest.raises(TypeError):
        bm.register(budget, 3)


# --------------------------------------------------------------- Prometheus

prom_parser = pytest.importorskip("prometheus_client.parser")

NASTY = 'we"ird\\name\nwith newline'


def parse(text):
    fams = list(prom_parser.text_string_to_metric_families(text))
    names = [f.name for f in fams]
    assert len(names) == len(set(names)), "a family appears twice"
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in fams for s in f.samples]
    assert len(series) == len(set(series)), "a series appears twice"
    return {f.name: f for f in fams}


def samples(fam, **labels):
    return [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def one(fam, suffix="", **labels):
    found = [s for s in samples(fam, **labels) if s.name == fam.name + suffix]
    assert len(found) == 1, (fam.name, suffix, labels, found)
    return found[0].value


def make_objects(clk):
    br = CircuitBreaker(NASTY, failure_threshold=2, reset_timeout=5.0, slow_call=1.0)
    for d in (0.01, 0.02, 0.03, 1.5):
        br.call(clk.advance, d)
    for _ in range(2):
        with pytest.raises(Boom):
            br.call(fail)
    with pytest.raises(CircuitOpenError):
        br.call(lambda: None)
    rname = uniq("pr")
    f = buttress.retry(attempts=2, name=rname)(fail)
    with pytest.raises(Boom):
        f()
    budget = buttress.RetryBudget(name=uniq("pb"))
    return br, f, rname, budget


def test_prometheus_text_parses_and_matches_the_snapshot():
    clk = buttress.FakeClock(100.0)
    with buttress.testing(clock=clk):
        br, f, rname, budget = make_objects(clk)
        text = bm.prometheus()
        snap = bm.snapshot()
    fams = parse(text)
    # every family has its HELP and TYPE lines
    for fam in fams.values():
        assert fam.documentation, fam.name
        assert fam.type in ("counter", "gauge", "summary"), fam.name
    m = snap["breakers"][NASTY]
    lab = {"breaker": NASTY}
    for key in ("calls", "successes", "failures", "excluded", "cancelled", "stale",
                "rejected", "slow"):
        fam = fams[f"buttress_breaker_{key}"]
        assert fam.type == "counter"
        assert one(fam, "_total", **lab) == m[key]
    assert (m["failures"], m["rejected"], m["slow"]) == (2, 1, 1)
    for key in ("trips", "consecutive_failures", "half_open_successes", "window_calls",
                "window_failures", "window_slow", "failure_rate", "slow_rate",
                "calls_per_second"):
        fam = fams[f"buttress_breaker_{key}"]
        assert fam.type == "gauge"
        assert one(fam, **lab) == pytest.approx(m[key])
    state = fams["buttress_breaker_state"]
    assert state.type == "gauge"
    got = {s.labels["state"]: s.value for s in samples(state, **lab)}
    assert got == {"closed": 0, "open": 1, "half_open": 0, "forced_open": 0, "disabled": 0}
    tr = fams["buttress_breaker_transitions"]
    assert tr.type == "counter"
    assert one(tr, "_total", breaker=NASTY, **{"from": "closed", "to": "open"}) == 1
    when = fams["buttress_breaker_last_transition_timestamp_seconds"]
    unix = one(when, breaker=NASTY, **{"from": "closed", "to": "open"})
    # opened at fake 100.04 + ..., now is the fake clock: Unix time of "just now"
    assert abs(unix - (time.time() - (clk() - m["last_transition"]["closed>open"]))) < 5
    lat = fams["buttress_breaker_latency_seconds"]
    assert lat.type == "summary"
    for q, key in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        assert one(lat, breaker=NASTY, quantile=q) == pytest.approx(m["latency"][key])
    assert one(lat, "_count", **lab) == m["latency"]["count"]
    assert one(lat, "_sum", **lab) == pytest.approx(m["latency"]["mean"] * m["latency"]["count"])
    mx = fams["buttress_breaker_latency_max_seconds"]
    assert mx.type == "gauge" and one(mx, **lab) == pytest.approx(1.5)

    r = snap["retries"][rname]
    rl = {"retry": rname}
    for key in ("calls", "attempts", "retries", "successes", "failures"):
        assert one(fams[f"buttress_retry_{key}"], "_total", **rl) == r[key]
    g = fams["buttress_retry_giveups"]
    assert g.type == "counter"
    assert {s.labels["reason"]: s.value for s in samples(g, **rl)} == {
        "attempts": 1, "deadline": 0, "budget": 0}
    if "latency" in r:
        assert one(fams["buttress_retry_latency_seconds"], "_count", **rl) == \
            r["latency"]["count"]
    bl = {"budget": budget.name}
    assert one(fams["buttress_budget_deposits"], "_total", **bl) == 0
    assert one(fams["buttress_budget_available"], **bl) == pytest.approx(
        snap["budgets"][budget.name]["available"])


def test_prometheus_text_format_details():
    text = bm.prometheus({"breakers": {NASTY: {
        "name": NASTY, "state": "half_open", "calls": 3, "failure_rate": 0.25,
        "transitions": {"closed>open": 2, "open>closed": 0},
        "last_transition": {"closed>open": None},
        "latency": {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0},
        "open_until": 12.0,                     # monotonic: not exported
        "brand_new_counter": 7,                 # unknown numeric field: a gauge
        "queue": {"count": 2, "p50": 0.5, "p99": 0.9, "max": 1.0},  # summary-like
        "notes": "text",                        # not a number: ignored
    }}})
    lines = text.splitlines()
    assert text.endswith("\n")
    assert '# TYPE buttress_breaker_calls_total counter' in lines
    assert 'buttress_breaker_calls_total{breaker="we\\"ird\\\\name\\nwith newline"} 3' in lines
    assert not any("open_until" in ln or "notes" in ln for ln in lines)
    assert not any('to="closed"' in ln for ln in lines)  # edges never taken are left out
    fams = parse(text)
    assert one(fams["buttress_breaker_brand_new_counter"], breaker=NASTY) == 7
    assert fams["buttress_breaker_brand_new_counter"].type == "gauge"
    q = fams["buttress_breaker_queue_seconds"]
    assert q.type == "summary" and one(q, breaker=NASTY, quantile="0.99") == 0.9
    lat = fams["buttress_breaker_latency_seconds"]
    assert math.isnan(one(lat, breaker=NASTY, quantile="0.5"))  # no calls timed yet
    assert one(lat, "_count", breaker=NASTY) == 0
    assert "buttress_breaker_last_transition_timestamp_seconds" not in fams
    assert bm.prometheus({"breakers": {}, "retries": {}}) == ""
    # every sample line: name{labels} value
    for ln in lines:
        if not ln.startswith("#"):
            assert ln.count("} ") >= 1 and ln.split("} ")[-1].strip()


def test_importing_buttress_imports_neither_exporter():
    code = ("import sys, buttress, buttress.metrics as m\n"
            "m.prometheus(); m.snapshot(); m.PrometheusCollector()\n"
            "bad = [k for k in sys.modules if k.startswith(('prometheus_client', 'opentelemetry'))]\n"
            "assert not bad, bad\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(buttress.__path__[0]),
                                                    env.get("PYTHONPATH", "")] if p)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr


def test_prometheus_client_collector_in_a_fresh_registry():
    pc = pytest.importorskip("prometheus_client")
    clk = buttress.FakeClock(100.0)
    with buttress.testing(clock=clk):
        br, f, rname, budget = make_objects(clk)
        registry = pc.CollectorRegistry()
        registry.register(bm.PrometheusCollector())
        text = pc.generate_latest(registry).decode()
        ours = parse(bm.prometheus())
    fams = parse(text)
    assert set(fams) == set(ours)
    for name, fam in fams.items():
        assert fam.type == ours[name].type, name
    assert one(fams["buttress_breaker_failures"], "_total", breaker=NASTY) == 2
    assert one(fams["buttress_breaker_state"], breaker=NASTY, state="open") == 1
    assert one(fams["buttress_retry_giveups"], "_total", retry=rname, reason="attempts") == 1
    lat = fams["buttress_breaker_latency_seconds"]
    assert one(lat, "_count", breaker=NASTY) == br.metrics()["latency"]["count"]
    # a snapshot function of one's own
    reg2 = pc.CollectorRegistry()
    reg2.register(bm.PrometheusCollector(lambda: {"retries": {"x": {"calls": 4}}}))
    only = parse(pc.generate_latest(reg2).decode())
    assert list(only) == ["buttress_retry_calls"]
    assert one(only["buttress_retry_calls"], "_total", retry="x") == 4


# --------------------------------------------------------------- OpenTelemetry


def test_opentelemetry_instruments_read_by_the_in_memory_reader():
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    made = bm.instrument_otel(provider)
    assert bm.instrument_otel(provider) is made  # once per provider
    clk = buttress.FakeClock(100.0)
    with buttress.testing(clock=clk):
        br, f, rname, budget = make_objects(clk)
        data = reader.get_metrics_data()
    got = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "buttress"
            for metric in sm.metrics:
                got[metric.name] = metric

    def point(name, **attrs):
        pts = [p for p in got[name].data.data_points
               if all(p.attributes.get(k) == v for k, v in attrs.items())]
        assert len(pts) == 1, (name, attrs, pts)
        return pts[0].value

    def is_counter(name):
        d = got[name].data
        return type(d).__name__ == "Sum" and d.is_monotonic

    m = br.metrics()
    assert point("buttress.breaker.trips", breaker=NASTY) == 1
    for key in ("calls", "successes", "failures", "rejected", "slow"):
        assert is_counter(f"buttress.breaker.{key}")
        assert point(f"buttress.breaker.{key}", breaker=NASTY) == m[key]
    assert type(got["buttress.breaker.state"].data).__name__ == "Gauge"
    assert point("buttress.breaker.state", breaker=NASTY, state="open") == 1
    assert point("buttress.breaker.state", breaker=NASTY, state="closed") == 0
    assert point("buttress.breaker.failure_rate", breaker=NASTY) == pytest.approx(
        m["failure_rate"])
    assert point("buttress.breaker.transitions", breaker=NASTY,
                 **{"from": "closed", "to": "open"}) == 1
    assert got["buttress.breaker.latency"].unit == "s"
    assert point("buttress.breaker.latency", breaker=NASTY, quantile="0.99") == \
        pytest.approx(m["latency"]["p99"])
    assert point("buttress.breaker.latency.max", breaker=NASTY) == pytest.approx(1.5)
    assert point("buttress.breaker.latency.count", breaker=NASTY) == m["latency"]["count"]
    assert is_counter("buttress.retry.giveups")
    assert point("buttress.retry.giveups", retry=rname, reason="attempts") == 1
    assert point("buttress.retry.retries", retry=rname) == 1
    assert point("buttress.budget.deposits", budget=budget.name) == 0
    provider.shutdown()
