"""Threads: exact counters, no lock around user code, per-entry tickets."""
import sys
import threading
import time

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError

THREADS = 8
CALLS = 100_000


def run_threads(n, target):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave threads as often as possible
    yield
    sys.setswitchinterval(old)


def test_exact_counts_8_threads_x_100k_calls(fast_switching):
    br = CircuitBreaker(failure_threshold=0)  # never opens: every outcome counted

    @br
    def guarded(i):
        if i % 10 == 0:
            raise KeyError(i)
        return i

    @buttress.retry(attempts=1)
    def retried(i):
        return i

    def worker(_):
        for i in range(CALLS // 2):
            try:
                guarded(i)
            except KeyError:
                pass
            retried(i)

    run_threads(THREADS, worker)
    m = br.metrics()
    total = THREADS * (CALLS // 2)
    assert m["calls"] == total
    assert m["failures"] == THREADS * len(range(0, CALLS // 2, 10))
    assert m["successes"] == total - m["failures"]
    r = retried.metrics()
    assert r["calls"] == total and r["successes"] == total and r["attempts"] == total


def test_exact_counts_with_retries_from_threads(fast_switching):
    with buttress.testing():
        @buttress.retry(attempts=3)
        def always_fails():
            raise OSError()

        def worker(_):
            for _ in range(2000):
                with pytest.raises(OSError):
                    always_fails()

        run_threads(THREADS, worker)
    m = always_fails.metrics()
    assert m["calls"] == THREADS * 2000
    assert m["attempts"] == 3 * THREADS * 2000
    assert m["retries"] == 2 * THREADS * 2000
    assert m["giveups_attempts"] == THREADS * 2000


@pytest.mark.parametrize("k", [1, 3])
def test_pitfall_1_half_open_admits_exactly_k_under_races(k, fast_switching):
    """PITFALLS #1: many threads racing the open -> half-open switch."""
    rounds = 10_000 if k == 1 else 2000
    n = 4
    with buttress.testing(clock=True) as t:
        fired = []
        br = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, half_open_calls=k,
                            on_state_change=lambda b, old, new: fired.append((old, new)))
        br.record(br.allow(), False)  # open
        admitted = []
        start = threading.Barrier(n + 1)
        done = threading.Barrier(n + 1)
        lock = threading.Lock()

        def worker(_):
            for _ in range(rounds):
                start.wait()
                for _ in range(k + 1):
                    try:
                        tk = br.allow()
                    except CircuitOpenError:
                        continue
                    with lock:
                        admitted.append(tk)
                done.wait()

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for th in ts:
            th.start()
        for r in range(rounds):
            t.clock.advance(1.0)  # the open period is over
            start.wait()
            done.wait()
            assert len(admitted) == k, f"round {r}: {len(admitted)} trials admitted"
            # one trial fails: open again; the others' tickets go stale
            assert br.record(admitted[0], False) is True
            for tk in admitted[1:]:
                assert br.record(tk, True) is False
            admitted.clear()
            assert br.state == "open"
        for th in ts:
            th.join()
    m = br.metrics()
    assert m["transitions"]["open>half_open"] == rounds
    assert m["transitions"]["half_open>open"] == rounds
    # listeners fired exactly once per transition, however the threads raced
    assert fired.count(("open", "half_open")) == rounds
    assert fired.count(("half_open", "open")) == rounds
    assert len(fired) == 2 * rounds + 1


def test_pitfall_5_no_lock_held_while_user_code_runs():
    """PITFALLS #5: 8 threads x 5 ms calls must overlap, not serialize."""
    br = CircuitBreaker(failure_threshold=0)
    both = buttress.retry(breaker=br)(lambda: time.sleep(0.005))
    guarded = br(lambda: time.sleep(0.005))

    def worker(_):
        for _ in range(10):
            guarded()
            both()
            with br:
                time.sleep(0.005)

    t0 = time.perf_counter()
    run_threads(THREADS, worker)
    elapsed = time.perf_counter() - t0
    serial = THREADS * 30 * 0.005  # 1.2 s if a lock serialized the calls
    assert elapsed < serial / 2, elapsed
    assert br.metrics()["successes"] == THREADS * 30


def test_with_breaker_keeps_one_ticket_per_thread(fast_switching):
    br = CircuitBreaker(failure_threshold=0)

    def worker(i):
        for j in range(5000):
            try:
                with br:
                    if (i + j) % 3 == 0:
                        raise ValueError()
            except ValueError:
                pass

    run_threads(THREADS, worker)
    m = br.metrics()
    assert m["calls"] == THREADS * 5000
    assert m["failures"] == sum(1 for i in range(THREADS) for j in range(5000)
                                if (i + j) % 3 == 0)
    assert m["stale"] == 0


def test_nested_with_same_breaker():
    br = CircuitBreaker()
    with br:
        with br:
            pass
        with pytest.raises(KeyError):
            with br:
                raise KeyError()
    assert br.metrics()["successes"] == 2 and br.metrics()["failures"] == 1


def test_exact_counts_event_loops_in_threads():
    import asyncio

    br = CircuitBreaker(failure_threshold=0)

    @buttress.retry(attempts=2, breaker=br, backoff=buttress.Backoff(base=0))
    async def f(i):
        await asyncio.sleep(0)
        if i % 5 == 0:
            raise KeyError(i)
        return i

    def worker(_):
        async def main():
            for i in range(2000):
                try:
                    await f(i)
                except KeyError:
                    pass
        asyncio.run(main())

    run_threads(4, worker)
    m = f.metrics()
    assert m["calls"] == 8000
    assert m["giveups_attempts"] == 4 * 400
    assert m["breaker"]["failures"] == 2 * 4 * 400
    assert m["breaker"]["successes"] == 4 * 1600
