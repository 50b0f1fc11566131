"""Bad configuration raises ValueError or TypeError at construction, naming
the parameter and the bad value; nothing is half-built."""
import math

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, RetryBudget

nan, inf = math.nan, math.inf

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
]


def _id(case):
    ctor, kw, *_ = case
    return f"{ctor.__name__}-" + "-".join(f"{k}={v!r}" for k, v in kw.items())


def test_table_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_configuration(case):
    ctor, kw, exc_type, param, shown = case
    with pytest.raises(exc_type) as info:
        ctor(**kw)
    msg = str(info.value)
    assert param in msg, msg
    assert shown in msg, msg


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
