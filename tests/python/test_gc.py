"""Reference counting and GC (PITFALLS #7, #21): wrappers in cycles are
collected; a million calls through each path leave object counts, refcounts
and traced memory flat."""
import gc
import sys
import tracemalloc
import weakref

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError

N = 1_000_000


class Boom(Exception):
    pass


def test_wrapper_in_a_reference_cycle_is_collected():
    class Service:
        pass

    s = Service()

    def fn():
        return s

    w = buttress.retry()(fn)
    s.fn = w  # cycle: s -> w -> fn -> closure -> s
    br = CircuitBreaker(fallback=lambda exc: s)
    s.br = br
    s.guarded = br(fn)
    policy_ref = weakref.ref(w.retry)
    refs = [weakref.ref(x) for x in (s, w, br, s.guarded)]
    del s, w, br, fn
    gc.collect()
    assert all(r() is None for r in refs)
    assert policy_ref() is None


def test_method_wrapper_cycle_and_listener_cycle_collected():
    class Client:
        def __init__(self):
            self.br = CircuitBreaker(on_state_change=self.changed)
            self.call = self.br(self.work)

        def changed(self, b, old, new):
            pass

        def work(self):
            return 1

    c = Client()
    assert c.call() == 1
    r = weakref.ref(c)
    del c
    gc.collect()
    assert r() is None


def test_async_wrapper_cycle_collected():
    async def fn():
        return 1

    w = buttress.retry()(fn)
    fn.me = w
    r = weakref.ref(w)
    del w, fn
    gc.collect()
    assert r() is None


def measure(path, n):
    """Run `path` n times; return the growth in object count and memory."""
    for _ in range(1000):  # warm up caches, free lists and interned values
        path()
    gc.collect()
    objects = len(gc.get_objects())
    tracemalloc.start()
    snap = tracemalloc.take_snapshot()
    for _ in range(n):
        path()
    gc.collect()
    grown = tracemalloc.take_snapshot().compare_to(snap, "filename")
    tracemalloc.stop()
    memory = sum(s.size_diff for s in grown)
    return len(gc.get_objects()) - objects, memory


def fn_ok():
    return 1


def make_paths():
    with buttress.testing():
        pass
    success = buttress.retry()(fn_ok)
    fused = buttress.retry(breaker=CircuitBreaker(failure_threshold=0))(fn_ok)
    guarded = CircuitBreaker()(fn_ok)

    def raise_boom():
        raise Boom()

    failing = buttress.retry(attempts=3, backoff=buttress.Backoff(base=0))(raise_boom)

    def fail_retry():
        try:
            failing()
        except Boom:
            pass

    br = CircuitBreaker()
    br.force_open()
    rejected = br(fn_ok)

    def reject():
        try:
            rejected()
        except CircuitOpenError:
            pass

    return {"success": success, "fused": fused, "breaker": guarded,
            "failure+retry": fail_retry, "rejection": reject}


@pytest.mark.parametrize("name", ["success", "fused", "breaker", "failure+retry",
                                  "rejection"])
def test_a_million_calls_leave_counts_flat(name):
    path = make_paths()[name]
    refs_before = (sys.getrefcount(fn_ok), sys.getrefcount(Boom),
                   sys.getrefcount(CircuitOpenError))
    n = N // 3 if name == "failure+retry" else N  # 3 attempts per call
    # tracemalloc slows every allocation: trace a tenth, count all
    for _ in range(n // 10 * 9):
        path()
    objects, memory = measure(path, n // 10)
    refs_after = (sys.getrefcount(fn_ok), sys.getrefcount(Boom),
                  sys.getrefcount(CircuitOpenError))
    assert objects <= 20, f"{objects} objects more after {name}"
    assert memory < 64 * 1024, f"{memory} bytes more after {name}"
    assert refs_after == refs_before


def test_pitfall_7_no_traceback_growth_after_a_million_rejections():
    br = CircuitBreaker()
    br.force_open()
    f = br(fn_ok)
    depth = []
    for i in range(N):
        try:
            f()
        except CircuitOpenError as e:
            if i % 250_000 == 0:
                tb, d = e.__traceback__, 0
                while tb is not None:
                    d += 1
                    tb = tb.tb_next
                depth.append(d)
                assert e.__context__ is None and e.__cause__ is None
    assert len(set(depth)) == 1, depth
    assert br.metrics()["rejected"] == N


def test_exception_from_an_attempt_keeps_its_traceback():
    def deep():
        raise Boom("here")

    w = buttress.retry(attempts=1)(deep)
    with pytest.raises(Boom) as info:
        w()
    names = [f.name for f in info.traceback]
    assert "deep" in names


def other_paths():
    """Less travelled paths, each checked for leaks with fewer calls."""
    import asyncio

    zero = buttress.Backoff(base=0)
    states = []

    def keep_last(s):
        states[:] = [s]

    with_fallback = CircuitBreaker(failure_threshold=1, fallback=lambda exc, *a: "fb")
    fb = with_fallback(lambda: 1 / 0)

    exhausted = buttress.retry(attempts=2, backoff=zero, result=lambda v: True)(fn_ok)

    def result_exhausted():
        try:
            exhausted()
        except buttress.RetryExhausted:
            pass

    hooks = buttress.retry(attempts=2, backoff=zero, before_sleep=keep_last,
                           retry_after=lambda e: 0.0)(lambda: 1 / 0)

    def with_hooks():
        try:
            hooks()
        except ZeroDivisionError:
            pass

    br = CircuitBreaker(failure_threshold=0)

    def with_block():
        try:
            with br:
                raise KeyError()
        except KeyError:
            pass

    def two_step():
        br.record(br.allow(), False)

    def bad_listener(b, old, new):
        raise RuntimeError("ignored")

    flappy = CircuitBreaker(failure_threshold=1, reset_timeout=1e-9,
                            on_state_change=bad_listener)

    def transitions():
        try:
            flappy.call(lambda: 1 / 0)
        except (ZeroDivisionError, CircuitOpenError):
            pass

    async def acall():
        return 1

    async def afail():
        raise Boom()

    aretry = buttress.retry(attempts=2, backoff=zero, breaker=CircuitBreaker(
        failure_threshold=0))(afail)
    aok = buttress.retry()(acall)

    loop = asyncio.new_event_loop()

    async def main():
        for _ in range(10):
            await aok()
            try:
                await aretry()
            except Boom:
                pass

    def async_paths():
        loop.run_until_complete(main())

    block_policy = buttress.RetryPolicy(attempts=2, backoff=zero)

    def block():
        try:
            for attempt in buttress.retrying(policy=block_policy):
                with attempt:
                    raise Boom()
        except Boom:
            pass

    return loop, {"fallback": fb, "result-exhausted": result_exhausted, "hooks": with_hooks,
                  "with": with_block, "two-step": two_step, "listener-errors": transitions,
                  "async": async_paths, "block": block}


@pytest.mark.parametrize("name", ["fallback", "result-exhausted", "hooks", "with",
                                  "two-step", "listener-errors", "async", "block"])
def test_other_paths_leave_counts_flat(name, caplog):
    import logging
    loop, paths = other_paths()
    path = paths[name]
    try:
        with caplog.at_level(logging.CRITICAL, logger="buttress"):
            n = 2000 if name == "async" else 20_000
            for _ in range(n):
                path()
            objects, memory = measure(path, n)
    finally:
        loop.close()
    assert objects <= 20, f"{objects} objects more after {name}"
    assert memory < 64 * 1024, f"{memory} bytes more after {name}"
