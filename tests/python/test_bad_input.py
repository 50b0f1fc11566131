"""Bad input (issue 9): one table of bad configurations (wrong types, NaN,
infinities, negatives, huge values, empty names, non-callables), one of
misused calls at run time, and re-entrant use (listeners, fallbacks,
predicates and retried functions that call back into the same objects).
Each gives a clear error naming the parameter (and, for configurations, the
bad value); nothing is half-built; and the objects that already exist keep
working afterwards, which every case checks."""
import asyncio
import math
import sys

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, CircuitOpenError, RetryBudget

nan, inf = math.nan, math.inf


def enter_deadline(**kw):
    """buttress.deadline(...) checks its argument when the block is entered."""
    return buttress.deadline(**kw).__enter__()


def first_attempt(**kw):
    """retrying(...) is a generator: it starts (and checks) at the first next()."""
    return next(iter(buttress.retrying(**kw)))

# (constructor, kwargs, exception type, parameter named in the message, value shown)
CASES = [
    (Backoff, {"base": -1}, ValueError, "base", "-1"),
    (Backoff, {"base": nan}, ValueError, "base", "nan"),
    (Backoff, {"base": inf}, ValueError, "base", "inf"),
    (Backoff, {"base": "0.1"}, TypeError, "base", "'0.1'"),
    (Backoff, {"base": True}, TypeError, "base", "True"),
    (Backoff, {"multiplier": 0.5}, ValueError, "multiplier", "0.5"),
    (Backoff, {"multiplier": nan}, ValueError, "multiplier", "nan"),
    (Backoff, {"multiplier": None}, TypeError, "multiplier", "None"),
    (Backoff, {"cap": 0.01}, ValueError, "cap", "0.01"),
    (Backoff, {"cap": -5}, ValueError, "cap", "-5"),
    (Backoff, {"cap": 1e30}, ValueError, "cap", "1e+30"),
    (Backoff, {"jitter": "fuzzy"}, ValueError, "jitter", "'fuzzy'"),
    (Backoff, {"jitter": 1}, TypeError, "jitter", "1"),
    (Backoff, {"seed": -1}, ValueError, "seed", "-1"),
    (Backoff, {"seed": 1.5}, TypeError, "seed", "1.5"),
    (buttress.retry, {"attempts": 0}, ValueError, "attempts", "0"),
    (buttress.retry, {"attempts": -3}, ValueError, "attempts", "-3"),
    (buttress.retry, {"attempts": 2**32}, ValueError, "attempts", str(2**32)),
    (buttress.retry, {"attempts": 2.0}, TypeError, "attempts", "2.0"),
    (buttress.retry, {"attempts": None}, TypeError, "attempts", "None"),
    (buttress.retry, {"deadline": 0}, ValueError, "deadline", "0"),
    (buttress.retry, {"deadline": -1.0}, ValueError, "deadline", "-1.0"),
    (buttress.retry, {"deadline": "10s"}, TypeError, "deadline", "'10s'"),
    (buttress.retry, {"backoff": 0.1}, TypeError, "backoff", "0.1"),
    (buttress.retry, {"on": 42}, TypeError, "on", "42"),
    (buttress.retry, {"on": (ValueError, int)}, TypeError, "on", "int"),
    (buttress.retry, {"on": str}, TypeError, "on", "str"),
    (buttress.retry, {"result": "yes"}, TypeError, "result", "'yes'"),
    (buttress.retry, {"budget": 5}, TypeError, "budget", "5"),
    (buttress.retry, {"breaker": "payments"}, TypeError, "breaker", "'payments'"),
    (buttress.retry, {"before_sleep": 1}, TypeError, "before_sleep", "1"),
    (buttress.retry, {"retry_after": 3}, TypeError, "retry_after", "3"),
    (buttress.retry, {"sleep": 0}, TypeError, "sleep", "0"),
    (buttress.retry, {"timeout": -1}, ValueError, "timeout", "-1"),
    (buttress.retry, {"name": 3}, TypeError, "name", "3"),
    (CircuitBreaker, {"name": 5}, TypeError, "name", "5"),
    (CircuitBreaker, {"failure_threshold": -1}, ValueError, "failure_threshold", "-1"),
    (CircuitBreaker, {"failure_threshold": 70000}, ValueError, "failure_threshold", "70000"),
    (CircuitBreaker, {"failure_threshold": 2.5}, TypeError, "failure_threshold", "2.5"),
    (CircuitBreaker, {"reset_timeout": 0}, ValueError, "reset_timeout", "0"),
    (CircuitBreaker, {"reset_timeout": nan}, ValueError, "reset_timeout", "nan"),
    (CircuitBreaker, {"half_open_calls": 0}, ValueError, "half_open_calls", "0"),
    (CircuitBreaker, {"half_open_calls": 5000}, ValueError, "half_open_calls", "5000"),
    (CircuitBreaker, {"success_threshold": 0}, ValueError, "success_threshold", "0"),
    (CircuitBreaker, {"trial_timeout": 0}, ValueError, "trial_timeout", "0"),
    (CircuitBreaker, {"failure_rate": 0}, ValueError, "failure_rate", "0"),
    (CircuitBreaker, {"failure_rate": 1.5}, ValueError, "failure_rate", "1.5"),
    (CircuitBreaker, {"failure_rate": "high"}, TypeError, "failure_rate", "'high'"),
    (CircuitBreaker, {"slow_call": -0.5}, ValueError, "slow_call", "-0.5"),
    (CircuitBreaker, {"slow_rate": 0.5}, ValueError, "slow_rate", "0.5"),
    (CircuitBreaker, {"window": 0}, ValueError, "window", "0"),
    (CircuitBreaker, {"window": 100000}, ValueError, "window", "100000"),
    (CircuitBreaker, {"window": 1.5}, TypeError, "window", "1.5"),
    (CircuitBreaker, {"window_type": "sliding"}, ValueError, "window_type", "'sliding'"),
    (CircuitBreaker, {"window_type": "time", "window": -1}, ValueError, "window", "-1"),
    (CircuitBreaker, {"min_calls": 0}, ValueError, "min_calls", "0"),
    (CircuitBreaker, {"reset_backoff": 2.0}, TypeError, "reset_backoff", "2.0"),
    (CircuitBreaker, {"on": "OSError"}, TypeError, "on", "'OSError'"),
    (CircuitBreaker, {"exclude": [ValueError, 3]}, TypeError, "exclude", "3"),
    (CircuitBreaker, {"fallback": "default"}, TypeError, "fallback", "'default'"),
    (CircuitBreaker, {"on_state_change": 7}, TypeError, "on_state_change", "7"),
    (CircuitBreaker, {"on_state_change": [print, 7]}, TypeError, "on_state_change", "7"),
    (CircuitBreaker, {"shared": "/region"}, TypeError, "shared", "'/region'"),
    (RetryBudget, {"ratio": -0.1}, ValueError, "ratio", "-0.1"),
    (RetryBudget, {"ratio": inf}, ValueError, "ratio", "inf"),
    (RetryBudget, {"min_per_second": -1}, ValueError, "min_per_second", "-1"),
    (RetryBudget, {"window": 0}, ValueError, "window", "0"),
    (RetryBudget, {"window": "1m"}, TypeError, "window", "'1m'"),
    (buttress.retrying, {"attempts": 0}, ValueError, "attempts", "0"),
    # ---- NaN
    (Backoff, {"cap": nan}, ValueError, "cap", "nan"),
    (buttress.retry, {"deadline": nan}, ValueError, "deadline", "nan"),
    (buttress.retry, {"timeout": nan}, ValueError, "timeout", "nan"),
    (CircuitBreaker, {"failure_rate": nan}, ValueError, "failure_rate", "nan"),
    (CircuitBreaker, {"slow_call": nan}, ValueError, "slow_call", "nan"),
    (CircuitBreaker, {"slow_call": 1, "slow_rate": nan}, ValueError, "slow_rate", "nan"),
    (CircuitBreaker, {"trial_timeout": nan}, ValueError, "trial_timeout", "nan"),
    (CircuitBreaker, {"window_type": "time", "window": nan}, ValueError, "window", "nan"),
    (RetryBudget, {"ratio": nan}, ValueError, "ratio", "nan"),
    (RetryBudget, {"min_per_second": nan}, ValueError, "min_per_second", "nan"),
    (enter_deadline, {"seconds": nan}, ValueError, "seconds", "nan"),
    (first_attempt, {"deadline": nan}, ValueError, "deadline", "nan"),
    # ---- infinities
    (Backoff, {"multiplier": inf}, ValueError, "multiplier", "inf"),
    (Backoff, {"base": -inf}, ValueError, "base", "-inf"),
    (buttress.retry, {"deadline": inf}, ValueError, "deadline", "inf"),
    (buttress.retry, {"deadline": -inf}, ValueError, "deadline", "-inf"),
    (buttress.retry, {"timeout": inf}, ValueError, "timeout", "inf"),
    (CircuitBreaker, {"reset_timeout": inf}, ValueError, "reset_timeout", "inf"),
    (CircuitBreaker, {"trial_timeout": inf}, ValueError, "trial_timeout", "inf"),
    (CircuitBreaker, {"slow_call": inf}, ValueError, "slow_call", "inf"),
    (CircuitBreaker, {"failure_rate": inf}, ValueError, "failure_rate", "inf"),
    (CircuitBreaker, {"window_type": "time", "window": inf}, ValueError, "window", "inf"),
    (RetryBudget, {"min_per_second": inf}, ValueError, "min_per_second", "inf"),
    (RetryBudget, {"window": inf}, ValueError, "window", "inf"),
    (enter_deadline, {"seconds": inf}, ValueError, "seconds", "inf"),
    # ---- negatives
    (Backoff, {"multiplier": -2}, ValueError, "multiplier", "-2"),
    (buttress.retry, {"timeout": -0.5}, ValueError, "timeout", "-0.5"),
    (CircuitBreaker, {"half_open_calls": -1}, ValueError, "half_open_calls", "-1"),
    (CircuitBreaker, {"success_threshold": -1}, ValueError, "success_threshold", "-1"),
    (CircuitBreaker, {"min_calls": -5}, ValueError, "min_calls", "-5"),
    (CircuitBreaker, {"window": -3}, ValueError, "window", "-3"),
    (CircuitBreaker, {"trial_timeout": -1}, ValueError, "trial_timeout", "-1"),
    (CircuitBreaker, {"reset_timeout": -30}, ValueError, "reset_timeout", "-30"),
    (CircuitBreaker, {"slow_call": 1, "slow_rate": -0.5}, ValueError, "slow_rate", "-0.5"),
    (RetryBudget, {"window": -1}, ValueError, "window", "-1"),
    (enter_deadline, {"seconds": -1}, ValueError, "seconds", "-1"),
    (buttress.RetryPolicy, {"attempts": -1}, ValueError, "attempts", "-1"),
    # ---- huge values (past what the core can hold, or past a float)
    (Backoff, {"base": 1e20, "cap": 1e21}, ValueError, "base", "1e+20"),
    (Backoff, {"seed": 2**64}, ValueError, "seed", str(2**64)),
    (Backoff, {"multiplier": 10**400}, ValueError, "multiplier", "1000000"),
    (buttress.retry, {"attempts": 10**30}, ValueError, "attempts", str(10**30)),
    (buttress.retry, {"deadline": 1e20}, ValueError, "deadline", "1e+20"),
    (buttress.retry, {"deadline": 10**400}, ValueError, "deadline", "1000000"),
    (buttress.retry, {"timeout": 1e300}, ValueError, "timeout", "1e+300"),
    (CircuitBreaker, {"reset_timeout": 1e300}, ValueError, "reset_timeout", "1e+300"),
    (CircuitBreaker, {"slow_call": 1e19}, ValueError, "slow_call", "1e+19"),
    (CircuitBreaker, {"failure_threshold": 2**64}, ValueError, "failure_threshold", str(2**64)),
    (CircuitBreaker, {"half_open_calls": 10**9}, ValueError, "half_open_calls", str(10**9)),
    (CircuitBreaker, {"success_threshold": 70000}, ValueError, "success_threshold", "70000"),
    (CircuitBreaker, {"min_calls": 2**40}, ValueError, "min_calls", str(2**40)),
    (CircuitBreaker, {"window": 2**70}, ValueError, "window", str(2**70)),
    (RetryBudget, {"window": 1e30}, ValueError, "window", "1e+30"),
    # ---- too small to work (a time window holds ten buckets of >= 1 ms)
    (CircuitBreaker, {"window_type": "time", "window": 0.005}, ValueError, "window", "0.005"),
    (RetryBudget, {"window": 0.001}, ValueError, "window", "0.001"),
    (CircuitBreaker, {"reset_timeout": 1e-12}, ValueError, "reset_timeout", "1e-12"),
    # ---- empty names
    (Backoff, {"jitter": ""}, ValueError, "jitter", "''"),
    (CircuitBreaker, {"window_type": ""}, ValueError, "window_type", "''"),
    (CircuitBreaker, {"name": ""}, ValueError, "name", "''"),
    (buttress.retry, {"name": ""}, ValueError, "name", "''"),
    (buttress.RetryPolicy, {"name": ""}, ValueError, "name", "''"),
    (RetryBudget, {"name": ""}, ValueError, "name", "''"),
    # ---- wrong types
    (Backoff, {"cap": 1j}, TypeError, "cap", "1j"),
    (Backoff, {"multiplier": "2"}, TypeError, "multiplier", "'2'"),
    (buttress.retry, {"attempts": True}, TypeError, "attempts", "True"),
    (buttress.retry, {"timeout": "1"}, TypeError, "timeout", "'1'"),
    (buttress.retry, {"budget": RetryBudget}, TypeError, "budget", "RetryBudget"),
    (buttress.retry, {"breaker": CircuitBreaker}, TypeError, "breaker", "CircuitBreaker"),
    (buttress.RetryPolicy, {"backoff": "x"}, TypeError, "backoff", "'x'"),
    (CircuitBreaker, {"failure_threshold": True}, TypeError, "failure_threshold", "True"),
    (CircuitBreaker, {"half_open_calls": "1"}, TypeError, "half_open_calls", "'1'"),
    (CircuitBreaker, {"success_threshold": 1.0}, TypeError, "success_threshold", "1.0"),
    (CircuitBreaker, {"min_calls": None}, TypeError, "min_calls", "None"),
    (CircuitBreaker, {"reset_timeout": "30"}, TypeError, "reset_timeout", "'30'"),
    (CircuitBreaker, {"trial_timeout": [1]}, TypeError, "trial_timeout", "[1]"),
    (CircuitBreaker, {"slow_call": b"1"}, TypeError, "slow_call", "b'1'"),
    (CircuitBreaker, {"window_type": 1}, ValueError, "window_type", "1"),
    (CircuitBreaker, {"reset_backoff": Backoff}, TypeError, "reset_backoff", "Backoff"),
    (CircuitBreaker, {"on": None}, TypeError, "on", "None"),
    (CircuitBreaker, {"exclude": "KeyError"}, TypeError, "exclude", "'KeyError'"),
    (CircuitBreaker, {"exclude": (1,)}, TypeError, "exclude", "1"),
    (RetryBudget, {"ratio": "0.2"}, TypeError, "ratio", "'0.2'"),
    (enter_deadline, {"seconds": "x"}, TypeError, "seconds", "'x'"),
    (first_attempt, {"policy": "x"}, TypeError, "policy", "'x'"),
    (first_attempt, {"on": 5}, TypeError, "on", "5"),
    # ---- non-callables
    (buttress.retry, {"result": 42}, TypeError, "result", "42"),
    (buttress.retry, {"retry_after": "Retry-After"}, TypeError, "retry_after", "'Retry-After'"),
    (buttress.retry, {"sleep": 1.5}, TypeError, "sleep", "1.5"),
    (buttress.retry, {"before_sleep": "log"}, TypeError, "before_sleep", "'log'"),
    (buttress.retry, {"on": (ValueError, "x")}, TypeError, "on", "'x'"),
    (CircuitBreaker, {"fallback": 3}, TypeError, "fallback", "3"),
    (CircuitBreaker, {"on_state_change": "f"}, TypeError, "on_state_change", "'f'"),
    (CircuitBreaker, {"on": object}, TypeError, "on", "object"),
]


