"""Latency timing: every call when a rule needs the clock, otherwise a
random sample of about one call in 16, whose percentiles stay within the
error that docs/observability.md states."""
import math
import random

import buttress

SAMPLE_EVERY = 16  # bindings/python/_core.c


def rank_bounds(p, n):
    """The quantile ranks that a sample of n values puts the sample's
    p-quantile between, but for one run in about 16,000 (4 sigma)."""
    sigma = math.sqrt(p * (1 - p) / n)
    return max(0.0, p - 4 * sigma), min(1.0, p + 4 * sigma)


def exact_quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def drive(wrapper_factory, durations):
    """Runs one call per duration; each call lasts exactly that long on a
    fake clock."""
    clock = buttress.FakeClock(1000.0)
    with buttress.testing(clock=clock):
        def work(d):
            clock.advance(d)
            return d
        wrapped = wrapper_factory(work)
        for d in durations:
            wrapped(d)
        return wrapped


def lognormal_durations(n, seed):
    rng = random.Random(seed)
    # milliseconds to seconds, a long right tail like real latencies
    return [round(rng.lognormvariate(-4.0, 0.8), 6) for _ in range(n)]


def check_percentiles(latency, durations):
    n = latency["count"]
    ordered = sorted(durations)
    for key, p in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        lo_rank, hi_rank = rank_bounds(p, n)
        # the histogram's own precision: 1/64 either way
        lo = exact_quantile(ordered, lo_rank) * (1 - 1 / 64)
        hi = exact_quantile(ordered, hi_rank) * (1 + 1 / 64)
        assert lo <= latency[key] <= hi, (key, lo, latency[key], hi, n)
    assert latency["max"] <= max(durations) * (1 + 1e-9)


def test_breaker_samples_about_one_call_in_sixteen():
    durations = lognormal_durations(160_000, seed=1)
    br = buttress.CircuitBreaker("sampled")
    drive(br, durations)
    lat = br.metrics()["latency"]
    calls = len(durations)
    assert br.metrics()["calls"] == calls
    # gaps uniform on 1..31: the mean is 16, the count within a few percent
    assert calls / SAMPLE_EVERY * 0.95 <= lat["count"] <= calls / SAMPLE_EVERY * 1.05
    check_percentiles(lat, durations)


def test_retry_samples_whole_calls():
    durations = lognormal_durations(160_000, seed=2)
    wrapped = drive(buttress.retry(attempts=2), durations)
    m = wrapped.metrics()
    assert m["calls"] == len(durations)
    lat = m["latency"]
    assert len(durations) / SAMPLE_EVERY * 0.95 <= lat["count"] <= len(durations) / SAMPLE_EVERY * 1.05
    check_percentiles(lat, durations)


def test_slow_call_rule_times_every_call():
    durations = lognormal_durations(5_000, seed=3)
    br = buttress.CircuitBreaker("every", slow_call=10.0)
    drive(br, durations)
    lat = br.metrics()["latency"]
    assert lat["count"] == len(durations)
    ordered = sorted(durations)
    for key, p in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        exact = exact_quantile(ordered, p)
        assert abs(lat[key] - exact) <= exact / 64 + 1e-9, (key, lat[key], exact)


def test_time_window_and_deadline_time_every_call():
    durations = lognormal_durations(2_000, seed=4)
    br = buttress.CircuitBreaker("timed-window", window_type="time", window=60.0)
    drive(br, durations)
    assert br.metrics()["latency"]["count"] == len(durations)
    wrapped = drive(buttress.retry(attempts=2, deadline=100.0), durations)
    assert wrapped.metrics()["latency"]["count"] == len(durations)


def test_first_call_is_timed():
    br = buttress.CircuitBreaker("first")
    drive(br, [0.25])
    lat = br.metrics()["latency"]
    assert lat["count"] == 1 and abs(lat["max"] - 0.25) < 1e-6


def test_calls_per_second_counts_untimed_calls():
    """Calls/s counts every call, timed or not: 1,000 calls spread over
    10 fake seconds read as 100 a second."""
    clock = buttress.FakeClock(50.0)
    with buttress.testing(clock=clock):
        br = buttress.CircuitBreaker("rate")
        guarded = br(lambda: None)
        policy = buttress.retry(attempts=2)(lambda: None)
        br.metrics()
        policy.metrics()  # the first reads stamp the count at t = 50 s
        for _ in range(1000):
            clock.advance(0.01)
            guarded()
            policy()
        assert abs(br.metrics()["calls_per_second"] - 100.0) < 1e-6
        assert abs(policy.metrics()["calls_per_second"] - 100.0) < 1e-6
