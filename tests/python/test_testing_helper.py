"""buttress.testing(): no real sleeping, delays recorded, fake clocks."""
import time

import pytest

import buttress


class Boom(Exception):
    pass


def always_fails():
    raise Boom()


def test_testing_records_delays_without_sleeping():
    f = buttress.retry(attempts=4, backoff=buttress.Backoff(base=10, cap=100, jitter="none"))(
        always_fails)
    t0 = time.perf_counter()
    with buttress.testing() as t:
        with pytest.raises(Boom):
            f()
    assert time.perf_counter() - t0 < 1.0
    assert t.delays == [10.0, 20.0, 40.0] and t.sleeps == 3
    assert t.clock is None


def test_testing_restores_everything_on_exit():
    with buttress.testing(clock=True):
        assert buttress.monotonic() == 0.0
    assert buttress.monotonic() > 0.0
    assert buttress._core._get_sleep_hook() is None
    slept = []
    f = buttress.retry(attempts=2, sleep=slept.append,
                       backoff=buttress.Backoff(base=0.001, jitter="none"))(always_fails)
    with pytest.raises(Boom):
        f()
    assert slept == [0.001]


def test_fake_clock_advances_with_recorded_sleeps():
    with buttress.testing(clock=True) as t:
        f = buttress.retry(attempts=3, backoff=buttress.Backoff(base=1, jitter="none"))(
            always_fails)
        with pytest.raises(Boom):
            f()
        assert t.clock() == 3.0
        t.clock.advance(0.5)
        assert buttress.monotonic() == 3.5


def test_callable_clock_and_policy_sleep_kept():
    now = [100.0]
    own = []
    with buttress.testing(clock=lambda: now[0]) as t:
        assert buttress.monotonic() == 100.0
        f = buttress.retry(attempts=2, sleep=own.append,
                           backoff=buttress.Backoff(base=2, jitter="none"))(always_fails)
        with pytest.raises(Boom):
            f()
    assert own == [2.0] and t.delays == []  # a policy's own sleep= wins


def test_testing_with_real_sleep_still_records():
    f = buttress.retry(attempts=2, backoff=buttress.Backoff(base=0.01, jitter="none"))(
        always_fails)
    t0 = time.perf_counter()
    with buttress.testing(sleep=True) as t:
        with pytest.raises(Boom):
            f()
    assert t.delays == [0.01] and time.perf_counter() - t0 >= 0.01


def test_testing_breaker_open_period_on_fake_clock():
    with buttress.testing(clock=buttress.FakeClock(start=50)) as t:
        br = buttress.CircuitBreaker(failure_threshold=1, reset_timeout=30)
        with pytest.raises(Boom):
            br.call(always_fails)
        t.clock.advance(29.999)
        with pytest.raises(buttress.CircuitOpenError) as info:
            br.call(lambda: 1)
        assert info.value.retry_after == pytest.approx(0.001)
        t.clock.advance(0.001)
        assert br.call(lambda: 1) == 1
