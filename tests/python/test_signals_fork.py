"""Ctrl-C during a backoff sleep (PITFALLS #14, #21) and fork (#21)."""
import os
import signal
import threading
import time

import pytest

import buttress
from buttress import CircuitBreaker


def test_pitfall_21_ctrl_c_during_a_30s_backoff_raises_within_100ms():
    attempts = []

    @buttress.retry(attempts=2, backoff=buttress.Backoff(base=30, cap=30, jitter="none"))
    def f():
        attempts.append(1)
        raise OSError("down")

    sent = []

    def interrupt():
        time.sleep(0.3)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        f()
    latency = time.perf_counter() - sent[0]
    t.join()
    assert latency < 0.1, latency
    assert attempts == [1]  # the interrupt is not retried


def test_pitfall_14_keyboard_interrupt_from_the_call_is_never_retried():
    calls = []

    @buttress.retry(attempts=5)
    def f():
        calls.append(1)
        raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        f()
    assert calls == [1]
    assert f.metrics()["failures"] == 0 and f.metrics()["retries"] == 0


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_pitfall_14_base_exceptions_never_failures_and_give_back_the_permit(exc):
    with buttress.testing(clock=True) as t:
        br = CircuitBreaker(failure_threshold=1, reset_timeout=1)
        br.record(br.allow(), False)
        t.clock.advance(1)

        @buttress.retry(attempts=3, breaker=br)
        def trial():
            raise exc()

        with pytest.raises(exc):
            trial()  # the trial is interrupted: its permit comes back
        assert br.state == "half_open"
        assert br.call(lambda: "next trial") == "next trial"
        assert br.state == "closed"
        m = br.metrics()
    assert m["cancelled"] == 1 and m["failures"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pitfall_21_breaker_keeps_working_in_a_forked_child():
    br = CircuitBreaker(failure_threshold=2)
    guarded = br(lambda x: x * 2)
    assert guarded(2) == 4
    unseeded = buttress.Backoff()
    parent_delays = None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = guarded(3) == 6
            for _ in range(2):
                try:
                    br.call(lambda: 1 / 0)
                except ZeroDivisionError:
                    pass
            ok = ok and br.state == "open"
            try:
                guarded(1)
                ok = False
            except buttress.CircuitOpenError:
                pass
            with buttress.testing():
                ok = ok and buttress.retry()(lambda: 5)() == 5
            os.write(w, repr(unseeded.delays(8)).encode())
            code = 0 if ok else 1
        finally:
            os._exit(code)
    os.close(w)
    child_delays = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    parent_delays = repr(unseeded.delays(8))
    # the child's generator was reseeded: it does not replay the parent's
    assert child_delays != parent_delays
    assert br.state == "closed"  # the child's failures stayed in the child


# ------------------------------------------------ signals during a backoff sleep

class Alarm(Exception):
    """Raised by a SIGALRM handler."""


@pytest.fixture
def alarm():
    """alarm(seconds, exc): SIGALRM after `seconds`; its handler raises exc
    (None: it returns, and the interrupted sleep goes on).  Returns the
    list of times the handler ran."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs setitimer")
    ran = []
    prev = signal.getsignal(signal.SIGALRM)

    def arm(seconds, exc):
        def handler(signum, frame):
            ran.append(time.monotonic())
            if exc is not None:
                raise exc()
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return ran

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, prev)


@pytest.mark.parametrize("form", ["wrapper", "block"])
def test_signal_handler_raising_during_backoff_propagates_and_objects_stay_usable(alarm, form):
    br = CircuitBreaker(failure_threshold=5)
    policy = buttress.RetryPolicy(attempts=3, breaker=br,
                                  backoff=buttress.Backoff(base=5, cap=5, jitter="none"))
    attempts = []

    def down():
        attempts.append(1)
        raise OSError("down")

    ran = alarm(0.2, Alarm)
    t0 = time.monotonic()
    with pytest.raises(Alarm):   # from the handler, out of the 5 s sleep
        if form == "wrapper":
            policy.call(down)
        else:
            for attempt in buttress.retrying(policy=policy):
                with attempt:
                    down()
    assert len(ran) == 1 and time.monotonic() - t0 < 4.0
    assert attempts == [1]                        # not retried after the signal
    m = br.metrics()
    assert m["failures"] == 1 and m["cancelled"] == 0 and br.state == "closed"
    # everything still works: the breaker, the same policy, its counters
    assert br.call(lambda: "ok") == "ok"
    with buttress.testing():
        calls = []

        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise OSError("again")
            return "ok"
        assert policy.call(flaky) == "ok"
    pm = policy.metrics()
    assert pm["calls"] == 2 and pm["successes"] == 1 and pm["retries"] == 2 + 1
    assert br.metrics()["failures"] == 3 and br.metrics()["successes"] == 2


def test_signal_handler_returning_lets_the_backoff_sleep_finish(alarm):
    """PEP 475: a handler that returns does not cut the sleep short; the
    retry then goes on as if nothing happened."""
    calls = []

    @buttress.retry(attempts=2, backoff=buttress.Backoff(base=0.4, cap=0.4, jitter="none"))
    def flaky():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise OSError("once")
        return "ok"

    ran = alarm(0.1, None)
    assert flaky() == "ok"
    assert len(ran) == 1 and len(calls) == 2
    assert calls[1] - calls[0] >= 0.4 - 0.01       # slept the whole delay
    assert flaky.metrics()["retries"] == 1


def test_keyboard_interrupt_from_a_signal_during_a_trial_gives_the_permit_back(alarm):
    """Ctrl-C (here a SIGALRM handler raising KeyboardInterrupt) while a
    half-open trial is running: not retried, not a failure, and the permit
    comes back at once (not after trial_timeout)."""
    br = CircuitBreaker(failure_threshold=1, reset_timeout=0.01, trial_timeout=3600)
    with pytest.raises(ZeroDivisionError):
        br.call(lambda: 1 / 0)
    time.sleep(0.02)
    calls = []

    @buttress.retry(attempts=5, breaker=br, backoff=buttress.Backoff(base=0))
    def trial():
        calls.append(1)
        time.sleep(5)   # interrupted

    alarm(0.2, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        trial()
    assert calls == [1] and br.state == "half_open"
    m = br.metrics()
    assert m["cancelled"] == 1 and m["failures"] == 1
    assert trial.metrics()["retries"] == 0 and trial.metrics()["failures"] == 0
    assert br.call(lambda: "next trial") == "next trial"   # the permit is free
    assert br.state == "closed"


# ------------------------------------------------------------- fork after threads

class Flaky(Exception):
    pass


def _wait_child(pid, limit=30.0):
    """The child's exit status, or fail if it hangs (a deadlock after fork)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} hung for {limit} s")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_while_threads_hammer_a_breaker_child_works_and_exits():
    """Threads keep a breaker flapping (calls, `with`, two steps, retries,
    transitions and their listener) while the main thread forks, five times.
    Each child inherits whatever was in flight, half-open permits of threads
    that do not exist in it included: it must still use the breaker (permits
    expire after trial_timeout), retry, and exit cleanly."""
    import random

    transitions = []
    br = CircuitBreaker(failure_threshold=3, reset_timeout=0.01, half_open_calls=2,
                        trial_timeout=0.05,
                        on_state_change=lambda b, old, new: transitions.append(new))

    def maybe(rnd):
        if rnd.random() < 0.4:
            raise Flaky()
        return 1

    fused = buttress.retry(attempts=3, breaker=br, on=Flaky,
                           backoff=buttress.Backoff(base=0.0005, cap=0.001))(maybe)
    stop = threading.Event()
    errors = []

    def hammer(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                k = rnd.randrange(4)
                try:
                    if k == 0:
                        br.call(maybe, rnd)
                    elif k == 1:
                        with br:
                            maybe(rnd)
                    elif k == 2:
                        br.record(br.allow(), rnd.random() < 0.6)
                    else:
                        fused(rnd)
                except (Flaky, buttress.CircuitOpenError):
                    pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    try:
        for _ in range(5):
            time.sleep(0.05)
            pid = os.fork()
            if pid == 0:  # child: only this thread survives the fork
                code = 3
                try:
                    end = time.monotonic() + 10.0
                    ok = False
                    while not ok and time.monotonic() < end:
                        try:
                            ok = br.call(lambda: "ok") == "ok"
                        except buttress.CircuitOpenError:
                            time.sleep(0.005)
                    code = 4
                    if ok and br.state == "closed":
                        with br:
                            pass
                        n = []

                        def once():
                            n.append(1)
                            if len(n) == 1:
                                raise Flaky()
                            return "again"
                        with buttress.testing():
                            got = buttress.retry(attempts=2, on=Flaky)(once)()
                        m = br.metrics()
                        sums = (m["successes"] + m["failures"] + m["excluded"]
                                + m["cancelled"] + m["stale"])
                        code = 0 if got == "again" and m["calls"] == sums else 5
                finally:
                    os._exit(code)
            status = _wait_child(pid)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        stop.set()
        for th in threads:
            th.join(10)
    assert not errors, errors
    assert transitions, "the threads should have moved the breaker"
    # the parent's breaker is still consistent and usable
    m = br.metrics()
    assert m["calls"] == (m["successes"] + m["failures"] + m["excluded"] + m["cancelled"]
                          + m["stale"])
    deadline = time.monotonic() + 5
    while br.state != "closed" and time.monotonic() < deadline:
        try:
            br.call(lambda: None)
        except buttress.CircuitOpenError:
            time.sleep(0.005)
    assert br.state == "closed"
