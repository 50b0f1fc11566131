"""One test per applicable line of PITFALLS.md (#1, #5 in test_threads.py;
#7 in test_gc.py; #14, #21 also in test_signals_fork.py and test_async.py).
#9 (attaching never resets live state) is in test_region.py
(test_named_region_attach_sees_live_state_and_never_resets_it); #10 (one
breaker for every worker process) there too, and for nginx workers in
tests/nginx; #20 is OpenResty only."""
import asyncio
import threading
import time

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, CircuitOpenError


class Boom(Exception):
    pass


def test_pitfall_2_half_open_trial_that_never_reports_expires():
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, trial_timeout=0.5)
        br.record(br.allow(), False)
        t.clock.advance(1.0)
        lost = br.allow()  # a trial that hangs forever
        with pytest.raises(CircuitOpenError) as info:
            br.allow()
        assert info.value.retry_after == pytest.approx(0.5)
        t.clock.advance(0.5)
        assert br.call(lambda: 1) == 1  # a new trial after the permit expired
        assert br.state == "closed"
        assert br.record(lost, True) is False  # the lost one is stale


def test_pitfall_3_late_result_from_an_earlier_state_is_stale():
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
        slow = br.allow()  # admitted while closed
        br.record(br.allow(), False)  # opens
        t.clock.advance(1.0)
        trial = br.allow()  # half-open
        assert br.record(slow, True) is False  # must not close the breaker
        assert br.state == "half_open"
        assert br.record(trial, True) is True
        assert br.state == "closed"


def test_pitfall_4_excluded_exceptions_are_neutral():
    br = CircuitBreaker(failure_threshold=3, exclude=KeyError)

    def fail(exc):
        def fn():
            raise exc()
        return fn

    for exc in (Boom, Boom, KeyError, KeyError, Boom):
        with pytest.raises(exc):
            br.call(fail(exc))
    assert br.state == "open"  # the KeyErrors did not reset the streak
    assert br.metrics()["excluded"] == 2
    # also with a predicate
    br2 = CircuitBreaker(failure_threshold=2, exclude=lambda e: "business" in str(e))
    for msg in ("down", "business rule", "down"):
        with pytest.raises(Boom):
            br2.call(fail(lambda: Boom(msg)))
    assert br2.state == "open"


def test_pitfall_6_with_breaker_rejects_while_open_like_the_decorator():
    br = CircuitBreaker(failure_threshold=1)
    with pytest.raises(Boom):
        with br:
            raise Boom()
    entered = []
    with pytest.raises(CircuitOpenError):
        with br:
            entered.append(1)
    assert entered == [] and br.state == "open"
    # any success does not close it: only a trial after the open period
    assert br.metrics()["rejected"] == 1


def test_pitfall_8_listener_errors_isolated_and_reentry_works(caplog):
    order = []

    def first(b, old, new):
        order.append("first")
        raise ValueError("bad listener")

    def second(b, old, new):
        order.append(("second", b.state))
        b.metrics()
        try:
            b.call(lambda: None)  # re-entry from a listener: no deadlock
        except CircuitOpenError:
            order.append("rejected inside")

    br = CircuitBreaker(failure_threshold=1, on_state_change=[first, second])
    with pytest.raises(Boom):
        br.call(lambda: (_ for _ in ()).throw(Boom()))
    assert order == ["first", ("second", "open"), "rejected inside"]
    assert br.state == "open"
    assert "bad listener" in caplog.text


def test_pitfall_11_delays_never_overflow():
    b = Backoff(base=0.1, multiplier=2.0, cap=10.0, jitter="none")
    for n in (0, 1, 62, 63, 64, 1023, 1024, 1025, 2**31, 2**32 - 1):
        d = b.ceiling(n)
        assert 0 <= d <= 10.0, (n, d)
    assert b.ceiling(1024) == 10.0 and b.ceiling(2**32 - 1) == 10.0
    huge = Backoff(base=1.0, multiplier=1e300, cap=100.0, jitter="none")
    assert huge.ceiling(5) == 100.0
    for jitter in ("full", "equal", "decorrelated"):
        ds = Backoff(base=0.1, multiplier=10.0, cap=5.0, jitter=jitter, seed=1).delays(2000)
        assert all(0 <= d <= 5.0 for d in ds), jitter
    with pytest.raises(ValueError):
        b.ceiling(2**32)