def _id(case):
    ctor, kw, *_ = case
    return f"{ctor.__name__}-" + "-".join(f"{k}={v!r}" for k, v in kw.items())


def test_table_is_large_enough_and_covers_every_kind():
    assert len(CASES) >= 40
    values = [v for _, kw, *_ in CASES for v in kw.values()]
    floats = [v for v in values if isinstance(v, float)]
    assert any(math.isnan(v) for v in floats)
    assert any(v == inf for v in floats) and any(v == -inf for v in floats)
    assert any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0
               for v in values)
    assert any(isinstance(v, int) and v >= 2**64 for v in values)      # huge
    assert "" in values                                                   # empty names
    assert any(isinstance(v, str) for v in values)                       # wrong types
    assert any(kw.get(k) is not None and not callable(kw[k]) for _, kw, *_ in CASES
               for k in ("fallback", "sleep", "result", "retry_after", "before_sleep"))


class Existing:
    """Objects built before the bad input: each must still work after it."""

    def __init__(self):
        self.breaker = CircuitBreaker("existing", failure_threshold=2, reset_timeout=60)
        self.budget = RetryBudget(ratio=0.5, min_per_second=100)
        self.backoff = Backoff(base=0.01, seed=7)
        self.expected_delays = self.backoff.delays(4)
        self.calls = 0

        def flaky(n):
            self.calls += 1
            if self.calls % 2:
                raise OSError("every other call fails")
            return n * 2

        self.fn = buttress.retry(attempts=3, backoff=self.backoff, budget=self.budget,
                                 breaker=self.breaker, on=OSError)(flaky)

    def check(self):
        br = self.breaker
        before = br.metrics()
        assert br.state == "closed"
        with buttress.testing() as t:
            assert self.fn(21) == 42          # one failure, one retry, one success
        assert len(t.delays) == 1
        assert br.call(lambda: "ok") == "ok"
        with br:
            pass
        after = br.metrics()
        assert after["calls"] == before["calls"] + 4
        assert after["failures"] == before["failures"] + 1
        assert after["stale"] == before["stale"] and after["rejected"] == before["rejected"]
        assert self.backoff.delays(4) == self.expected_delays
        assert buttress.remaining() is None   # no deadline left behind


