"""Resource checks (issue 9): ten million rejections and a million retries
leave memory flat.  (Fork after threads and signals during a backoff sleep
are in test_signals_fork.py; a million calls of each path with object and
reference counts are in test_gc.py.)

Memory is measured three ways after a warm-up (free lists, caches and
interned values filled): the process's resident set (/proc/self/statm), the
number of objects the garbage collector tracks, and the references held to
the objects every call touches.  A leak of one byte per rejection would grow
the resident set by 10 MB; the allowance for noise is 4 MB.

Under the ASan build (make asan-python sets BUTTRESS_SANITIZED) the loops are
20 times shorter, and the resident set is not compared: ASan keeps freed
memory in quarantine (up to 256 MB) on purpose, so it grows without a leak.
Object and reference counts still must not grow.
"""
import gc
import os
import sys
import time

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, CircuitOpenError, RetryBudget

SANITIZED = bool(os.environ.get("BUTTRESS_SANITIZED"))
SCALE = 20 if SANITIZED else 1
RSS_SLACK = 4 << 20


def rss():
    """Resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tracked():
    gc.collect()
    return len(gc.get_objects())


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs /proc (Linux)")


class Down(Exception):
    pass


@needs_proc
def test_ten_million_rejections_leave_memory_flat():
    """The cheapest rejection a user meets: a decorated function whose
    breaker is open raises a fresh CircuitOpenError, caught.  About 0.35 us
    each on the project's machines, so ten million take a few seconds."""
    br = CircuitBreaker("rejecting", failure_threshold=1, reset_timeout=3600)
    with pytest.raises(ZeroDivisionError):
        br.call(lambda: 1 / 0)
    assert br.state == "open"

    def ok():
        return 1

    guarded = br(ok)
    n = 10_000_000 // SCALE
    warm = 200_000 // SCALE

    def reject(k):
        for _ in range(k):
            try:
                guarded()
            except CircuitOpenError:
                pass

    reject(warm)
    refs = (sys.getrefcount(br), sys.getrefcount(ok), sys.getrefcount(CircuitOpenError))
    objects, before = tracked(), rss()
    t0 = time.perf_counter()
    reject(n - warm)
    took = time.perf_counter() - t0
    grown_rss, grown_objects = rss() - before, tracked() - objects
    assert br.metrics()["rejected"] == n
    assert (sys.getrefcount(br), sys.getrefcount(ok),
            sys.getrefcount(CircuitOpenError)) == refs
    assert grown_objects <= 50, grown_objects
    if not SANITIZED:
        assert grown_rss < RSS_SLACK, f"{grown_rss} bytes more after {n} rejections"
    print(f"{n} rejections in {took:.1f} s ({took / n * 1e9:.0f} ns each), "
          f"rss {grown_rss:+d} bytes, objects {grown_objects:+d}")


@needs_proc
def test_a_million_retries_leave_memory_flat():
    """A million retries through the fused path (retry + breaker + budget),
    every attempt failing, under buttress.testing() so nothing really
    sleeps.  testing() records each delay; the list is cleared as it goes,
    as it is the test's, not buttress's."""
    br = CircuitBreaker("never-opens", failure_threshold=0)
    budget = RetryBudget(ratio=1.0, min_per_second=1e9, window=10.0)   # never binds
    calls = [0]

    def down():
        calls[0] += 1
        raise Down()

    f = buttress.retry(attempts=5, breaker=br, budget=budget, on=Down,
                       backoff=Backoff(base=0.001, cap=0.01))(down)
    per_call = 4
    n_calls = 1_000_000 // per_call // SCALE
    warm = 20_000 // SCALE

    with buttress.testing() as t:
        def run(k):
            for i in range(k):
                try:
                    f()
                except Down:
                    pass
                if i % 4096 == 0:
                    t.delays.clear()
            t.delays.clear()

        run(warm)
        refs = (sys.getrefcount(f), sys.getrefcount(down), sys.getrefcount(Down))
        objects, before = tracked(), rss()
        t0 = time.perf_counter()
        run(n_calls - warm)
        took = time.perf_counter() - t0
        grown_rss, grown_objects = rss() - before, tracked() - objects
    m = f.metrics()
    assert m["retries"] == n_calls * per_call >= 1_000_000 // SCALE
    assert m["giveups_attempts"] == n_calls and calls[0] == n_calls * 5
    assert m["breaker"]["failures"] == n_calls * 5
    assert (sys.getrefcount(f), sys.getrefcount(down), sys.getrefcount(Down)) == refs
    assert grown_objects <= 50, grown_objects
    if not SANITIZED:
        assert grown_rss < RSS_SLACK, f"{grown_rss} bytes more after {m['retries']} retries"
    print(f"{m['retries']} retries in {took:.1f} s, rss {grown_rss:+d} bytes, "
          f"objects {grown_objects:+d}")


@needs_proc
def test_a_million_two_step_and_with_rejections_leave_memory_flat():
    """The other rejection paths: allow() and `with breaker:` on a forced-open
    breaker, and a half-open breaker out of permits (retry_after from the
    permit's expiry)."""
    forced = CircuitBreaker(failure_threshold=1)
    forced.force_open()
    half = CircuitBreaker(failure_threshold=1, reset_timeout=0.001, trial_timeout=3600)
    with pytest.raises(ZeroDivisionError):
        half.call(lambda: 1 / 0)
    time.sleep(0.01)
    trial = half.allow()           # the only permit, held for an hour
    assert half.state == "half_open"
    n = 1_000_000 // SCALE

    def reject(k):
        allow, f_allow = half.allow, forced.allow
        for i in range(k):
            try:
                if i % 3 == 0:
                    allow()
                elif i % 3 == 1:
                    f_allow()
                else:
                    with forced:
                        pass
            except CircuitOpenError:
                pass

    reject(30_000 // SCALE)
    objects, before = tracked(), rss()
    reject(n)
    grown_rss, grown_objects = rss() - before, tracked() - objects
    assert grown_objects <= 50, grown_objects
    if not SANITIZED:
        assert grown_rss < RSS_SLACK, grown_rss
    assert half.record(trial, True) is True and half.state == "closed"
    assert forced.metrics()["rejected"] + half.metrics()["rejected"] == n + 30_000 // SCALE
