"""Issue 6: per-attempt timeouts (async), deadline propagation through
buttress.remaining(), and slow calls counted by their measured duration.

Time is a FakeClock (buttress.testing(clock=...)) wherever the point is a
number; where asyncio's own timer has to fire, timeouts are short and every
assertion on elapsed time is a generous upper or a plain lower bound.
"""
import asyncio
import contextvars
import functools
import gc
import logging
import math
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, CircuitOpenError, DeadlineExceeded

NOW = Backoff(base=0)  # retry at once: no sleep between attempts


class Boom(Exception):
    pass


class Hang:
    """An attempt that never finishes by itself: it waits on an event that
    is never set, and notes how it ended (cancelled, cleaned up)."""

    def __init__(self):
        self.started = 0
        self.cancelled = 0
        self.cleaned = 0

    async def __call__(self, *_):
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            await asyncio.sleep(0)  # async cleanup still runs to the end
            self.cleaned += 1


# ------------------------------------------------------- leak detection


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


LEAK_SIGNS = ("never retrieved", "destroyed but it is pending", "was never awaited",
              "Task was destroyed")


def run_checked(main):
    """asyncio.run(main(), debug=True), then a gc pass: fail on any sign of
    a leaked task or future (asyncio's own log records, RuntimeWarning /
    ResourceWarning, unraisable exceptions)."""
    handler = _Records()
    log = logging.getLogger("asyncio")
    log.addHandler(handler)
    unraisable = []
    prev_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = asyncio.run(main(), debug=True)
            gc.collect()
            gc.collect()
    finally:
        sys.unraisablehook = prev_hook
        log.removeHandler(handler)
    leaks = [m for m in handler.messages if any(s in m for s in LEAK_SIGNS)]
    assert not leaks, leaks
    bad = [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
    assert not bad, [str(w.message) for w in bad]
    assert not unraisable, [(u.exc_value, u.object) for u in unraisable]
    return result


def only_this_task():
    """No task but the caller is left in the loop."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


def test_the_leak_checks_catch_leaks():
    # the checks above would see what they look for
    async def unretrieved():
        async def fail():
            raise Boom()

        t = asyncio.ensure_future(fail())
        await asyncio.sleep(0.01)
        del t

    with pytest.raises(AssertionError, match="never retrieved"):
        run_checked(unretrieved)

    async def pending():
        asyncio.ensure_future(asyncio.sleep(30))
        only_this_task()

    with pytest.raises(AssertionError):
        asyncio.run(pending())


# ------------------------------------------------- per-attempt timeouts


def test_timeout_cancels_each_attempt_and_retries_it_as_a_timeout_error():
    hang = Hang()
    slow = buttress.retry(attempts=3, timeout=0.05, backoff=NOW)(hang)

    async def main():
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError) as info:
            await slow()
        elapsed = asyncio.get_running_loop().time() - t0
        only_this_task()
        return info.value, elapsed

    exc, elapsed = run_checked(main)
    assert (hang.started, hang.cancelled, hang.cleaned) == (3, 3, 3)
    assert isinstance(exc.__context__, asyncio.CancelledError)  # asyncio's timeout
    assert elapsed >= 3 * 0.05 * 0.9, elapsed
    m = slow.metrics()
    assert (m["attempts"], m["retries"], m["giveups_attempts"]) == (3, 2, 1)


def test_timed_out_attempt_finishes_its_cleanup_before_the_next_one_starts():
    order = []

    @buttress.retry(attempts=2, timeout=0.05, backoff=NOW)
    async def f():
        n = len([e for e in order if e[0] == "start"]) + 1
        order.append(("start", n))
        if n == 2:
            return "second"
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)
            order.append(("cleaned", n))

    assert run_checked(f) == "second"
    assert order == [("start", 1), ("cleaned", 1), ("start", 2)]


def test_timeout_then_success_returns_the_result():
    n = []

    @buttress.retry(attempts=3, timeout=0.05, backoff=NOW)
    async def f(x):
        n.append(1)
        if len(n) == 1:
            await asyncio.sleep(30)
        return x * 2

    async def main():
        return await f(21)

    assert run_checked(main) == 42
    m = f.metrics()
    assert m["retries"] == 1 and m["successes"] == 1


def test_fast_attempts_are_not_cancelled():
    @buttress.retry(timeout=30.0)
    async def f():
        await asyncio.sleep(0)
        return "ok"

    assert run_checked(f) == "ok"
    m = f.metrics()
    assert m["retries"] == 0 and m["successes"] == 1


def test_timeout_is_classified_by_on_like_any_timeout_error():
    hang = Hang()
    # TimeoutError is not a ConnectionError: not retried, raised at once.
    f = buttress.retry(attempts=5, timeout=0.05, on=ConnectionError, backoff=NOW)(hang)
    with pytest.raises(TimeoutError):
        run_checked(f)
    assert hang.started == 1
    assert f.metrics()["failures"] == 1
    # ... and `on=TimeoutError` (or OSError, its base) retries it.
    hang2 = Hang()
    g = buttress.retry(attempts=2, timeout=0.05, on=OSError, backoff=NOW)(hang2)
    with pytest.raises(TimeoutError):
        run_checked(g)
    assert hang2.started == 2


def test_timeout_counts_as_a_failure_for_a_fused_breaker():
    hang = Hang()
    br = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    f = buttress.retry(attempts=5, timeout=0.05, breaker=br, backoff=NOW)(hang)

    async def main():
        with pytest.raises(CircuitOpenError):  # the 3rd attempt is rejected: not retried
            await f()
        only_this_task()

    run_checked(main)
    assert hang.started == 2 and hang.cancelled == 2
    m = br.metrics()
    assert m["failures"] == 2 and m["cancelled"] == 0 and m["rejected"] == 1
    assert br.state == "open"


def test_a_timed_out_half_open_trial_reopens_the_breaker():
    hang = Hang()
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker(failure_threshold=1, reset_timeout=10)
        br.record(br.allow(), False)
        assert br.state == "open"
        t.clock.advance(10)
        f = buttress.retry(attempts=3, timeout=0.05, breaker=br, backoff=NOW)(hang)
        with pytest.raises(CircuitOpenError):  # the trial timed out; then rejected
            run_checked(f)
        m = br.metrics()
        assert hang.started == 1 and br.state == "open"
        assert m["transitions"]["half_open>open"] == 1 and m["cancelled"] == 0


def test_timeout_with_a_breaker_that_excludes_timeouts():
    hang = Hang()
    br = CircuitBreaker(failure_threshold=1, exclude=TimeoutError)
    f = buttress.retry(attempts=3, timeout=0.05, breaker=br, backoff=NOW)(hang)
    with pytest.raises(TimeoutError):
        run_checked(f)
    # excluded: neutral for the breaker, and not retried (a business error)
    assert hang.started == 1
    assert br.metrics()["excluded"] == 1 and br.state == "closed"


def test_timeout_with_a_breaker_fallback_returns_the_fallback():
    hang = Hang()
    br = CircuitBreaker(failure_threshold=1, fallback=lambda exc: ("fallback", type(exc)))
    f = buttress.retry(attempts=2, timeout=0.05, breaker=br, backoff=NOW)(hang)

    async def main():
        r = await f()
        only_this_task()
        return r

    # attempt 1 times out (a failure: the breaker opens), attempt 2 is rejected
    assert run_checked(main) == ("fallback", CircuitOpenError)
    assert hang.started == 1 and br.metrics()["failures"] == 1


def test_timed_out_attempt_leaves_no_child_task_running():
    children = []

    @buttress.retry(attempts=2, timeout=0.05, backoff=NOW)
    async def f():
        # the attempt waits on tasks of its own; cancelling it cancels them
        a = asyncio.ensure_future(asyncio.sleep(30))
        b = asyncio.ensure_future(asyncio.Event().wait())
        children.extend((a, b))
        await asyncio.gather(a, b)

    async def main():
        with pytest.raises(TimeoutError):
            await f()
        await asyncio.sleep(0)
        only_this_task()

    run_checked(main)
    assert len(children) == 4
    assert all(c.done() and c.cancelled() for c in children)


def test_cancelling_the_caller_during_a_timed_attempt_is_not_a_timeout():
    hang = Hang()
    br = CircuitBreaker(failure_threshold=1)
    f = buttress.retry(attempts=5, timeout=30.0, breaker=br, backoff=NOW)(hang)

    async def main():
        task = asyncio.ensure_future(f())
        while hang.started == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        only_this_task()

    run_checked(main)
    assert hang.started == 1  # cancellation is never retried
    m = br.metrics()
    assert m["cancelled"] == 1 and m["failures"] == 0 and br.state == "closed"
    assert f.metrics()["retries"] == 0


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["c-driven", "timeout-wrapper"])
def test_wait_for_around_a_call_cancels_it_cleanly(timeout):
    hang = Hang()

    @buttress.retry(attempts=3, timeout=timeout, backoff=NOW)
    async def f():
        await hang()

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(f(), 0.05)
        only_this_task()

    run_checked(main)
    assert hang.started == 1 and hang.cancelled == 1 and hang.cleaned == 1


def test_many_concurrent_timed_calls_leave_nothing_behind():
    n = []

    @buttress.retry(attempts=2, timeout=0.05, backoff=NOW)
    async def f(i):
        n.append(i)
        if i % 2:
            await asyncio.sleep(30)
        return i

    async def main():
        results = await asyncio.gather(*(f(i) for i in range(40)), return_exceptions=True)
        only_this_task()
        return results

    results = run_checked(main)
    assert [r for r in results if not isinstance(r, BaseException)] == list(range(0, 40, 2))
    assert all(isinstance(r, TimeoutError) for r in results[1::2])
    assert len(n) == 20 + 2 * 20


def test_timeout_never_runs_an_attempt_past_the_deadline():
    hang = Hang()
    f = buttress.retry(attempts=5, timeout=30.0, deadline=0.1, backoff=NOW)(hang)

    async def main():
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await f()
        return asyncio.get_running_loop().time() - t0

    elapsed = run_checked(main)
    assert elapsed < 5.0, elapsed
    # cut at the deadline, then no time is left: one attempt, a deadline give-up
    assert hang.started == 1
    m = f.metrics()
    assert m["attempts"] == 1 and m["giveups_deadline"] == 1


def test_timeout_is_bounded_by_an_enclosing_deadline_too():
    hang = Hang()
    f = buttress.retry(attempts=5, timeout=30.0, backoff=NOW)(hang)

    async def main():
        t0 = asyncio.get_running_loop().time()
        with buttress.deadline(0.1):
            with pytest.raises(TimeoutError):
                await f()
        return asyncio.get_running_loop().time() - t0

    assert run_checked(main) < 5.0
    assert hang.started == 1 and f.metrics()["giveups_deadline"] == 1


def test_timeout_works_on_async_methods_callables_and_partials():
    class Client:
        @buttress.retry(attempts=2, timeout=0.05, backoff=NOW)
        async def get(self, x):
            return x

        @buttress.retry(attempts=2, timeout=0.05, backoff=NOW)
        @staticmethod
        async def ping():
            return "pong"

    class Callable:
        async def __call__(self, x):
            await asyncio.sleep(30)

    async def add(a, b):
        return a + b

    c = buttress.retry(attempts=2, timeout=0.05, backoff=NOW)(Callable())
    p = buttress.retry(timeout=1.0)(functools.partial(add, 1))

    async def main():
        assert await Client().get(3) == 3
        assert await Client.ping() == "pong"
        assert await p(2) == 3
        with pytest.raises(TimeoutError):
            await c(1)

    run_checked(main)


def test_timeout_outside_an_asyncio_task_fails_at_once_and_counts_nothing():
    # asyncio.timeout() needs the running task: without one the call must
    # not turn that into failed attempts, breaker failures and retries
    calls = []
    br = CircuitBreaker(failure_threshold=1)

    @buttress.retry(attempts=3, timeout=1.0, breaker=br, backoff=NOW)
    async def f():
        calls.append(1)

    aw = f()
    with pytest.raises(RuntimeError):
        aw.send(None)  # no event loop at all

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def in_a_callback():  # a loop, but no task
            aw = f()
            try:
                aw.send(None)
            except BaseException as e:
                done.set_result(e)

        loop.call_soon(in_a_callback)
        return await done

    err = asyncio.run(main())
    assert isinstance(err, RuntimeError) and "task" in str(err)
    assert calls == []
    assert f.metrics()["calls"] == 0 and f.metrics()["attempts"] == 0
    assert br.metrics()["calls"] == 0 and br.state == "closed"


# ----------------------------------------------- timeout= on sync code


class _Obj:
    def __call__(self):
        return 1


def _plain():
    return 1


@pytest.mark.parametrize("make", [
    lambda: _plain,
    lambda: (lambda: 1),
    lambda: _Obj(),
    lambda: staticmethod(_plain),
    lambda: classmethod(lambda cls: 1),
    lambda: functools.partial(_plain),
], ids=["function", "lambda", "callable object", "staticmethod", "classmethod", "partial"])
def test_timeout_on_a_plain_function_is_a_type_error_at_decoration(make):
    deco = buttress.retry(timeout=1.0)  # building the decorator is fine...
    with pytest.raises(TypeError) as info:
        deco(make())  # ... applying it to sync code is not
    msg = str(info.value)
    assert "timeout=" in msg and "deadline=" in msg and "remaining()" in msg, msg


def test_sync_timeout_error_names_the_function_and_calls_nothing():
    called = []

    def fetch_user():
        called.append(1)

    with pytest.raises(TypeError, match="fetch_user"):
        buttress.retry(timeout=0.5)(fetch_user)
    assert called == []


def test_sync_timeout_error_in_a_class_body():
    with pytest.raises(TypeError, match="deadline="):
        class C:  # noqa: F841
            @buttress.retry(timeout=1.0)
            def m(self):
                return 1


@pytest.mark.parametrize("bad,exc", [
    (0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
    ("1s", TypeError), (True, TypeError),
])
def test_bad_timeout_values_fail_when_retry_is_built(bad, exc):
    with pytest.raises(exc, match="timeout"):
        buttress.retry(timeout=bad)


# ------------------------------------------------- remaining(), sync


def test_remaining_is_none_without_a_deadline():
    seen = []

    @buttress.retry()
    def f():
        seen.append(buttress.remaining())

    assert buttress.remaining() is None
    f()
    assert seen == [None]


def test_remaining_counts_down_with_the_clock_and_never_goes_negative():
    seen = []
    with buttress.testing(clock=True) as t:
        @buttress.retry(deadline=5.0)
        def f():
            seen.append(buttress.remaining())
            t.clock.advance(1.5)
            seen.append(buttress.remaining())
            t.clock.advance(10)
            seen.append(buttress.remaining())

        f()
    assert seen == [5.0, 3.5, 0.0]


def test_nested_sync_deadlines_take_the_earlier_and_restore_the_outer():
    seen = {}
    with buttress.testing(clock=True) as t:
        @buttress.retry(deadline=2.0)
        def short():
            seen["short"] = buttress.remaining()

        @buttress.retry(deadline=100.0)
        def long():
            seen["long"] = buttress.remaining()

        @buttress.retry(deadline=10.0)
        def outer():
            t.clock.advance(1)
            short()  # inner deadline earlier: its own
            seen["after short"] = buttress.remaining()
            long()   # inner deadline later: bounded by the outer one
            seen["after long"] = buttress.remaining()

        outer()
        assert buttress.remaining() is None
    assert seen == {"short": 2.0, "after short": 9.0, "long": 9.0, "after long": 9.0}


def test_inner_retries_stop_at_the_outer_deadline():
    errors = []
    with buttress.testing(clock=True) as t:
        @buttress.retry(attempts=10, backoff=Backoff(base=1, jitter="none"))
        def inner():
            errors.append(Boom(len(errors)))
            raise errors[-1]

        @buttress.retry(attempts=1, deadline=3.5)
        def outer():
            return inner()

        with pytest.raises(Boom) as info:
            outer()
    # at t=0 and t=1 and t=3; a 4 s sleep would end past 3.5: given up
    assert t.delays == [1.0, 2.0]
    assert info.value is errors[-1] and len(errors) == 3
    m = inner.metrics()
    assert m["giveups_deadline"] == 1 and m["giveups_attempts"] == 0


def test_no_time_left_gives_up_with_the_last_error_instead_of_another_attempt():
    errors = []
    with buttress.testing(clock=True) as t:
        @buttress.retry(attempts=5, deadline=1.0, backoff=NOW)
        def f():
            t.clock.advance(0.6)  # the second attempt uses the time up
            errors.append(Boom())
            raise errors[-1]

        with pytest.raises(Boom) as info:
            f()
    assert len(errors) == 2 and info.value is errors[-1]
    assert t.delays == []  # a zero delay, and no sleep into the deadline
    m = f.metrics()
    assert m["attempts"] == 2 and m["giveups_deadline"] == 1


def test_the_last_sleep_never_ends_past_the_deadline():
    with buttress.testing(clock=True) as t:
        @buttress.retry(attempts=10, deadline=5.0,
                        backoff=Backoff(base=0.5, multiplier=2, jitter="none"))
        def f():
            raise Boom()

        with pytest.raises(Boom):
            f()
        assert sum(t.delays) < 5.0 and t.delays == [0.5, 1.0, 2.0]  # 4.0 would end at 7.5

        class Later(Exception):
            after = 60.0

        @buttress.retry(attempts=3, deadline=5.0, retry_after=lambda e: e.after)
        def g():
            raise Later()

        t.delays.clear()
        with pytest.raises(Later):
            g()
        assert t.delays == []  # a server's Retry-After past the deadline: give up now
        assert g.metrics()["giveups_deadline"] == 1


def test_an_inner_call_starts_no_attempt_when_the_outer_deadline_has_passed():
    called = []
    with buttress.testing(clock=True) as t:
        @buttress.retry()
        def inner():
            called.append(1)

        @buttress.retry(deadline=1.0)
        def outer():
            t.clock.advance(2)
            assert buttress.remaining() == 0.0
            inner()

        with pytest.raises(DeadlineExceeded) as info:
            outer()
    assert isinstance(info.value, TimeoutError)
    assert called == [] and inner.metrics()["giveups_deadline"] == 1


def test_remaining_in_the_block_form_and_the_deadline_context_manager():
    seen = []
    with buttress.testing(clock=True) as t:
        with buttress.deadline(3.0):
            for attempt in buttress.retrying(attempts=3, deadline=10.0,
                                             backoff=Backoff(base=1, jitter="none")):
                with attempt:
                    seen.append(buttress.remaining())
                    if attempt.number < 2:
                        raise Boom()
        assert buttress.remaining() is None
    assert t.delays == [1.0] and seen == [3.0, 2.0]


# ------------------------------------------------ remaining(), threads


def test_a_thread_started_inside_does_not_inherit_the_deadline():
    seen = {}

    @buttress.retry(deadline=60.0)
    def f():
        seen["caller"] = buttress.remaining()

        def probe(key):
            seen[key] = buttress.remaining()

        t = threading.Thread(target=probe, args=("thread",))
        t.start()
        t.join()
        with ThreadPoolExecutor(1) as ex:
            ex.submit(probe, "executor").result()
        # copying the context carries the deadline over
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(probe, "copied"))
        t.start()
        t.join()

    f()
    assert seen["thread"] is None and seen["executor"] is None
    assert 0 < seen["copied"] <= seen["caller"] <= 60.0


def test_a_thread_with_a_copied_context_is_bounded_by_the_outer_deadline():
    out = {}
    with buttress.testing(clock=True):
        @buttress.retry(deadline=100.0)
        def inner(key):
            out[key] = buttress.remaining()

        @buttress.retry(deadline=5.0)
        def outer():
            ctx = contextvars.copy_context()
            th = threading.Thread(target=ctx.run, args=(inner, "copied"))
            th.start()
            th.join()
            th = threading.Thread(target=inner, args=("plain",))  # its own deadline only
            th.start()
            th.join()

        outer()
    assert out == {"copied": 5.0, "plain": 100.0}


def test_concurrent_threads_each_see_their_own_deadline():
    n = 6
    barrier = threading.Barrier(n, timeout=60)
    seen = {}
    errors = []

    def worker(i):
        try:
            @buttress.retry(deadline=100.0 + 10 * i)
            def f():
                barrier.wait()  # every thread is inside its call now
                seen[i] = buttress.remaining()
                barrier.wait()

            f()
            seen[("after", i)] = buttress.remaining()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for i in range(n):
        want = 100.0 + 10 * i
        assert want - 30 < seen[i] <= want, (i, seen[i])  # 30 s of slack for a slow machine
        assert seen[("after", i)] is None


def test_asyncio_to_thread_copies_the_context():
    @buttress.retry(deadline=60.0)
    async def f():
        return await asyncio.to_thread(buttress.remaining)

    left = asyncio.run(f())
    assert left is not None and 0 < left <= 60.0


# -------------------------------------------------- remaining(), tasks


def test_concurrent_tasks_each_see_their_own_deadline():
    n = 8
    seen = {}

    async def main(t):
        inside, read = [0], [0]
        go, later = asyncio.Event(), asyncio.Event()

        async def one(i):
            @buttress.retry(deadline=10.0 + i)
            async def f():
                inside[0] += 1
                if inside[0] == n:
                    go.set()
                await go.wait()  # all n calls are running at once
                seen[i] = buttress.remaining()
                read[0] += 1
                if read[0] == n:
                    t.clock.advance(0.5)  # time passes for everyone
                    later.set()
                await later.wait()
                seen[("later", i)] = buttress.remaining()

            await f()

        await asyncio.gather(*(one(i) for i in range(n)))
        assert buttress.remaining() is None
        only_this_task()

    with buttress.testing(clock=True) as t:
        run_checked(lambda: main(t))
    for i in range(n):
        assert seen[i] == 10.0 + i
        assert seen[("later", i)] == 9.5 + i


def test_concurrent_timed_tasks_each_see_their_own_deadline():
    # the wrapper built for timeout= runs the same deadline logic
    seen = {}

    async def main(t):
        go = asyncio.Event()

        async def one(i, d):
            @buttress.retry(deadline=d, timeout=30.0)
            async def f():
                await go.wait()
                seen[i] = buttress.remaining()

            await f()

        tasks = [asyncio.ensure_future(one(i, d)) for i, d in enumerate((3.0, 7.0, 5.0))]
        await asyncio.sleep(0)
        go.set()
        await asyncio.gather(*tasks)

    with buttress.testing(clock=True) as t:
        run_checked(lambda: main(t))
    assert seen == {0: 3.0, 1: 7.0, 2: 5.0}


def test_a_task_created_inside_a_call_inherits_its_deadline():
    seen = {}

    async def main(t):
        @buttress.retry(deadline=100.0)
        async def inner(key):
            seen[key] = buttress.remaining()

        async def child():
            await inner("child")

        outside = asyncio.ensure_future(inner("outside"))  # created before: no deadline

        @buttress.retry(deadline=4.0)
        async def outer():
            task = asyncio.ensure_future(child())  # copies the current context
            await task
            await outside
            return task

        await outer()

    with buttress.testing(clock=True) as t:
        run_checked(lambda: main(t))
    assert seen == {"child": 4.0, "outside": 100.0}


@pytest.mark.parametrize("inner_timeout", [None, 30.0], ids=["c-driven", "timeout-wrapper"])
@pytest.mark.parametrize("outer_timeout", [None, 30.0], ids=["c-driven", "timeout-wrapper"])
def test_nested_async_deadlines(inner_timeout, outer_timeout):
    seen = {}

    async def main(t):
        @buttress.retry(deadline=2.0, timeout=inner_timeout)
        async def short():
            seen["short"] = buttress.remaining()

        @buttress.retry(deadline=50.0, timeout=inner_timeout)
        async def long():
            seen["long"] = buttress.remaining()

        @buttress.retry(deadline=10.0, timeout=outer_timeout)
        async def outer():
            t.clock.advance(1)
            await short()
            seen["after short"] = buttress.remaining()
            await long()
            seen["after long"] = buttress.remaining()

        await outer()
        seen["after"] = buttress.remaining()

    with buttress.testing(clock=True) as t:
        run_checked(lambda: main(t))
    assert seen == {"short": 2.0, "after short": 9.0, "long": 9.0, "after long": 9.0,
                    "after": None}


def test_async_inner_retries_stop_at_the_outer_deadline():
    errors = []

    async def main(t):
        @buttress.retry(attempts=10, backoff=Backoff(base=1, jitter="none"))
        async def inner():
            errors.append(Boom())
            raise errors[-1]

        @buttress.retry(attempts=1, deadline=3.5, timeout=30.0)
        async def outer():
            await inner()

        with pytest.raises(Boom) as info:
            await outer()
        assert info.value is errors[-1]
        return inner.metrics()

    with buttress.testing(clock=True) as t:
        m = run_checked(lambda: main(t))
    assert t.delays == [1.0, 2.0] and len(errors) == 3
    assert m["giveups_deadline"] == 1


def test_deadline_is_restored_after_a_timed_out_call():
    async def main():
        hang = Hang()
        f = buttress.retry(attempts=1, deadline=1.0, timeout=0.05)(hang)
        with buttress.deadline(100.0):
            with pytest.raises(TimeoutError):
                await f()
            left = buttress.remaining()
        assert buttress.remaining() is None
        return left

    left = run_checked(main)
    assert 90.0 < left <= 100.0


# ------------------------------------------------------------ slow calls


def test_slow_calls_count_by_measured_duration_whether_or_not_they_time_out():
    async def main(t):
        br = CircuitBreaker(failure_threshold=0, slow_call=1.0)

        @buttress.retry(attempts=1, timeout=0.05, breaker=br)
        async def call(kind):
            if kind in ("slow ok", "slow timeout"):
                t.clock.advance(2.0)  # measured: 2 s on the breaker's clock
            if kind.endswith("timeout"):
                await asyncio.sleep(30)
            return kind

        assert await call("fast ok") == "fast ok"
        assert await call("slow ok") == "slow ok"
        with pytest.raises(TimeoutError):
            await call("slow timeout")
        with pytest.raises(TimeoutError):
            await call("fast timeout")  # cancelled, but it lasted 0 s on this clock
        return br.metrics()

    with buttress.testing(clock=True) as t:
        m = run_checked(lambda: main(t))
    assert m["calls"] == 4 and m["failures"] == 2
    assert m["slow"] == 2 and m["window_slow"] == 2
    assert m["slow_rate"] == 0.5


def test_timed_out_calls_open_a_breaker_on_the_slow_rate():
    async def main(t):
        # only the slow-call rate can open it: no streak rule, no failure rate
        br = CircuitBreaker(failure_threshold=0, slow_call=1.0, slow_rate=1.0, min_calls=2)

        @buttress.retry(attempts=1, timeout=0.05, breaker=br)
        async def call():
            t.clock.advance(1.5)
            await asyncio.sleep(30)

        for _ in range(2):
            with pytest.raises(TimeoutError):
                await call()
        with pytest.raises(CircuitOpenError):
            await call()
        return br

    with buttress.testing(clock=True) as t:
        br = run_checked(lambda: main(t))
    m = br.metrics()
    assert br.state == "open" and m["slow"] == 2 and m["trips"] == 1


def test_a_real_timed_out_call_is_slow_by_its_real_duration():
    br = CircuitBreaker(failure_threshold=0, slow_call=0.05)
    hang = Hang()
    f = buttress.retry(attempts=1, timeout=0.2, breaker=br)(hang)
    with pytest.raises(TimeoutError):
        run_checked(f)
    m = br.metrics()
    assert m["slow"] == 1 and m["failures"] == 1
    assert m["latency"]["max"] >= 0.15  # it ran until the timeout fired


def test_sync_slow_call_counts_by_duration_under_a_deadline():
    br = CircuitBreaker(failure_threshold=0, slow_call=1.0)
    with buttress.testing(clock=True) as t:
        @buttress.retry(attempts=1, deadline=5.0, breaker=br)
        def f(secs):
            t.clock.advance(secs)
            return buttress.remaining()

        assert f(0.5) == 4.5
        assert f(3.0) == 2.0
    assert br.metrics()["slow"] == 1


# ------------------------------------------------- a sleep that overruns

class LateWakeUp:
    """A sleep that wakes up `late` seconds after it should, on the fake
    clock: what a busy machine does to a real one."""

    def __init__(self, clock, late):
        self.clock, self.late = clock, late

    def __call__(self, delay):
        self.clock.advance(delay + self.late)


def test_a_sleep_that_overruns_the_deadline_gives_up_with_the_last_error():
    clock = buttress.FakeClock(100.0)
    calls = []

    def flaky():
        calls.append(clock())
        raise OSError(f"down #{len(calls)}")

    with buttress.testing(clock=clock):
        f = buttress.retry(attempts=5, deadline=1.0, sleep=LateWakeUp(clock, 2.0),
                           backoff=buttress.Backoff(base=0.1, jitter="none"))(flaky)
        with pytest.raises(OSError, match="down #1"):
            f()
    assert calls == [100.0]  # no attempt after the late wake-up
    m = f.metrics()
    assert (m["attempts"], m["retries"], m["giveups_deadline"]) == (1, 1, 1)


def test_an_overrun_of_a_result_retry_raises_retry_exhausted_for_the_deadline():
    clock = buttress.FakeClock(0.0)
    with buttress.testing(clock=clock):
        f = buttress.retry(attempts=5, deadline=1.0, result=lambda v: v is None,
                           sleep=LateWakeUp(clock, 5.0),
                           backoff=buttress.Backoff(base=0.1, jitter="none"))(lambda: None)
        with pytest.raises(buttress.RetryExhausted) as info:
            f()
    assert info.value.attempts == 1 and info.value.last_result is None
    assert "deadline" in str(info.value)


def test_an_overrun_in_the_block_form_and_on_time_sleeps():
    clock = buttress.FakeClock(0.0)
    seen = []
    with buttress.testing(clock=clock):
        with pytest.raises(KeyError):
            for attempt in buttress.retrying(attempts=5, deadline=1.0,
                                             sleep=LateWakeUp(clock, 1.0),
                                             backoff=buttress.Backoff(base=0.1, jitter="none"),
                                             on=KeyError):
                with attempt:
                    seen.append(attempt.number)
                    raise KeyError("x")
        assert seen == [1]
        # woken on time, the retries go on until the deadline cuts them
        seen.clear()
        with pytest.raises(KeyError):
            for attempt in buttress.retrying(attempts=5, deadline=1.0,
                                             sleep=LateWakeUp(clock, 0.0),
                                             backoff=buttress.Backoff(base=0.1, jitter="none"),
                                             on=KeyError):
                with attempt:
                    seen.append(attempt.number)
                    raise KeyError("x")
        assert seen == [1, 2, 3, 4]  # 0.1 + 0.2 + 0.4 = 0.7 s; 0.8 more would pass 1 s


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_an_overrun_in_async_calls(timeout):
    clock = buttress.FakeClock(0.0)
    calls = []

    async def late_sleep(delay):
        clock.advance(delay + 3.0)

    async def flaky():
        calls.append(1)
        raise OSError("down")

    async def main():
        f = buttress.retry(attempts=5, deadline=1.0, sleep=late_sleep, timeout=timeout,
                           backoff=buttress.Backoff(base=0.1, jitter="none"))(flaky)
        with pytest.raises(OSError):
            await f()
        return f.metrics()

    with buttress.testing(clock=clock):
        m = asyncio.run(main())
    assert calls == [1]
    assert (m["attempts"], m["giveups_deadline"]) == (1, 1)