@pytest.fixture(scope="module")
def existing():
    return Existing()


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_configuration(case, existing):
    ctor, kw, exc_type, param, shown = case
    existing.check()
    with pytest.raises(exc_type) as info:
        ctor(**kw)
    msg = str(info.value)
    assert param in msg, msg
    assert shown in msg, msg
    existing.check()


def test_nothing_half_built_on_error():
    # A breaker whose construction failed is not registered or usable.
    with pytest.raises(ValueError):
        CircuitBreaker("half-built", failure_threshold=-1)
    assert "half-built" not in buttress._breakers


def test_uninitialised_objects_refuse_use():
    b = Backoff.__new__(Backoff)
    with pytest.raises(RuntimeError):
        b.delays(3)
    br = CircuitBreaker.__new__(CircuitBreaker)
    with pytest.raises(RuntimeError):
        br.allow()


def test_bad_runtime_arguments():
    br = CircuitBreaker()
    with pytest.raises(TypeError, match="ticket"):
        br.record("not a ticket", True)
    other = CircuitBreaker()
    with pytest.raises(ValueError, match="another breaker"):
        br.record(other.allow(), True)
    with pytest.raises(ValueError, match="duration"):
        br.record(br.allow(), True, duration=-1)
    with pytest.raises(ValueError):
        Backoff().delays(-1)
    with pytest.raises(TypeError):
        buttress.testing(clock=3).__enter__()


