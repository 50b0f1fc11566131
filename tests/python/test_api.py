"""The public surface of API.md: decorators, breaker forms, errors, metrics."""
import functools
import inspect
import logging

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError, RetryExhausted


class Boom(Exception):
    pass


def failing(n, exc=Boom, value="ok"):
    """A function failing n times, then returning value."""
    calls = []

    def fn(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= n:
            raise exc(f"failure {len(calls)}")
        return value

    fn.calls = calls
    return fn


# ------------------------------------------------------------- wrapping


def test_wrapper_keeps_metadata():
    def fetch(url: str, timeout: float = 1.0) -> str:
        """Fetch a URL."""
        return url

    fetch.custom = 42
    w = buttress.retry()(fetch)
    assert w.__name__ == "fetch"
    assert w.__qualname__ == fetch.__qualname__
    assert w.__doc__ == "Fetch a URL."
    assert w.__module__ == __name__
    assert w.__wrapped__ is fetch
    assert w.__dict__["custom"] == 42
    assert inspect.signature(w) == inspect.signature(fetch)
    assert not inspect.iscoroutinefunction(w)
    assert "fetch" in repr(w)
    assert w("u") == "u"


def test_breaker_decorator_keeps_metadata():
    br = CircuitBreaker()

    @br
    def f(a, *, b=2):
        """doc"""
        return a + b

    assert f.__name__ == "f" and f.__doc__ == "doc" and f.__wrapped__.__name__ == "f"
    assert str(inspect.signature(f)) == "(a, *, b=2)"
    assert f(1, b=3) == 4
    assert f.breaker is br


def test_methods_classmethods_staticmethods():
    class Client:
        base = 10

        def __init__(self):
            self.n = 0

        @buttress.retry(backoff=buttress.Backoff(base=0))
        def method(self, x):
            self.n += 1
            if self.n < 2:
                raise Boom()
            return self.base + x

        @classmethod
        @buttress.retry()
        def cm(cls, x):
            return cls.base * x

        @buttress.retry()
        @classmethod
        def cm2(cls, x):
            return cls.base - x

        @staticmethod
        @buttress.retry()
        def sm(x):
            return x * 2

        @buttress.retry()
        @staticmethod
        def sm2(x):
            return x * 3

    c = Client()
    assert c.method(1) == 11 and c.n == 2
    assert Client.method(c, 2) == 12
    assert Client.cm(2) == 20 and c.cm(3) == 30
    assert Client.cm2(2) == 8 and c.cm2(3) == 7
    assert Client.sm(2) == 4 and c.sm(3) == 6
    assert Client.sm2(2) == 6 and c.sm2(1) == 3
    assert inspect.signature(c.method).parameters.keys() == {"x"}


def test_keyword_arguments_pass_through():
    @buttress.retry()
    def f(*args, **kwargs):
        return args, kwargs

    assert f(1, 2, a=3) == ((1, 2), {"a": 3})
    assert f() == ((), {})


def test_decorating_non_callable_is_type_error():
    with pytest.raises(TypeError, match="callable"):
        buttress.retry()(42)


# ------------------------------------------------------------- retry


def test_exhausted_retries_reraise_the_last_exception_itself():
    with buttress.testing() as t:
        seen = []

        @buttress.retry(attempts=3)
        def f():
            e = Boom(len(seen))
            seen.append(e)
            raise e

        with pytest.raises(Boom) as info:
            f()
    assert info.value is seen[-1]
    assert len(seen) == 3 and len(t.delays) == 2
    assert f.metrics()["giveups_attempts"] == 1


def test_success_after_failures_returns_the_value():
    fn = failing(2)
    with buttress.testing() as t:
        assert buttress.retry(attempts=3)(fn)() == "ok"
    assert len(fn.calls) == 3 and len(t.delays) == 2


def test_result_predicate_and_retry_exhausted():
    values = iter([None, None, None, 5])
    with buttress.testing():
        f = buttress.retry(attempts=3, result=lambda v: v is None)(lambda: next(values))
        with pytest.raises(RetryExhausted) as info:
            f()
    assert info.value.last_result is None and info.value.attempts == 3
    assert isinstance(info.value, buttress.ButtressError)
    values2 = iter([None, 7])
    with buttress.testing():
        g = buttress.retry(attempts=3, result=lambda v: v is None)(lambda: next(values2))
        assert g() == 7


def test_on_types_tuple_and_predicate():
    with buttress.testing():
        fn = failing(1, exc=KeyError)
        with pytest.raises(KeyError):
            buttress.retry(on=ValueError)(fn)()
        assert len(fn.calls) == 1
        fn = failing(1, exc=KeyError)
        assert buttress.retry(on=(ValueError, KeyError))(fn)() == "ok"
        fn = failing(1, exc=KeyError)
        assert buttress.retry(on=lambda e: "failure 1" in str(e))(fn)() == "ok"
        fn = failing(2, exc=KeyError)
        with pytest.raises(KeyError):
            buttress.retry(on=lambda e: "failure 1" in str(e))(fn)()
        assert len(fn.calls) == 2


def test_before_sleep_gets_the_state():
    states = []
    with buttress.testing():
        fn = failing(2)
        buttress.retry(attempts=3, before_sleep=states.append,
                       backoff=buttress.Backoff(base=0.5, jitter="none"))(fn)()
    assert [s.attempt for s in states] == [1, 2]
    assert [s.delay for s in states] == [0.5, 1.0]
    assert all(isinstance(s.exception, Boom) for s in states)
    assert states[0].result is None


def test_retry_after_replaces_the_delay():
    class Busy(Exception):
        retry_after = 2.5

    with buttress.testing() as t:
        fn = failing(1, exc=Busy)
        buttress.retry(retry_after=lambda e: getattr(e, "retry_after", None))(fn)()
    assert t.delays == [2.5]


def test_retry_after_never_past_the_deadline():
    class Busy(Exception):
        pass

    with buttress.testing(clock=True):
        fn = failing(5, exc=Busy)
        f = buttress.retry(attempts=5, deadline=1.0, retry_after=lambda e: 5.0)(fn)
        with pytest.raises(Busy):
            f()
    assert len(fn.calls) == 1
    assert f.metrics()["giveups_deadline"] == 1


def test_user_sleep_is_called_with_seconds():
    slept = []
    fn = failing(2)
    buttress.retry(sleep=slept.append, backoff=buttress.Backoff(base=1, jitter="none"))(fn)()
    assert slept == [1.0, 2.0]


def test_metrics_of_a_decorated_function():
    with buttress.testing():
        f = buttress.retry(attempts=2)(failing(1))
        f()
        m = f.metrics()
    assert m["calls"] == 1 and m["attempts"] == 2 and m["retries"] == 1
    assert m["successes"] == 1


def test_each_decorated_function_has_its_own_metrics():
    deco = buttress.retry()
    f = deco(lambda: 1)
    g = deco(lambda: 2)
    f()
    assert f.metrics()["calls"] == 1 and g.metrics()["calls"] == 0


def test_timeout_on_a_sync_function_is_a_type_error():
    with pytest.raises(TypeError, match="deadline=.*remaining"):
        buttress.retry(timeout=1.0)(lambda: None)


def test_retry_policy_call_and_begin():
    p = buttress.RetryPolicy(attempts=2, backoff=buttress.Backoff(base=0))
    assert p.call(failing(1)) == "ok"
    c = p.begin()
    assert c.attempt == 1 and c.reason is None
    assert c.next() == 0.0
    assert c.next() is None and c.reason == "attempts"
    c.close()


def test_retrying_block_form():
    fn = failing(2)
    with buttress.testing() as t:
        for attempt in buttress.retrying(attempts=5):
            with attempt:
                result = fn()
    assert result == "ok" and len(fn.calls) == 3 and len(t.delays) == 2


def test_retrying_block_form_reraises_when_exhausted():
    fn = failing(9)
    with buttress.testing():
        with pytest.raises(Boom, match="failure 3"):
            for attempt in buttress.retrying(attempts=3):
                with attempt:
                    fn()
        with pytest.raises(RuntimeError, match="with attempt"):
            for attempt in buttress.retrying(attempts=3):
                pass


def test_retrying_does_not_retry_what_on_excludes():
    fn = failing(1, exc=KeyError)
    with pytest.raises(KeyError):
        for attempt in buttress.retrying(on=ValueError):
            with attempt:
                fn()
    assert len(fn.calls) == 1


# ------------------------------------------------------------- remaining


def test_remaining_inside_a_call_with_deadline():
    seen = []
    with buttress.testing(clock=True) as t:
        @buttress.retry(deadline=5.0)
        def f():
            seen.append(buttress.remaining())
            t.clock.advance(1.0)
            seen.append(buttress.remaining())

        assert buttress.remaining() is None
        f()
        assert buttress.remaining() is None
    assert seen == [5.0, 4.0]


def test_nested_retries_take_the_earlier_deadline():
    seen = []
    with buttress.testing(clock=True):
        @buttress.retry(deadline=10.0)
        def inner():
            seen.append(buttress.remaining())

        @buttress.retry(deadline=2.0)
        def outer():
            inner()
            seen.append(buttress.remaining())

        outer()
        inner()
    assert seen == [2.0, 2.0, 10.0]


def test_deadline_context_manager_bounds_inner_retries():
    with buttress.testing(clock=True) as t:
        fn = failing(10)
        f = buttress.retry(attempts=10, backoff=buttress.Backoff(base=1, jitter="none"))(fn)
        with buttress.deadline(2.5):
            assert buttress.remaining() == 2.5
            with pytest.raises(Boom):
                f()
    # 1 s then 2 s would end past 2.5 s: given up after one sleep
    assert t.delays == [1.0] and len(fn.calls) == 2


def test_inherited_deadline_already_passed():
    with buttress.testing(clock=True) as t:
        f = buttress.retry()(lambda: 1)
        with buttress.deadline(1.0):
            t.clock.advance(2.0)
            with pytest.raises(buttress.DeadlineExceeded):
                f()
    assert isinstance(buttress.DeadlineExceeded(), TimeoutError)


# ------------------------------------------------------------- breaker


def test_breaker_opens_rejects_and_recovers():
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker("svc", failure_threshold=2, reset_timeout=10.0)
        fn = failing(2)
        f = br(fn)
        for _ in range(2):
            with pytest.raises(Boom):
                f()
        assert br.state == "open"
        with pytest.raises(CircuitOpenError) as info:
            f()
        assert info.value.breaker == "svc"
        assert info.value.retry_after == 10.0
        assert len(fn.calls) == 2
        t.clock.advance(10.0)
        assert f() == "ok"
        assert br.state == "closed"
        m = br.metrics()
    assert m["rejected"] == 1 and m["failures"] == 2 and m["successes"] == 1
    assert m["transitions"]["closed>open"] == 1
    assert m["transitions"]["half_open>closed"] == 1


def test_circuit_open_error_is_new_each_time():
    br = CircuitBreaker(failure_threshold=1)
    br.force_open()
    errors = []
    for _ in range(3):
        try:
            br.call(lambda: None)
        except CircuitOpenError as e:
            errors.append(e)
    assert len({id(e) for e in errors}) == 3
    assert errors[0].retry_after is None  # forced open: unknown


def test_with_breaker_and_call():
    br = CircuitBreaker(failure_threshold=2)
    with br:
        pass
    assert br.call(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(Boom):
        with br:
            raise Boom()
    with pytest.raises(Boom):
        br.call(failing(5))
    assert br.state == "open"
    with pytest.raises(CircuitOpenError):
        with br:
            pytest.fail("entered an open breaker")
    m = br.metrics()
    assert m["successes"] == 2 and m["failures"] == 2 and m["rejected"] == 1


def test_manual_transitions():
    br = CircuitBreaker()
    br.force_open()
    assert br.state == "forced_open"
    with pytest.raises(CircuitOpenError):
        br.call(lambda: None)
    br.disable()
    assert br.state == "disabled"
    for _ in range(20):
        with pytest.raises(Boom):
            br.call(failing(1))
    assert br.state == "disabled"
    br.reset()
    assert br.state == "closed"


def test_two_step_api():
    br = CircuitBreaker(failure_threshold=1)
    t1 = br.allow()
    t2 = br.allow()
    assert br.record(t1, False) is True
    assert br.state == "open"
    assert br.record(t2, True) is False  # stale: admitted before the opening
    with pytest.raises(ValueError, match="already recorded"):
        br.record(t1, True)
    with pytest.raises(CircuitOpenError):
        br.allow()
    br.reset()
    with pytest.raises(ValueError, match="ok must be"):
        br.record(br.allow(), "maybe")


def test_exclude_is_neutral_and_on_narrows_failures():
    br = CircuitBreaker(failure_threshold=2, on=OSError, exclude=(KeyError,))
    with pytest.raises(OSError):
        br.call(failing(1, exc=OSError))
    with pytest.raises(KeyError):
        br.call(failing(1, exc=KeyError))  # neutral: the streak stays at 1
    assert br.metrics()["consecutive_failures"] == 1
    with pytest.raises(ValueError):
        br.call(failing(1, exc=ValueError))  # not a failure by `on`: a success
    assert br.metrics()["consecutive_failures"] == 0
    m = br.metrics()
    assert m["excluded"] == 1 and m["failures"] == 1 and m["successes"] == 1


def test_fallback_on_rejection_and_failure():
    calls = []

    def fallback(exc, *args, **kwargs):
        calls.append((type(exc), args, kwargs))
        return "fallback"

    br = CircuitBreaker(failure_threshold=1, fallback=fallback, exclude=KeyError)

    @br
    def f(x, y=0):
        raise OSError()

    assert f(1, y=2) == "fallback"  # the failure that opens
    assert f(3) == "fallback"  # rejected
    assert calls == [(OSError, (1,), {"y": 2}), (CircuitOpenError, (3,), {})]
    br.reset()
    with pytest.raises(KeyError):
        br(failing(1, exc=KeyError))()  # excluded: not replaced


def test_fused_retry_and_breaker():
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker("fused", failure_threshold=3, reset_timeout=60)
        fn = failing(10)
        f = buttress.retry(attempts=5, breaker=br)(fn)
        with pytest.raises(CircuitOpenError):
            f()
        assert len(fn.calls) == 3  # the 4th attempt was rejected, not retried
        assert f.breaker is br
        m = f.metrics()
        assert m["breaker"]["failures"] == 3 and m["breaker"]["rejected"] == 1
        assert len(t.delays) == 3


def test_retry_retries_circuit_open_error_only_when_asked():
    with buttress.testing() as t:
        br = CircuitBreaker(failure_threshold=1)
        br.force_open()
        f = buttress.retry(attempts=3)(br(lambda: 1))
        with pytest.raises(CircuitOpenError):
            f()
        assert t.delays == []
        g = buttress.retry(attempts=3, on=(OSError, CircuitOpenError))(br(lambda: 1))
        with pytest.raises(CircuitOpenError):
            g()
        assert len(t.delays) == 2


def test_on_state_change_fires_once_per_transition():
    events = []
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker("l", failure_threshold=1, reset_timeout=1,
                            on_state_change=lambda b, old, new: events.append((b.name, old, new)))
        with pytest.raises(Boom):
            br.call(failing(1))
        t.clock.advance(1)
        br.call(lambda: None)
        br.force_open()
        br.disable()
        br.reset()
    assert events == [("l", "closed", "open"), ("l", "open", "half_open"),
                      ("l", "half_open", "closed"), ("l", "closed", "forced_open"),
                      ("l", "forced_open", "disabled"), ("l", "disabled", "closed")]


def test_listener_sees_the_new_state_and_may_reenter():
    seen = []

    def listener(b, old, new):
        seen.append((new, b.state, b.metrics()["state"]))
        if new == "open":
            with pytest.raises(CircuitOpenError):
                b.call(lambda: None)

    br = CircuitBreaker(failure_threshold=1, on_state_change=listener)
    with pytest.raises(Boom):
        br.call(failing(1))
    assert seen == [("open", "open", "open")]
    assert br.metrics()["rejected"] == 1


def test_failing_listener_is_logged_and_isolated(caplog):
    later = []

    def bad(b, old, new):
        raise RuntimeError("listener broke")

    br = CircuitBreaker("iso", failure_threshold=1,
                        on_state_change=[bad, lambda b, o, n: later.append(n)])
    with caplog.at_level(logging.ERROR, logger="buttress"):
        with pytest.raises(Boom):  # the caller sees its own exception
            br.call(failing(1))
    assert later == ["open"] and br.state == "open"
    assert any("listener broke" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert any(getattr(r, "breaker", None) == "iso" for r in caplog.records)


def test_budget_caps_retries():
    budget = buttress.RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)
    with buttress.testing(clock=True):
        fn = failing(100)
        f = buttress.retry(attempts=10, budget=budget,
                           backoff=buttress.Backoff(base=0))(fn)
        with pytest.raises(Boom):
            f()
    assert len(fn.calls) == 2  # 0.1/s * 10 s = 1 retry
    assert f.metrics()["giveups_budget"] == 1
    m = budget.metrics()
    assert m["withdrawals"] == 1 and m["rejections"] == 1


def test_backoff_delays_same_seed_same_delays():
    a = buttress.Backoff(seed=7).delays(10)
    b = buttress.Backoff(seed=7).delays(10)
    assert a == b and a != buttress.Backoff(seed=8).delays(10)
    assert buttress.Backoff(seed=7).delays(10) == buttress.Backoff(seed=7).delays(10)
    assert all(0 <= d <= 10.0 for d in a)
    none = buttress.Backoff(base=0.1, multiplier=2, cap=1, jitter="none").delays(6)
    assert none == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert buttress.Backoff(base=0).delays(3) == [0.0, 0.0, 0.0]


def test_decorators_on_callable_objects_and_partials():
    class Adder:
        def __call__(self, a, b):
            return a + b

    assert buttress.retry()(Adder())(1, 2) == 3
    assert buttress.retry()(functools.partial(pow, 2))(10) == 1024


def test_defaults_come_from_the_core():
    d = buttress.DEFAULTS
    assert d["attempts"] == 3 and d["base"] == 0.1 and d["cap"] == 10.0
    assert d["jitter"] == "full" and d["failure_threshold"] == 5
    assert d["reset_timeout"] == 30.0
    assert inspect.signature(buttress.retry).parameters["attempts"].default == 3


def module_level(x):
    return x * 2


module_level = buttress.retry()(module_level)


def test_wrappers_pickle_by_reference():
    import pickle

    assert pickle.loads(pickle.dumps(module_level)) is module_level


def test_log_records_for_retries_give_ups_and_transitions(caplog):
    with buttress.testing():
        f = buttress.retry(attempts=2, name="fetcher")(failing(5))
        with caplog.at_level(logging.DEBUG, logger="buttress"):
            with buttress.correlation("req-7"):
                with pytest.raises(Boom):
                    f()
                br = CircuitBreaker("logged", failure_threshold=1)
                with pytest.raises(Boom):
                    br.call(failing(1))
    recs = [r for r in caplog.records if r.name == "buttress"]
    retry = [r for r in recs if getattr(r, "retry", None) == "fetcher"]
    assert [r.levelno for r in retry] == [logging.DEBUG, logging.INFO]
    assert retry[0].attempt == 1 and retry[0].delay >= 0
    assert all(r.correlation_id == "req-7" for r in recs)
    change = [r for r in recs if getattr(r, "breaker", None) == "logged"]
    assert (change[0].old, change[0].new) == ("closed", "open")


def test_success_path_of_a_closed_breaker_reads_no_clock():
    """Only the latency sample reads the clock: two reads per timed call
    (start, end), and about one call in 16 is timed."""
    reads = []

    def clock():
        reads.append(1)
        return 100.0

    with buttress.testing(clock=clock):
        br = CircuitBreaker(failure_threshold=3)
        guarded = br(lambda: 1)
        retried = buttress.retry()(lambda: 2)
        fused = buttress.retry(breaker=br)(lambda: 3)
        for _ in range(1600):
            guarded()
            retried()
            fused()
            with br:
                pass
        on_calls = len(reads)
        timed = br.metrics()["latency"]["count"] + retried.metrics()["latency"]["count"] + \
            fused.metrics()["latency"]["count"]
        reads.clear()  # the metrics reads above take the time too
        # 4 x 1600 breaker calls and 2 x 1600 retry calls: 1 in 16 timed
        assert 0.8 * 6 * 100 <= timed <= 1.2 * 6 * 100
        assert on_calls == 2 * timed
        # a failure needs the time (the breaker may open): now it reads it
        with pytest.raises(Boom):
            br.call(failing(1))
        assert len(reads) >= 1
        # rules that need durations time the calls
        timed = CircuitBreaker(slow_call=1.0)(lambda: 4)
        n = len(reads)
        timed()
        assert len(reads) > n


def test_retry_after_none_keeps_the_backoff_and_bad_values_raise():
    with buttress.testing() as t:
        fn = failing(1)
        buttress.retry(retry_after=lambda e: None,
                       backoff=buttress.Backoff(base=0.25, jitter="none"))(fn)()
        assert t.delays == [0.25]
        with pytest.raises(ValueError, match="retry_after"):
            buttress.retry(retry_after=lambda e: -1.0)(failing(1))()


def test_one_budget_shared_by_many_call_sites():
    budget = buttress.RetryBudget(ratio=0.0, min_per_second=0.2, window=10.0)  # 2 retries
    with buttress.testing(clock=True):
        fns = [buttress.retry(attempts=5, budget=budget,
                              backoff=buttress.Backoff(base=0))(failing(100))
               for _ in range(3)]
        for f in fns:
            with pytest.raises(Boom):
                f()
    assert sum(f.metrics()["retries"] for f in fns) == 2
    assert sum(f.metrics()["giveups_budget"] for f in fns) == 3
    assert budget.metrics()["deposits"] == 3


def test_retry_state_is_a_named_tuple_like_record():
    seen = []
    with buttress.testing():
        buttress.retry(before_sleep=seen.append)(failing(1))()
    s = seen[0]
    assert isinstance(s, buttress.RetryState)
    assert s == (s.attempt, s.delay, s.exception, s.result)


def test_backoff_repr_and_properties():
    b = buttress.Backoff(base=0.5, multiplier=3, cap=20, jitter="equal", seed=9)
    assert (b.base, b.multiplier, b.cap, b.jitter, b.seed) == (0.5, 3.0, 20.0, "equal", 9)
    assert "jitter='equal'" in repr(b)
    assert buttress.Backoff().seed is None


def test_retrying_block_form_sets_the_deadline_for_remaining():
    seen = []
    with buttress.testing(clock=True) as t:
        for attempt in buttress.retrying(attempts=3, deadline=4.0,
                                         backoff=buttress.Backoff(base=1, jitter="none")):
            with attempt:
                seen.append(buttress.remaining())
                if attempt.number < 2:
                    raise Boom()
        assert buttress.remaining() is None
    assert seen == [4.0, 3.0] and t.delays == [1.0]


def test_retrying_refuses_a_result_predicate_it_could_never_feed():
    with pytest.raises(TypeError, match="result= needs a return value"):
        buttress.retrying(result=lambda v: v is None)
    # a shared policy with a predicate: the block form never asks it
    asked = []
    policy = buttress.RetryPolicy(result=lambda v: asked.append(v) or True)
    runs = 0
    for attempt in buttress.retrying(policy=policy):
        with attempt:
            runs += 1
    assert (runs, asked) == (1, [])
    with buttress.testing(), pytest.raises(buttress.RetryExhausted):
        policy.call(lambda: 1)  # call() has a value: the predicate is asked
    assert asked == [1, 1, 1]
