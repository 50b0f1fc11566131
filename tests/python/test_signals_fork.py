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