# ------------------------------------------------------------ misuse at run time
# (name, what to run given the existing objects, exception, words in the message).
# None of them may count as a call of the breaker or the retry policy.

def _used_ticket(x):
    t = x.breaker.allow()
    x.breaker.record(t, True)
    return t


def _closed_call(policy):
    c = policy.begin()
    c.close()
    return c


def _retry_after_returning(value):
    def run(x):
        f = buttress.retry(attempts=2, retry_after=lambda e: value, on=OSError)(
            lambda: (_ for _ in ()).throw(OSError("down")))
        with buttress.testing():
            f()
    return run


def _async(coro_fn):
    def run(x):
        asyncio.run(coro_fn(x))
    return run


RUNTIME = [
    ("record: ok", lambda x: x.breaker.record(x.breaker.allow(), "maybe"), ValueError,
     ["ok", "'maybe'"]),
    ("record: duration nan", lambda x: x.breaker.record(x.breaker.allow(), True, duration=nan),
     ValueError, ["duration", "nan"]),
    ("record: duration inf", lambda x: x.breaker.record(x.breaker.allow(), True, duration=inf),
     ValueError, ["duration", "inf"]),
    ("record: duration huge", lambda x: x.breaker.record(x.breaker.allow(), True,
                                                         duration=10**400),
     ValueError, ["duration"]),
    ("record: duration str", lambda x: x.breaker.record(x.breaker.allow(), True,
                                                        duration="1s"),
     TypeError, ["duration", "'1s'"]),
    ("record: duration bool", lambda x: x.breaker.record(x.breaker.allow(), True,
                                                         duration=True),
     TypeError, ["duration", "True"]),
    ("record: twice", lambda x: x.breaker.record(_used_ticket(x), True), ValueError,
     ["already recorded"]),
    ("record: not a ticket", lambda x: x.breaker.record(None, True), TypeError, ["ticket"]),
    ("call: nothing to call", lambda x: x.breaker.call(), TypeError, ["call()"]),
    ("call: not callable", lambda x: x.breaker.call(42), TypeError, ["fn", "42"]),
    ("policy call: not callable", lambda x: x.fn.retry.call(None), TypeError, ["fn", "None"]),
    ("call_async: not callable", _async(lambda x: x.breaker.call_async("f")), TypeError,
     ["fn", "'f'"]),
    ("decorate: not callable", lambda x: buttress.retry()(42), TypeError, ["callables", "42"]),
    ("breaker decorate: None", lambda x: x.breaker(None), TypeError, ["callables", "None"]),
    ("timeout on a sync function", lambda x: buttress.retry(timeout=1)(len), TypeError,
     ["timeout", "async def"]),
    ("__exit__ without __enter__", lambda x: x.breaker.__exit__(None, None, None),
     RuntimeError, ["__enter__"]),
    ("add_listener: not callable", lambda x: x.breaker.add_listener(3), TypeError,
     ["listener", "3"]),
    ("delays: n str", lambda x: x.backoff.delays("3"), TypeError, ["n", "'3'"]),
    ("delays: n float", lambda x: x.backoff.delays(2.5), TypeError, ["n", "2.5"]),
    ("delays: n negative", lambda x: x.backoff.delays(-1), ValueError, ["n", "-1"]),
    ("delays: n huge", lambda x: x.backoff.delays(10**20), ValueError, ["n", str(10**20)]),
    ("ceiling: n negative", lambda x: x.backoff.ceiling(-1), ValueError, ["n", "-1"]),
    ("ceiling: n 2**32", lambda x: x.backoff.ceiling(2**32), ValueError, ["n", str(2**32)]),
    ("ceiling: n str", lambda x: x.backoff.ceiling("x"), TypeError, ["n", "'x'"]),
    ("retry_after() result negative", _retry_after_returning(-1), ValueError,
     ["retry_after() result", "-1"]),
    ("retry_after() result nan", _retry_after_returning(nan), ValueError,
     ["retry_after() result", "nan"]),
    ("retry_after() result inf", _retry_after_returning(inf), ValueError,
     ["retry_after() result", "inf"]),
    ("retry_after() result str", _retry_after_returning("soon"), TypeError,
     ["retry_after() result", "'soon'"]),
    ("RetryCall.next: retry_after negative", lambda x: x.fn.retry.begin().next(retry_after=-1),
     ValueError, ["retry_after", "-1"]),
    ("RetryCall: used after close", lambda x: _closed_call(x.fn.retry).next(), RuntimeError,
     ["over"]),
    ("RetryCall.failed: not an exception", lambda x: x.fn.retry.begin().failed("boom"),
     TypeError, ["exception", "'boom'"]),
    ("retrying: attempt not entered", lambda x: [None for _ in buttress.retrying()],
     RuntimeError, ["with attempt"]),
    ("testing: clock", lambda x: buttress.testing(clock=3).__enter__(), TypeError,
     ["clock", "3"]),
    ("correlation: id", lambda x: buttress.correlation(5).__enter__(), TypeError,
     ["correlation", "int"]),
]


