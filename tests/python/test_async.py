"""async def functions: coroutine wrappers with the same core decisions."""
import asyncio
import inspect

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError, RetryExhausted


class Boom(Exception):
    pass


def run(coro):
    return asyncio.run(coro)


def test_async_wrapper_is_a_coroutine_function_with_metadata():
    async def fetch(url: str) -> str:
        """Fetch."""
        return url

    for w in (buttress.retry()(fetch), CircuitBreaker()(fetch),
              buttress.retry(breaker=CircuitBreaker(), timeout=1.0)(fetch)):
        assert inspect.iscoroutinefunction(w)
        assert w.__name__ == "fetch" and w.__doc__ == "Fetch." and w.__wrapped__ is fetch
        assert inspect.signature(w) == inspect.signature(fetch)
        assert run(w("x")) == "x"


def test_async_retries_then_succeeds_with_asyncio_sleep():
    n = []

    @buttress.retry(attempts=3, backoff=buttress.Backoff(base=0.01, jitter="none"))
    async def f():
        n.append(1)
        if len(n) < 3:
            raise Boom()
        return "ok"

    assert run(f()) == "ok" and len(n) == 3
    assert f.metrics()["retries"] == 2


def test_async_exhausted_reraises_last_and_records_delays():
    seen = []

    @buttress.retry(attempts=3)
    async def f():
        e = Boom()
        seen.append(e)
        raise e

    with buttress.testing() as t:
        with pytest.raises(Boom) as info:
            run(f())
    assert info.value is seen[-1] and len(t.delays) == 2


def test_async_result_predicate():
    @buttress.retry(attempts=2, result=lambda v: v < 0, backoff=buttress.Backoff(base=0))
    async def f():
        return -1

    with pytest.raises(RetryExhausted) as info:
        run(f())
    assert info.value.last_result == -1 and info.value.attempts == 2


def test_async_timeout_counts_as_timeout_failure():
    calls = []

    @buttress.retry(attempts=2, timeout=0.02, backoff=buttress.Backoff(base=0))
    async def slow():
        calls.append(1)
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        run(slow())
    assert len(calls) == 2


def test_async_timeout_bounded_by_deadline():
    @buttress.retry(attempts=5, timeout=10.0, deadline=0.05, backoff=buttress.Backoff(base=0))
    async def slow():
        await asyncio.sleep(10)

    loop_time = []

    async def main():
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await slow()
        loop_time.append(asyncio.get_running_loop().time() - t0)

    run(main())
    assert loop_time[0] < 1.0


def test_async_breaker_opens_and_rejects_with_fresh_errors():
    br = CircuitBreaker(failure_threshold=2)

    @br
    async def f():
        raise Boom()

    async def main():
        for _ in range(2):
            with pytest.raises(Boom):
                await f()
        errors = []
        for _ in range(3):
            try:
                await f()
            except CircuitOpenError as e:
                errors.append(e)
        return errors

    errors = run(main())
    assert len({id(e) for e in errors}) == 3 and br.state == "open"


def test_pitfall_14_cancelled_error_never_retried_and_gives_back_the_permit():
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker(failure_threshold=1, reset_timeout=1)
        br.record(br.allow(), False)
        t.clock.advance(1)
        calls = []

        @buttress.retry(attempts=5, breaker=br)
        async def trial():
            calls.append(1)
            await asyncio.sleep(10)

        async def main():
            task = asyncio.ensure_future(trial())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(main())
        assert calls == [1]
        assert br.state == "half_open"
        m = br.metrics()
        assert m["cancelled"] == 1 and m["failures"] == 1
        assert br.call(lambda: 1) == 1  # the permit came back
        assert br.state == "closed"


def test_cancel_during_backoff_sleep_is_not_retried():
    calls = []

    @buttress.retry(attempts=3, backoff=buttress.Backoff(base=30, cap=30, jitter="none"))
    async def f():
        calls.append(1)
        raise Boom()

    async def main():
        task = asyncio.ensure_future(f())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert calls == [1]


def test_async_with_breaker_one_ticket_per_task():
    br = CircuitBreaker(failure_threshold=0)

    async def worker(i):
        for j in range(50):
            try:
                async with br:
                    await asyncio.sleep(0)
                    if (i + j) % 4 == 0:
                        raise ValueError()
            except ValueError:
                pass

    async def main():
        await asyncio.gather(*(worker(i) for i in range(20)))

    run(main())
    m = br.metrics()
    assert m["calls"] == 1000 and m["stale"] == 0
    assert m["failures"] == sum(1 for i in range(20) for j in range(50) if (i + j) % 4 == 0)


