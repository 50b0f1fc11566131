"""Logger "buttress": one structured record per state change, retry and
give-up; no argument values, results or exception messages by default;
correlation ids across threads and asyncio tasks; and the listener rules
(exactly once, after the commit, from the caller, isolated, re-entrant)."""
import asyncio
import contextvars
import logging
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError


class Boom(Exception):
    pass


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fail(*args, **kwargs):
    raise Boom("boom")


class Capture(logging.Handler):
    """Every record of the "buttress" logger, from any thread."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self._lock2 = threading.Lock()

    def emit(self, record):
        with self._lock2:
            self.records.append(record)

    def of(self, event, **fields):
        return [r for r in list(self.records) if getattr(r, "event", None) == event
                and all(getattr(r, k, None) == v for k, v in fields.items())]


@pytest.fixture
def cap():
    log = logging.getLogger("buttress")
    h = Capture()
    old = log.level
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    try:
        yield h
    finally:
        log.removeHandler(h)
        log.setLevel(old)


# --------------------------------------------------------------- records


def test_one_record_per_state_change_with_its_fields(cap):
    name = uniq("sc")
    clk = buttress.FakeClock()
    with buttress.testing(clock=clk), buttress.correlation("req-1"):
        br = CircuitBreaker(name, failure_threshold=2, reset_timeout=1.0)
        for _ in range(2):
            with pytest.raises(Boom):
                br.call(fail)
        clk.advance(1.0)
        br.call(lambda: None)
        br.force_open()
        br.reset()
    recs = cap.of("state_change", breaker=name)
    edges = [(r.old, r.new) for r in recs]
    assert edges == [("closed", "open"), ("open", "half_open"), ("half_open", "closed"),
                     ("closed", "forced_open"), ("forced_open", "closed")]
    assert sum(br.metrics()["transitions"].values()) == len(recs)
    for r in recs:
        assert r.levelno == logging.INFO and r.name == "buttress"
        assert r.correlation_id == "req-1"
        assert name in r.getMessage()


def test_one_record_per_retry_and_per_give_up(cap):
    name = uniq("rt")
    with buttress.testing(), buttress.correlation("req-2"):
        f = buttress.retry(attempts=3, name=name,
                           backoff=buttress.Backoff(base=0.5, jitter="none"))(fail)
        with pytest.raises(Boom):
            f()
    retries = cap.of("retry", retry=name)
    giveups = cap.of("giveup", retry=name)
    assert [r.attempt for r in retries] == [1, 2]
    assert [r.delay for r in retries] == [0.5, 1.0]
    assert all(r.levelno == logging.DEBUG for r in retries)
    assert len(giveups) == 1
    g = giveups[0]
    assert g.levelno == logging.INFO
    assert (g.attempt, g.reason) == (3, "attempts")
    for r in retries + giveups:
        assert r.error_type == "test_logging.Boom"
        assert r.correlation_id == "req-2"
    m = f.metrics()
    assert len(retries) == m["retries"] and len(giveups) == m["giveups_attempts"]


def test_result_driven_retries_log_no_result(cap):
    name = uniq("res")
    with buttress.testing():
        f = buttress.retry(attempts=2, name=name, result=lambda v: True)(
            lambda: "SECRET-RESULT")
        with pytest.raises(buttress.RetryExhausted):
            f()
    recs = cap.of("retry", retry=name) + cap.of("giveup", retry=name)
    assert len(recs) == 2
    assert all(r.error_type is None for r in recs)
    assert_no_secret(recs)


def test_give_up_reasons(cap):
    base = uniq("why")
    with buttress.testing(clock=True):
        late = buttress.retry(attempts=10, deadline=1.0, name=base + "-deadline",
                              backoff=buttress.Backoff(base=0.6, jitter="none"))(fail)
        with pytest.raises(Boom):
            late()
        budget = buttress.RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)
        spent = buttress.retry(attempts=10, name=base + "-budget", budget=budget,
                               backoff=buttress.Backoff(base=0))(fail)
        with pytest.raises(Boom):
            spent()
        # both a deadline and a budget: the one that stopped it is reported
        b2 = buttress.RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)
        both_b = buttress.retry(attempts=10, deadline=100.0, name=base + "-both-b",
                                budget=b2, backoff=buttress.Backoff(base=0))(fail)
        with pytest.raises(Boom):
            both_b()
        b3 = buttress.RetryBudget(ratio=0.0, min_per_second=100.0, window=10.0)
        both_d = buttress.retry(attempts=10, deadline=1.0, name=base + "-both-d",
                                budget=b3,
                                backoff=buttress.Backoff(base=0.6, jitter="none"))(fail)
        for _ in range(2):
            with pytest.raises(Boom):
                both_d()
        # an enclosing deadline counts as the call's deadline
        outer = buttress.retry(attempts=10, name=base + "-outer", budget=b3,
                               backoff=buttress.Backoff(base=0.6, jitter="none"))(fail)
        with buttress.deadline(1.0):
            with pytest.raises(Boom):
                outer()
    got = {r.retry[len(base) + 1:]: r.reason for r in cap.records
           if getattr(r, "event", None) == "giveup" and (r.retry or "").startswith(base)}
    assert got == {"deadline": "deadline", "budget": "budget", "both-b": "budget",
                   "both-d": "deadline", "outer": "deadline"}
    assert both_d.metrics()["giveups_deadline"] == 2
    assert len(cap.of("giveup", retry=base + "-both-d")) == 2


def test_no_time_left_before_the_first_attempt_is_logged(cap):
    name = uniq("late")
    clock = buttress.FakeClock(10.0)
    calls = []
    with buttress.testing(clock=clock):
        inner = buttress.retry(attempts=3, name=name)(lambda: calls.append(1))
        with buttress.deadline(1.0):
            clock.advance(2.0)
            with pytest.raises(buttress.DeadlineExceeded):
                inner()
    assert calls == []
    (g,) = cap.of("giveup", retry=name)
    assert (g.reason, g.attempt, g.error_type) == ("deadline", 0, None)
    assert inner.metrics()["giveups_deadline"] == 1


def test_fused_retry_records_name_the_breaker(cap):
    bname, rname = uniq("fb"), uniq("fr")
    br = CircuitBreaker(bname, failure_threshold=100)
    with buttress.testing():
        f = buttress.retry(attempts=2, breaker=br, name=rname)(fail)
        with pytest.raises(Boom):
            f()
    assert {r.breaker for r in cap.of("retry", retry=rname)} == {bname}


def test_records_are_dropped_cheaply_when_the_level_is_off():
    log = logging.getLogger("buttress")
    h = Capture()
    old = log.level
    log.addHandler(h)
    log.setLevel(logging.WARNING)
    try:
        with buttress.testing():
            f = buttress.retry(attempts=3, name=uniq("quiet"))(fail)
            with pytest.raises(Boom):
                f()
            br = CircuitBreaker(failure_threshold=1)
            with pytest.raises(Boom):
                br.call(fail)
    finally:
        log.removeHandler(h)
        log.setLevel(old)
    assert h.records == []


# --------------------------------------------------------------- no secrets

SECRET = "SECRET"


def assert_no_secret(records):
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for r in records:
        text = fmt.format(r)  # message, and the traceback if there is one
        assert SECRET not in text, text
        for k, v in vars(r).items():
            assert SECRET not in repr(v), (k, v)


def test_no_argument_values_or_exception_messages_by_default(cap):
    def leaky(password, *, token):
        raise ValueError(f"login failed for {password} with {token}")

    with buttress.testing(clock=True), buttress.correlation("c"):
        f = buttress.retry(attempts=3, name=uniq("leak"), deadline=100.0)(leaky)
        with pytest.raises(ValueError):
            f(SECRET + "-pw", token=SECRET + "-tok")
        br = CircuitBreaker(uniq("leakbr"), failure_threshold=2, reset_timeout=1.0)
        g = buttress.retry(attempts=2, breaker=br, name=uniq("leak2"))(leaky)
        with pytest.raises(ValueError):
            g(SECRET, token=SECRET)
        with pytest.raises(CircuitOpenError):
            g(SECRET, token=SECRET)
        fb = CircuitBreaker(uniq("leakfb"), failure_threshold=1,
                            fallback=lambda exc, *a, **k: "fallback")
        assert fb(leaky)(SECRET, token=SECRET) == "fallback"
        with pytest.raises(Boom):
            buttress.retry(attempts=2, name=uniq("leak3"))(fail)(SECRET)

        async def aleaky(password):
            raise ValueError(password)

        async def main():
            h = buttress.retry(attempts=2, name=uniq("aleak"))(aleaky)
            with pytest.raises(ValueError):
                await h(SECRET)

        asyncio.run(main())
    kinds = {getattr(r, "event", None) for r in cap.records}
    assert {"retry", "giveup", "state_change"} <= kinds
    assert_no_secret(cap.records)
    assert {r.error_type for r in cap.records if getattr(r, "event", "") == "retry"} >= {
        "ValueError"}


def test_exception_messages_are_opt_in(cap):
    name = uniq("optin")
    prev = buttress.log_exception_messages(True)
    try:
        with buttress.testing():
            f = buttress.retry(attempts=2, name=name)(fail)
            with pytest.raises(Boom):
                f(SECRET)  # an argument: still never logged
    finally:
        assert buttress.log_exception_messages(prev) is True
    recs = cap.of("retry", retry=name) + cap.of("giveup", retry=name)
    assert len(recs) == 2
    assert all(r.error == "boom" and "boom" in r.getMessage() for r in recs)
    assert_no_secret(recs)
    with buttress.testing():
        f = buttress.retry(attempts=2, name=name + "-off")(fail)
        with pytest.raises(Boom):
            f()
    assert not hasattr(cap.of("retry", retry=name + "-off")[0], "error")


# --------------------------------------------------------------- correlation


def test_correlation_sets_resets_and_nests(cap):
    name = uniq("nest")
    br = CircuitBreaker(name, failure_threshold=1)
    with buttress.correlation("outer"):
        with buttress.correlation() as made:
            assert isinstance(made, str) and len(made) == 32
            with pytest.raises(Boom):
                br.call(fail)
        br.reset()
    br.force_open()
    ids = [r.correlation_id for r in cap.of("state_change", breaker=name)]
    assert ids == [made, "outer", None]
    with pytest.raises(TypeError):
        with buttress.correlation(42):
            pass


def run_failing_retry(name):
    f = buttress.retry(attempts=2, name=name)(fail)
    with pytest.raises(Boom):
        f()


def test_correlation_in_threads_needs_copy_context(cap):
    base = uniq("thr")
    with buttress.testing(), buttress.correlation("parent"):
        plain = threading.Thread(target=run_failing_retry, args=(base + "-plain",))
        plain.start()
        plain.join()
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(run_failing_retry, base + "-copied"))
        copied.start()
        copied.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(contextvars.copy_context().run, run_failing_retry,
                        base + "-pool").result()
    def ids(suffix):
        recs = cap.of("retry", retry=base + suffix) + cap.of("giveup", retry=base + suffix)
        assert len(recs) == 2
        return {r.correlation_id for r in recs}

    assert ids("-plain") == {None}        # a new thread starts with an empty context
    assert ids("-copied") == {"parent"}
    assert ids("-pool") == {"parent"}


def test_each_thread_keeps_its_own_correlation_id(cap):
    base = uniq("own")
    barrier = threading.Barrier(4)

    def worker(i):
        with buttress.correlation(f"t{i}"):
            barrier.wait()
            for j in range(5):
                run_failing_retry(f"{base}-{i}")

    with buttress.testing():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        recs = cap.of("retry", retry=f"{base}-{i}") + cap.of("giveup", retry=f"{base}-{i}")
        assert len(recs) == 10
        assert {r.correlation_id for r in recs} == {f"t{i}"}


def test_correlation_in_asyncio_tasks(cap):
    base = uniq("task")

    async def failing():
        raise Boom("boom")

    async def job(i, br):
        with buttress.correlation(f"task-{i}"):
            f = buttress.retry(attempts=3, name=f"{base}-{i}")(failing)
            with pytest.raises(Boom):
                await f()
            with pytest.raises(Boom):
                async with br:
                    await asyncio.sleep(0)
                    raise Boom("x")

    async def inherited(i):
        await asyncio.sleep(0)
        f = buttress.retry(attempts=2, name=f"{base}-inh")(failing)
        with pytest.raises(Boom):
            await f()

    async def main():
        brs = [CircuitBreaker(f"{base}-br{i}", failure_threshold=1) for i in range(3)]
        await asyncio.gather(*(job(i, brs[i]) for i in range(3)))
        with buttress.correlation("parent"):
            task = asyncio.create_task(inherited(9))  # a task copies the context
        await task

    with buttress.testing():
        asyncio.run(main())
    for i in range(3):
        recs = cap.of("retry", retry=f"{base}-{i}") + cap.of("giveup", retry=f"{base}-{i}")
        assert len(recs) == 3
        assert {r.correlation_id for r in recs} == {f"task-{i}"}
        (sc,) = cap.of("state_change", breaker=f"{base}-br{i}")
        assert sc.correlation_id == f"task-{i}"
    inh = cap.of("retry", retry=f"{base}-inh") + cap.of("giveup", retry=f"{base}-inh")
    assert {r.correlation_id for r in inh} == {"parent"}


# --------------------------------------------------------------- listeners


def test_listener_fires_once_after_the_commit_in_the_callers_thread():
    seen = []

    def listener(b, old, new):
        m = b.metrics()
        seen.append((old, new, b.state, m["state"], m["transitions"][f"{old}>{new}"],
                     threading.get_ident()))

    later = []
    clk = buttress.FakeClock()
    with buttress.testing(clock=clk):
        br = CircuitBreaker(uniq("once"), failure_threshold=1, reset_timeout=1.0,
                            on_state_change=listener)
        br.add_listener(lambda b, o, n: later.append((o, n, b.state)))
        box = {}

        def trip():
            box["ident"] = threading.get_ident()
            with pytest.raises(Boom):
                br.call(fail)

        t = threading.Thread(target=trip)
        t.start()
        t.join()
        clk.advance(1.0)
        assert br.call(lambda: 5) == 5
    me = threading.get_ident()
    assert seen == [("closed", "open", "open", "open", 1, box["ident"]),
                    ("open", "half_open", "half_open", "half_open", 1, me),
                    ("half_open", "closed", "closed", "closed", 1, me)]
    assert later == [("closed", "open", "open"), ("open", "half_open", "half_open"),
                     ("half_open", "closed", "closed")]


def test_raising_listener_is_logged_and_isolated(cap):
    name = uniq("iso")
    ran = []

    def bad(b, old, new):
        raise RuntimeError("listener broke")

    clk = buttress.FakeClock()
    with buttress.testing(clock=clk):
        br = CircuitBreaker(name, failure_threshold=1, reset_timeout=1.0,
                            on_state_change=[bad, lambda b, o, n: ran.append(n)])
        br.add_listener(bad)
        br.add_listener(lambda b, o, n: ran.append(n.upper()))
        with pytest.raises(Boom):          # the caller sees its own exception
            br.call(fail)
        clk.advance(1.0)
        assert br.call(lambda: "value") == "value"  # a normal return, twice listened
    assert ran == ["open", "OPEN", "half_open", "HALF_OPEN", "closed", "CLOSED"]
    errs = cap.of("listener_error", breaker=name)
    assert len(errs) == 6  # bad twice per transition
    assert all(r.levelno == logging.ERROR and r.exc_info for r in errs)
    assert {(r.old, r.new) for r in errs} == {("closed", "open"), ("open", "half_open"),
                                            ("half_open", "closed")}
    assert br.state == "closed"


def test_reentrant_listeners_under_contending_threads_never_deadlock():
    """Listeners that read the breaker, call through it and use allow/record
    while threads race on it: no deadlock, and each transition is seen by
    each listener exactly once (a listener's own calls may make transitions
    too; those are seen as well)."""
    name = uniq("race")
    counts = {}
    lock = threading.Lock()
    handler = Capture()

    callers = set()

    def counting(b, old, new):
        with lock:
            counts[f"{old}>{new}"] = counts.get(f"{old}>{new}", 0) + 1
            callers.add(threading.get_ident())

    def reentrant(b, old, new):
        b.state
        b.metrics()
        try:
            b.call(lambda: None)
        except CircuitOpenError:
            pass
        try:
            t = b.allow()
        except CircuitOpenError:
            return
        b.record(t, random.random() < 0.5)

    br = CircuitBreaker(name, failure_threshold=3, reset_timeout=0.0005, half_open_calls=2,
                        on_state_change=[counting, reentrant])
    log = logging.getLogger("buttress")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for i in range(1500):
                try:
                    if rng.random() < 0.4:
                        br.call(fail)
                    else:
                        br.call(lambda: None)
                except Boom:
                    pass
                except CircuitOpenError:
                    time.sleep(0.0002)  # let the open period pass: more transitions
                if i % 500 == 499 and seed == 0:
                    br.reset()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as much as the GIL allows
    try:
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        alive = [t for t in threads if t.is_alive()]
    finally:
        sys.setswitchinterval(old_switch)
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert not alive, "a re-entrant listener deadlocked"
    assert not errors, errors
    made = {k: v for k, v in br.metrics()["transitions"].items() if v}
    assert made, "the race made no transitions"
    assert counts == made
    assert sum(made.values()) >= 20 and len(callers) >= 2, (made, callers)
    logged = {}
    for r in handler.of("state_change", breaker=name):
        logged[f"{r.old}>{r.new}"] = logged.get(f"{r.old}>{r.new}", 0) + 1
    assert logged == made