@pytest.mark.parametrize("case", RUNTIME, ids=[c[0] for c in RUNTIME])
def test_misuse_at_run_time(case, existing):
    name, run, exc_type, words = case
    existing.check()
    before = existing.breaker.metrics()
    with pytest.raises(exc_type) as info:
        run(existing)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    after = existing.breaker.metrics()
    # misuse is not a call of the service: no failure, no rejection
    for k in ("failures", "rejected", "stale", "cancelled"):
        assert after[k] == before[k], k
    assert after["state"] == "closed"
    existing.check()


def test_a_test_clock_below_zero_is_refused_and_changes_nothing(existing):
    br = CircuitBreaker(failure_threshold=1)
    with buttress.testing(clock=lambda: -1.0):
        with pytest.raises(ValueError, match="below zero"):
            br.call(lambda: 1 / 0)   # a failure needs the clock
    assert br.state == "closed" and br.metrics()["failures"] == 0
    assert br.call(lambda: 1) == 1
    existing.check()


# -------------------------------------------------------------- re-entrant use

def test_listener_calling_back_into_the_breaker(existing):
    """A listener may read the breaker, call through it, and move it again:
    no deadlock, each transition reported once, in order."""
    seen = []

    def listener(b, old, new):
        seen.append((old, new))
        m = b.metrics()
        assert m["state"] == b.state
        if new == "open" and len(seen) == 1:
            with pytest.raises(CircuitOpenError):
                b.call(lambda: "rejected")       # the new state holds already
            b.force_open()                        # a transition from inside one
        if new == "forced_open":
            b.reset()

    br = CircuitBreaker(failure_threshold=1, on_state_change=listener)
    with pytest.raises(ZeroDivisionError):
        br.call(lambda: 1 / 0)
    assert seen == [("closed", "open"), ("open", "forced_open"), ("forced_open", "closed")]
    assert br.state == "closed" and br.call(lambda: 5) == 5
    m = br.metrics()
    assert m["transitions"]["closed>open"] == 1 and m["rejected"] == 1
    existing.check()