def test_pitfall_12_jitter_applied_after_the_cap():
    ds = Backoff(base=1.0, multiplier=2.0, cap=4.0, jitter="full", seed=3).delays(500)
    saturated = ds[10:]
    assert len(set(saturated)) > 100  # never the constant cap
    assert min(saturated) < 1.0 and max(saturated) > 3.0
    eq = Backoff(base=1.0, multiplier=2.0, cap=4.0, jitter="equal", seed=3).delays(500)[10:]
    assert all(2.0 <= d <= 4.0 for d in eq) and len(set(eq)) > 100


def test_pitfall_13_retries_are_bounded_by_default():
    calls = []

    @buttress.retry()
    def f():
        calls.append(1)
        raise Boom()

    with buttress.testing():
        with pytest.raises(Boom):
            f()
        with pytest.raises(Boom):
            for attempt in buttress.retrying():
                with attempt:
                    f.__wrapped__()
    assert len(calls) == 3 + 3


def test_pitfall_15_wall_clock_jumps_do_not_matter(monkeypatch):
    br = CircuitBreaker(failure_threshold=1, reset_timeout=30.0)
    br.record(br.allow(), False)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # clock jumps 1 h
    with pytest.raises(CircuitOpenError) as info:
        br.allow()
    # the core keeps open periods in whole milliseconds (rounded up)
    assert 29.0 < info.value.retry_after <= 30.001
    assert br.state == "open"
    a, b = buttress.monotonic(), buttress.monotonic()
    assert b >= a


def test_pitfall_16_per_call_state_stays_per_call():
    """Overlapping calls keep their own attempt counts and sequences."""
    go = threading.Event()
    results = {}

    @buttress.retry(attempts=3, backoff=Backoff(base=0.01, multiplier=1.0, jitter="none"))
    def f(name, fail_times, box):
        box.append(1)
        if name == "a" and len(box) == 1:
            go.wait(1)
        if len(box) <= fail_times:
            raise Boom(name)
        return len(box)

    def run(name, fails):
        try:
            results[name] = f(name, fails, [])
        except Boom:
            results[name] = "gave up"

    ta = threading.Thread(target=run, args=("a", 2))
    ta.start()
    run("b", 5)  # gives up after 3 attempts while "a" is mid-call
    go.set()
    ta.join()
    assert results == {"a": 3, "b": "gave up"}
    m = f.metrics()
    assert m["calls"] == 2 and m["attempts"] == 6


def test_pitfall_17_zero_delay_makes_no_sleep_call():
    sleeps = []
    fn_calls = []

    @buttress.retry(attempts=4, backoff=Backoff(base=0), sleep=sleeps.append)
    def f():
        fn_calls.append(1)
        raise Boom()

    with pytest.raises(Boom):
        f()
    assert len(fn_calls) == 4 and sleeps == []
    # async: no asyncio.sleep either
    async_sleeps = []

    async def counting_sleep(d):
        async_sleeps.append(d)

    @buttress.retry(attempts=3, backoff=Backoff(base=0), sleep=counting_sleep)
    async def g():
        raise Boom()

    with pytest.raises(Boom):
        asyncio.run(g())
    assert async_sleeps == []
    # and under testing(): nothing recorded for zero delays
    with buttress.testing() as t:
        with pytest.raises(Boom):
            buttress.retry(backoff=Backoff(base=0))(f.__wrapped__)()
    assert t.delays == []


def test_pitfall_18_budget_spent_when_the_retry_is_decided():
    budget = buttress.RetryBudget(ratio=0.0, min_per_second=0.2, window=10.0)  # 2 retries
    seen = []

    def sleep(d):
        seen.append(budget.metrics()["withdrawals"])

    @buttress.retry(attempts=5, budget=budget, sleep=sleep,
                    backoff=Backoff(base=1.0, jitter="none"))
    def f():
        raise Boom()

    with pytest.raises(Boom):
        f()
    # each retry was paid for before its sleep began
    assert seen == [1, 2]
    assert f.metrics()["giveups_budget"] == 1


def test_pitfall_19_no_sleep_past_the_deadline():
    with buttress.testing(clock=True) as t:
        @buttress.retry(attempts=10, deadline=3.5, backoff=Backoff(base=1.0, jitter="none"))
        def f():
            raise Boom()

        with pytest.raises(Boom):
            f()
    # 1 + 2 = 3 s; the next 4 s would end past 3.5 s: given up, not slept
    assert t.delays == [1.0, 2.0]
    assert t.clock() <= 3.5
    assert f.metrics()["giveups_deadline"] == 1
