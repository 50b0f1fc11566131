"""Replay every tests/scenarios/*.txt through the Python API with a fake
clock.  A disagreement with the C suite means the binding grew logic of its
own."""
import contextlib
import glob
import os

import pytest

import buttress
from conftest import ROOT

SCENARIOS = sorted(glob.glob(os.path.join(ROOT, "tests", "scenarios", "*.txt")))
MS = 1_000_000  # ns


def parse(path):
    kind, config, steps = None, {}, []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if fields[0] == "kind":
                kind = fields[1]
            elif fields[0] == "config":
                for kv in fields[1:]:
                    k, v = kv.split("=", 1)
                    config[k] = v
            else:
                assert len(fields) == 4, f"{path}:{lineno}: {line!r}"
                steps.append((lineno, int(fields[0]), fields[1], fields[2], fields[3]))
    return kind, config, steps


def num(v):
    return float(v) if "." in v else int(v)


def make_breaker(c):
    kw = {}
    for k in ("failure_threshold", "half_open_calls", "success_threshold", "min_calls"):
        if k in c:
            kw[k] = int(c[k])
    for k in ("reset_timeout", "trial_timeout", "slow_call"):
        if k in c:
            kw[k] = num(c[k]) / 1000
    for k in ("failure_rate", "slow_rate"):
        if k in c:
            kw[k] = float(c[k])
    if "window_type" in c:
        kw["window_type"] = c["window_type"]
    if "window" in c:
        w = num(c["window"])
        kw["window"] = w / 1000 if c.get("window_type") == "time" else int(w)
    if any(k.startswith("reset_backoff_") for k in c):
        bk = {"jitter": c.get("reset_backoff_jitter", "none")}
        if "reset_backoff_base" in c:
            bk["base"] = num(c["reset_backoff_base"]) / 1000
        if "reset_backoff_cap" in c:
            bk["cap"] = num(c["reset_backoff_cap"]) / 1000
        if "reset_backoff_multiplier" in c:
            bk["multiplier"] = float(c["reset_backoff_multiplier"])
        kw["reset_backoff"] = buttress.Backoff(**bk)
    return buttress.CircuitBreaker("scenario", **kw)


def make_retry(c):
    bk = {"jitter": c.get("jitter", "none")}
    for k in ("base", "cap"):
        if k in c:
            bk[k] = num(c[k]) / 1000
    if "multiplier" in c:
        bk["multiplier"] = float(c["multiplier"])
    kw = {"backoff": buttress.Backoff(**bk)}
    if "attempts" in c:
        kw["attempts"] = int(c["attempts"])
    if "deadline" in c:
        kw["deadline"] = num(c["deadline"]) / 1000
    if any(k.startswith("budget_") for k in c):
        bd = {}
        if "budget_ratio" in c:
            bd["ratio"] = float(c["budget_ratio"])
        if "budget_min_per_second" in c:
            bd["min_per_second"] = float(c["budget_min_per_second"])
        if "budget_window" in c:
            bd["window"] = num(c["budget_window"]) / 1000
        kw["budget"] = buttress.RetryBudget(**bd)
    return buttress.RetryPolicy(**kw)


def breaker_metric(br, name):
    m = br.metrics()
    if ">" in name:
        return m["transitions"][name]
    return m[name]


def run_breaker(config, steps, clock, where):
    br = make_breaker(config)
    tickets = {}
    for lineno, t, op, arg, expect in steps:
        clock.set(t / 1000)
        at = f"{where}:{lineno}"
        if op == "allow":
            try:
                tickets[arg] = br.allow()
                got = "admit"
            except buttress.CircuitOpenError as e:
                if expect.startswith("reject:"):
                    assert e.retry_after is not None, at
                    got = f"reject:{round(e.retry_after * 1000)}"
                else:
                    got = "reject"
        elif op in ("success", "failure", "excluded", "cancelled"):
            name, _, dur = arg.partition("/")
            ok = br.record(tickets.pop(name), op, duration=int(dur) / 1000 if dur else None)
            got = "ok" if ok else "stale"
        elif op == "state":
            got = br.state
        elif op in ("force_open", "disable", "reset"):
            getattr(br, op)()
            got = "ok"
        elif op == "metric":
            got = str(breaker_metric(br, arg))
        else:
            pytest.fail(f"{at}: unknown op {op!r}")
        assert got == expect, f"{at}: {t} {op} {arg}: expected {expect}, got {got}"


def run_retry(config, steps, clock, where):
    policy = make_retry(config)
    call = None
    outer_ctx = contextlib.ExitStack()
    for lineno, t, op, arg, expect in steps:
        clock.set(t / 1000)
        at = f"{where}:{lineno}"
        if op == "begin":
            if call is not None:
                call.close()
            outer_ctx.close()  # the enclosing call ends after the inner one
            outer = None
            if arg != "-":
                k, _, v = arg.partition("=")
                assert k == "outer_deadline", at
                outer = int(v) * MS
            try:
                if outer is not None:
                    outer_ctx.enter_context(buttress._deadline_at(outer))
                call = policy.begin()
                got = "ok"
            except buttress.DeadlineExceeded:
                call, got = None, "giveup:deadline"
        elif op == "fail":
            ra = None
            if arg != "-":
                k, _, v = arg.partition("=")
                assert k == "retry_after", at
                ra = int(v) / 1000
            d = call.next(retry_after=ra)
            if d is None:
                got = f"giveup:{call.reason}"
            else:
                assert call.delay_ns % MS == 0, at
                got = f"retry:{call.delay_ns // MS}"
        elif op == "success":
            call.end(True)
            got = "ok"
        elif op == "metric":
            got = str(policy.metrics()[arg])
        else:
            pytest.fail(f"{at}: unknown op {op!r}")
        assert got == expect, f"{at}: {t} {op} {arg}: expected {expect}, got {got}"
    if call is not None:
        call.close()  # restores the enclosing deadline
    outer_ctx.close()
    assert buttress.remaining() is None


@pytest.mark.parametrize("path", SCENARIOS, ids=[os.path.basename(p) for p in SCENARIOS])
def test_scenario(path):
    kind, config, steps = parse(path)
    where = os.path.relpath(path, ROOT)
    with buttress.testing(clock=buttress.FakeClock()) as t:
        if kind == "breaker":
            run_breaker(config, steps, t.clock, where)
        elif kind == "retry":
            run_retry(config, steps, t.clock, where)
        else:
            pytest.fail(f"{where}: unknown kind {kind!r}")


def test_scenarios_present():
    # The replay above must not pass vacuously.
    assert len(SCENARIOS) >= 1