def test_fallback_calling_the_same_open_breaker_recurses_cleanly(existing):
    """A fallback that calls the guarded function again while the breaker is
    open recurses: a RecursionError, not a crash or a hang; the breaker is
    intact afterwards."""
    br = CircuitBreaker(failure_threshold=1, fallback=lambda exc: guarded())

    @br
    def guarded():
        raise OSError("down")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        with pytest.raises(RecursionError):
            guarded()
    finally:
        sys.setrecursionlimit(limit)
    assert br.state == "open" and br.metrics()["rejected"] > 10
    br.reset()
    with pytest.raises(RecursionError):   # still recursing by design, still clean
        sys.setrecursionlimit(300)
        try:
            guarded()
        finally:
            sys.setrecursionlimit(limit)
    br.reset()
    assert br.call(lambda: "works") == "works"
    existing.check()


def test_retried_function_calling_itself(existing):
    """Each level of a recursive retried function keeps its own attempts; an
    outer deadline bounds the inner calls; unbounded recursion is a
    RecursionError that is not retried (on=OSError) and leaves the policy
    usable."""
    depth_calls = {}
    lefts = []

    @buttress.retry(attempts=2, deadline=30.0, backoff=Backoff(base=0), on=OSError)
    def walk(depth):
        depth_calls[depth] = depth_calls.get(depth, 0) + 1
        lefts.append(buttress.remaining())
        if depth_calls[depth] == 1:
            raise OSError("first try at each level fails")
        return depth if depth == 0 else walk(depth - 1) + 1

    assert walk(4) == 4
    # level d runs twice per attempt of the level above that reaches it
    assert depth_calls == {4: 2, 3: 2, 2: 2, 1: 2, 0: 2}
    assert all(0 < x <= 30.0 for x in lefts) and lefts == sorted(lefts, reverse=True)
    m = walk.metrics()
    assert m["calls"] == 5 and m["successes"] == 5 and m["retries"] == 5

    @buttress.retry(attempts=3, backoff=Backoff(base=0), on=OSError)
    def forever(n):
        return forever(n + 1)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        with pytest.raises(RecursionError):
            forever(0)
    finally:
        sys.setrecursionlimit(limit)
    assert forever.metrics()["retries"] == 0
    assert buttress.remaining() is None
    assert walk(1) == 1
    existing.check()