def test_async_fallback_and_call_async():
    async def fb(exc, x):
        return ("fallback", type(exc).__name__, x)

    br = CircuitBreaker(failure_threshold=1, fallback=fb)

    @br
    async def f(x):
        raise Boom()

    assert run(f(1)) == ("fallback", "Boom", 1)
    assert run(f(2)) == ("fallback", "CircuitOpenError", 2)

    async def ok():
        return 3

    br2 = CircuitBreaker()
    assert run(br2.call_async(ok)) == 3
    assert br2.metrics()["successes"] == 1


def test_async_remaining_and_nested_deadline():
    seen = []

    @buttress.retry(deadline=10.0)
    async def inner():
        seen.append(buttress.remaining())

    @buttress.retry(deadline=1.0)
    async def outer():
        await inner()

    run(outer())
    assert 0 < seen[0] <= 1.0
    assert buttress.remaining() is None


def test_async_methods():
    class C:
        @buttress.retry()
        async def m(self, x):
            return x + 1

    assert run(C().m(1)) == 2


def test_async_user_sleep_may_be_a_coroutine():
    slept = []

    async def my_sleep(d):
        slept.append(d)

    n = []

    @buttress.retry(sleep=my_sleep, backoff=buttress.Backoff(base=1, jitter="none"))
    async def f():
        n.append(1)
        if len(n) < 3:
            raise Boom()

    run(f())
    assert slept == [1.0, 2.0]


def test_c_driven_wrapper_works_with_tasks_gather_and_wait_for():
    @buttress.retry(attempts=2, backoff=buttress.Backoff(base=0))
    async def f(x, *, y=0):
        await asyncio.sleep(0)
        return x + y

    async def main():
        t = asyncio.create_task(f(1, y=1))
        results = await asyncio.gather(f(2), f(3, y=1), t)
        results.append(await asyncio.wait_for(f(5), 1.0))
        results.append(await asyncio.shield(f(6)))
        return results

    assert run(main()) == [2, 4, 2, 5, 6]
    assert run(f(7)) == 7  # asyncio.run accepts it as a coroutine


def test_c_driven_awaitable_cannot_be_awaited_twice():
    @buttress.retry()
    async def f():
        return 1

    async def main():
        aw = f()
        assert await aw == 1
        with pytest.raises(RuntimeError, match="reuse"):
            await aw

    run(main())


def test_never_awaited_call_counts_nothing_and_close_gives_back_the_permit():
    import gc
    import warnings

    br = CircuitBreaker(failure_threshold=1, reset_timeout=1e-6)

    class Tick:
        def __await__(self):
            yield "tick"

    @br
    async def f():
        await Tick()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aw = f()
        del aw
        gc.collect()
    assert br.metrics()["calls"] == 0
    # a call closed mid-flight: its permit comes back, counted as cancelled
    aw = f()
    assert aw.send(None) == "tick"  # running: suspended inside f
    aw.close()
    m = br.metrics()
    assert m["cancelled"] == 1 and m["calls"] == 1
    with pytest.raises(RuntimeError):
        aw.send(None)


def test_c_driven_wrapper_retries_with_before_sleep_and_result():
    states = []
    values = iter([None, None, 3])

    @buttress.retry(attempts=3, result=lambda v: v is None, before_sleep=states.append,
                    backoff=buttress.Backoff(base=0.5, jitter="none"))
    async def f():
        return next(values)

    with buttress.testing() as t:
        assert run(f()) == 3
    assert t.delays == [0.5, 1.0] and [s.attempt for s in states] == [1, 2]


def test_bad_arguments_to_an_async_wrapper_surface_when_awaited():
    @buttress.retry(attempts=1)
    async def f(x):
        return x

    aw = f(1, 2)  # no error yet, like a coroutine
    with pytest.raises(TypeError):
        run(aw)


def test_throw_into_a_suspended_attempt_is_an_attempt_failure():
    class Tick:
        def __await__(self):
            return (yield "tick")

    @buttress.retry(attempts=2, backoff=buttress.Backoff(base=0))
    async def f():
        return await Tick()

    aw = f()
    assert aw.send(None) == "tick"
    assert aw.throw(Boom()) == "tick"  # failed, retried at once: suspended again
    with pytest.raises(StopIteration) as info:
        aw.send(42)
    assert info.value.value == 42
    assert f.metrics()["retries"] == 1 and f.metrics()["successes"] == 1
    aw2 = f()
    aw2.send(None)
    with pytest.raises(KeyboardInterrupt):
        aw2.throw(KeyboardInterrupt)  # never retried
    assert f.metrics()["calls"] == 2
