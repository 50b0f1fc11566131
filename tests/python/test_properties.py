"""Property tests (hypothesis): the binding agrees with a small model."""
from hypothesis import given, settings
from hypothesis import strategies as st

import buttress

configs = st.fixed_dictionaries({
    "base": st.floats(0, 5, allow_nan=False),
    "multiplier": st.floats(1, 1e6, allow_nan=False),
    "extra_cap": st.floats(0, 100, allow_nan=False),
    "jitter": st.sampled_from(["none", "full", "equal", "decorrelated"]),
    "seed": st.integers(0, 2**64 - 1),
})


@settings(max_examples=200, deadline=None)
@given(configs, st.integers(1, 300))
def test_delays_stay_within_zero_and_cap(c, n):
    cap = c["base"] + c["extra_cap"]
    b = buttress.Backoff(base=c["base"], multiplier=c["multiplier"], cap=cap,
                         jitter=c["jitter"], seed=c["seed"])
    ds = b.delays(n)
    assert len(ds) == n
    assert all(0.0 <= d <= cap + 1e-9 for d in ds)
    assert ds == b.delays(n)  # seeded: reproducible
    if c["jitter"] == "none":
        assert ds == sorted(ds)  # non-decreasing up to the cap


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(0, 25))
def test_retry_attempts_match_the_model(attempts, failures):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise OSError()
        return "ok"

    with buttress.testing() as t:
        f = buttress.retry(attempts=attempts, backoff=buttress.Backoff(base=0.001))(fn)
        try:
            result = f()
        except OSError:
            result = None
    expect_calls = min(attempts, failures + 1)
    assert len(calls) == expect_calls
    assert (result == "ok") == (failures < attempts)
    assert len(t.delays) == expect_calls - 1
    m = f.metrics()
    assert m["attempts"] == expect_calls and m["retries"] == expect_calls - 1
    assert m["giveups_attempts"] == (0 if failures < attempts else 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "excluded"]), max_size=60),
       st.integers(1, 6))
def test_breaker_streak_matches_the_model(outcomes, threshold):
    br = buttress.CircuitBreaker(failure_threshold=threshold, reset_timeout=1000,
                                 exclude=KeyError)
    streak, opened = 0, False
    for o in outcomes:
        try:
            tk = br.allow()
        except buttress.CircuitOpenError:
            assert opened
            continue
        assert not opened
        br.record(tk, {"ok": True, "fail": False, "excluded": "excluded"}[o])
        if o == "ok":
            streak = 0
        elif o == "fail":
            streak += 1
            if streak >= threshold:
                opened = True
    assert br.state == ("open" if opened else "closed")


outcome = st.sampled_from(["ok", "retry", "fatal", "bad-result"])


def untimed(m):
    """Metrics without what depends on the real clock: the measured latency
    and the calls per second."""
    return {k: untimed(v) if isinstance(v, dict) else v
            for k, v in m.items() if k not in ("calls_per_second", "latency")}


@settings(max_examples=150, deadline=None)
@given(st.lists(outcome, min_size=1, max_size=8), st.integers(1, 6), st.booleans())
def test_c_and_python_async_drivers_agree(script, attempts, fused):
    """The awaitable driven in C and the async def driver make the same
    calls, sleeps and counts for any sequence of attempt outcomes."""
    import asyncio

    def make():
        steps = iter(script + ["ok"] * 10)

        async def fn():
            s = next(steps)
            if s == "retry":
                raise OSError("again")
            if s == "fatal":
                raise KeyError("no")
            return None if s == "bad-result" else "value"
        return fn

    class Callable:  # a callable object takes the async def path
        def __init__(self, fn):
            self.fn = fn

        async def __call__(self):
            return await self.fn()

    def run(target):
        br = buttress.CircuitBreaker("same", failure_threshold=0) if fused else None
        w = buttress.retry(attempts=attempts, on=OSError, result=lambda v: v is None,
                           breaker=br, backoff=buttress.Backoff(base=0.001, jitter="none"))(
            target)
        with buttress.testing() as t:
            try:
                got = ("value", asyncio.run(w()))
            except BaseException as e:
                got = ("raised", type(e).__name__)
        return got, t.delays, untimed(w.metrics())

    c_side = run(make())
    py_side = run(Callable(make()))
    assert c_side == py_side


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["ok", "retry", "fatal"]), min_size=1, max_size=8),
       st.integers(1, 6), st.booleans())
def test_sync_wrapper_and_block_form_agree(script, attempts, fused):
    def make():
        steps = iter(script + ["ok"] * 10)

        def fn():
            s = next(steps)
            if s == "retry":
                raise OSError("again")
            if s == "fatal":
                raise KeyError("no")
            return "value"
        return fn

    def run(use_block):
        br = buttress.CircuitBreaker("same", failure_threshold=0) if fused else None
        kw = dict(attempts=attempts, on=OSError, breaker=br,
                  backoff=buttress.Backoff(base=0.001, jitter="none"))
        fn = make()
        with buttress.testing() as t:
            try:
                if use_block:
                    policy = buttress.RetryPolicy(**kw)
                    for attempt in buttress.retrying(policy=policy):
                        with attempt:
                            got = ("value", fn())
                    metrics = policy.metrics()
                else:
                    w = buttress.retry(**kw)(fn)
                    try:
                        got = ("value", w())
                    finally:
                        metrics = w.metrics()
            except BaseException as e:
                got = ("raised", type(e).__name__)
                if use_block:
                    metrics = policy.metrics()
        return got, t.delays, untimed(metrics)

    assert run(False) == run(True)