def test_hooks_calling_back_into_the_same_objects(existing):
    """before_sleep calling the decorated function again, and `on` /
    `exclude` predicates reading the breaker they classify for."""
    br = CircuitBreaker(failure_threshold=3,
                        exclude=lambda e: br.metrics()["calls"] >= 0 and isinstance(e, KeyError),
                        on=lambda e: br.state == "closed" and isinstance(e, OSError))
    nested = []

    def before_sleep(state):
        if state.exception.args[0] == "outer":
            nested.append(f("inner"))   # the same function, from its own hook

    attempts = {}

    def body(tag):
        attempts[tag] = attempts.get(tag, 0) + 1
        if attempts[tag] == 1:
            raise OSError(tag)
        return tag

    f = buttress.retry(attempts=3, breaker=br, before_sleep=before_sleep, on=OSError,
                       backoff=Backoff(base=0.001))(body)
    with buttress.testing():
        assert f("outer") == "outer"
    assert nested == ["inner"] and attempts == {"outer": 2, "inner": 2}
    with pytest.raises(KeyError):
        br.call(lambda: {}["x"])
    m = br.metrics()
    assert m["excluded"] == 1 and m["failures"] == 2 and br.state == "closed"
    existing.check()


def test_with_breaker_inside_its_own_decorated_function(existing):
    br = CircuitBreaker(failure_threshold=2)

    @br
    def outer():
        with br:
            with br:
                return "nested"

    assert outer() == "nested"
    assert br.metrics()["successes"] == 3
    existing.check()
