"""Fault injection (issue 9): retry + breaker + budget in front of

- a flaky in-process dependency on a fake clock (deterministic, thousands of
  calls): errors, timeouts (the dependency honours the timeout it is given,
  as a socket does) and slow calls, seeded;
- a flaky real HTTP server on 127.0.0.1 (http.server in a thread, on a port
  the test asks the OS for, stopped by the test): 500s, connection resets,
  responses slower than the client's timeout, slow responses; driven by
  urllib with socket timeouts from buttress.remaining(), and by asyncio
  streams with timeout=.

What must hold: attempts never exceed `attempts`; no attempt starts at or
after the deadline, and a call ends within its deadline (exactly, on the
fake clock; plus a margin for the scheduler, on the real one); retries never
exceed the budget formula; a breaker opens, then rejects without calling
the dependency and without waiting; slow calls are counted.

Real-time tests use generous margins (the machine may be busy): they check
bounds, never how fast something ran.
"""
import asyncio
import http.server
import random
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque

import pytest

import buttress
from buttress import Backoff, CircuitBreaker, CircuitOpenError, RetryBudget

MS = 1_000_000
# Slack for the scheduler on a busy machine: an attempt whose socket timeout
# is the time left may end this much after the deadline.
MARGIN = 0.75


# ------------------------------------------------------------ in-process

class FlakyDependency:
    """A dependency on a fake clock.  Each call draws a fault: an error
    after 1 ms, a timeout (it would take 500 ms: past the caller's timeout it
    gives up at that timeout, as a socket does), a slow answer (150 ms), or a
    quick one (1 ms).  It keeps what it did, to check against."""

    def __init__(self, clock, seed, error=0.3, timeout=0.15, slow=0.15):
        self.clock = clock
        self.rnd = random.Random(seed)
        self.p = (error, error + timeout, error + timeout + slow)
        self.log = []   # (start_ns, end_ns, what)
        self.healthy = False

    def __call__(self, timeout=None):
        start = self.clock.now_ns
        x = 1.0 if self.healthy else self.rnd.random()
        if x < self.p[0]:
            what, took = "error", 1 * MS
        elif x < self.p[1]:
            what, took = "timeout", 500 * MS
        elif x < self.p[2]:
            what, took = "slow", 150 * MS
        else:
            what, took = "ok", 1 * MS
        if timeout is not None and took > round(timeout * 1e9):
            took, what = round(timeout * 1e9), "timed_out"
        self.clock.now_ns += took
        self.log.append((start, self.clock.now_ns, what))
        if what == "error":
            raise ConnectionError("injected")
        if what in ("timeout", "timed_out"):
            raise TimeoutError("injected")
        return what


@pytest.mark.parametrize("seed", range(4))
def test_in_process_faults_respect_attempts_deadline_budget(seed):
    clock = buttress.FakeClock(start=10.0)
    dep = FlakyDependency(clock, seed)
    # A window longer than the whole run: the formula then bounds the totals.
    budget = RetryBudget(ratio=0.1, min_per_second=0.05, window=3600.0)
    reserve = 0.05 * 3600
    breaker = CircuitBreaker(failure_threshold=0, slow_call=0.1)  # counts, never opens
    attempts_cap, deadline = 4, 0.8
    per_call = []

    @buttress.retry(attempts=attempts_cap, deadline=deadline, budget=budget,
                    breaker=breaker, on=(ConnectionError, TimeoutError),
                    backoff=Backoff(base=0.02, cap=0.4, seed=seed))
    def call():
        per_call[-1].append(clock.now_ns)
        return dep(timeout=buttress.remaining())

    n = 2000
    with buttress.testing(clock=clock):
        for _ in range(n):
            per_call.append([])
            start = clock.now_ns
            try:
                call()
            except (ConnectionError, TimeoutError):
                pass
            starts = per_call[-1]
            assert 1 <= len(starts) <= attempts_cap
            # nothing starts at or after the deadline, and the call ends by it
            assert all(s < start + deadline * 1e9 for s in starts)
            assert clock.now_ns <= start + deadline * 1e9
            clock.advance(0.001)
    m = call.metrics()
    retries = sum(len(s) - 1 for s in per_call)
    assert m["calls"] == n and m["retries"] == retries
    assert retries <= reserve + 0.1 * n            # the budget formula
    assert budget.metrics()["withdrawals"] == retries
    assert m["giveups_budget"] > 0                 # the budget did bind
    assert m["giveups_deadline"] > 0 and m["giveups_attempts"] > 0
    # slow calls: every admitted call is timed (slow_call is set), so the
    # count is exact on the fake clock
    slow = sum(1 for s, e, _ in dep.log if e - s >= 100 * MS)
    assert breaker.metrics()["slow"] == slow > 0
    what = Counter(w for _, _, w in dep.log)
    assert what["timed_out"] > 0 and what["error"] > 0 and what["slow"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_in_process_breaker_opens_and_rejects_without_calling(seed):
    clock = buttress.FakeClock(start=10.0)
    dep = FlakyDependency(clock, seed, error=0.6, timeout=0.2, slow=0.1)
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=2.0, slow_call=0.1)
    budget = RetryBudget(ratio=0.2, min_per_second=1, window=10.0)

    @buttress.retry(attempts=3, deadline=1.0, budget=budget, breaker=breaker,
                    on=(ConnectionError, TimeoutError),
                    backoff=Backoff(base=0.01, cap=0.1, seed=seed))
    def call():
        return dep(timeout=buttress.remaining())

    opened = rejected = 0
    with buttress.testing(clock=clock):
        for i in range(3000):
            if i == 2000:
                dep.healthy = True   # the dependency recovers: the breaker closes
            calls_before, t0 = len(dep.log), clock.now_ns
            until = breaker.metrics()["open_until"]   # None unless open
            try:
                call()
            except CircuitOpenError as e:
                rejected += 1
                assert 0 < e.retry_after <= 2.0 + 0.001
                if until is not None and t0 < until * 1e9:
                    # open when the call came: rejected at once, no call
                    # made, no time spent, told how long to wait
                    assert len(dep.log) == calls_before and clock.now_ns == t0
                    assert e.retry_after == round(until * 1e9 - t0) / 1e9
            except (ConnectionError, TimeoutError):
                pass
            else:
                assert until is None or t0 >= until * 1e9
            if breaker.state == "open":
                opened += 1
            clock.advance(0.05)
    m = breaker.metrics()
    assert m["transitions"]["closed>open"] > 0 and rejected > 0 and opened > 0
    assert m["rejected"] == rejected
    assert breaker.state == "closed"   # closed again after recovering
    assert m["slow"] == sum(1 for s, e, _ in dep.log if e - s >= 100 * MS)


def test_in_process_budget_formula_in_every_window():
    """A short budget window: at every retry, the retries in the window
    (this one included) are within min_per_second * window + ratio * calls."""
    clock = buttress.FakeClock(start=10.0)
    budget = RetryBudget(ratio=0.5, min_per_second=2, window=1.0)
    checked = []

    def before_sleep(state):
        m = budget.metrics()
        assert m["window_retries"] <= 2 * 1.0 + 0.5 * m["window_calls"]
        checked.append(m["window_retries"])

    @buttress.retry(attempts=5, budget=budget, backoff=Backoff(base=0.01, jitter="none"),
                    before_sleep=before_sleep, on=ConnectionError)
    def always_down():
        clock.advance(0.002)
        raise ConnectionError("down")

    with buttress.testing(clock=clock):
        for _ in range(1500):
            with pytest.raises(ConnectionError):
                always_down()
            clock.advance(0.003)
    m = always_down.metrics()
    assert m["giveups_budget"] > 0 and len(checked) == m["retries"] > 0


# ------------------------------------------------------------ real server

class FlakyServer:
    """http.server on 127.0.0.1 in a thread.  Each request takes the next
    behaviour from `plan` (else `default`): "ok", "500", "reset" (the
    connection is closed with RST before any answer), "hang" (answers only
    after `hang` seconds, or when the server stops), "slow" (answers 200
    after `slow` seconds).  `requests` logs (monotonic time, behaviour)."""

    def __init__(self):
        self.plan = deque()
        self.default = "ok"
        self.hang, self.slow = 5.0, 0.3
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    what = outer.plan.popleft() if outer.plan else outer.default
                    outer.requests.append((time.monotonic(), what))
                if what == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if what == "hang" and outer.stopping.wait(outer.hang):
                    return
                if what == "slow":
                    outer.stopping.wait(outer.slow)
                code = 500 if what == "500" else 200
                body = b"boom" if code == 500 else b"ok"
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its timeout): nothing to answer

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128   # many connections at once (asyncio.gather)

            def handle_error(self, request, client_address):
                pass   # resets and timeouts are the point here

        self.httpd = Server(("127.0.0.1", 0), Handler)   # port 0: the OS picks one
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def set(self, *plan, default=None):
        with self.lock:
            self.plan = deque(plan)
            if default is not None:
                self.default = default
            self.requests = []

    def count(self):
        with self.lock:
            return len(self.requests)

    def settled_count(self, expect, limit=5.0):
        """The request count once `expect` have arrived (or `limit` passed):
        a request the client gave up on may reach the handler a moment
        after the client moved on."""
        end = time.monotonic() + limit
        while self.count() < expect and time.monotonic() < end:
            time.sleep(0.01)
        return self.count()


@pytest.fixture
def server():
    s = FlakyServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.stopping.set()
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(10)
    # stopped: the port takes no more connections
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()


# No proxy from the environment for 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url):
    """GET with the time left as the socket timeout."""
    left = buttress.remaining()
    with _opener.open(url, timeout=left if left is not None else 10.0) as r:
        return r.read()


def test_server_retries_500_reset_and_hang_within_attempts_and_deadline(server):
    server.set("500", "reset", "500", "ok", default="ok")
    starts = []

    @buttress.retry(attempts=5, deadline=10.0, on=OSError,
                    backoff=Backoff(base=0.01, cap=0.05))
    def fetch():
        starts.append(buttress.monotonic())
        return http_get(server.url)

    assert fetch() == b"ok"
    assert len(starts) == 4 == server.count()
    m = fetch.metrics()
    assert m["retries"] == 3 and m["successes"] == 1

    # Every attempt fails: exactly `attempts` requests, the last error raised.
    server.set(default="500")
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch()
    assert info.value.code == 500
    assert server.count() == 5 and fetch.metrics()["giveups_attempts"] == 1


@pytest.mark.parametrize("plan", [("hang",), ("500", "hang"), ("reset", "500", "reset", "hang")])
def test_server_deadline_bounds_the_call_and_no_attempt_starts_after_it(server, plan):
    server.set(*plan, default="hang")
    deadline = 1.0
    starts, ends = [], []

    @buttress.retry(attempts=10, deadline=deadline, on=OSError,
                    backoff=Backoff(base=0.05, cap=0.1))
    def fetch():
        now = buttress.monotonic()
        if not starts:
            ends.append(now + buttress.remaining())   # the call's deadline
        starts.append(now)
        return http_get(server.url)

    t0 = time.monotonic()
    with pytest.raises(OSError):   # a socket timeout, as a TimeoutError / URLError
        fetch()
    took = time.monotonic() - t0
    end = ends[0]
    assert all(s < end for s in starts)              # nothing starts after the deadline
    assert took <= deadline + MARGIN                 # the call stops at its deadline
    assert len(starts) <= 10 and server.settled_count(len(starts), 1.0) <= len(starts)
    for at, _ in server.requests:                   # as the server saw them
        assert at < end + MARGIN
    m = fetch.metrics()
    assert m["giveups_deadline"] == 1 and m["giveups_attempts"] == 0


def test_server_budget_caps_retries_across_calls(server):
    server.set(default="500")
    budget = RetryBudget(ratio=0.1, min_per_second=0.05, window=600.0)   # reserve 30
    a = buttress.retry(attempts=5, budget=budget, on=OSError,
                       backoff=Backoff(base=0))(lambda: http_get(server.url))
    b = buttress.retry(attempts=3, budget=budget, on=OSError,
                       backoff=Backoff(base=0))(lambda: http_get(server.url + "b"))
    calls = 0
    for i in range(150):
        calls += 1
        with pytest.raises(urllib.error.HTTPError):
            (a if i % 2 else b)()
    retries = server.count() - calls
    assert retries <= 0.05 * 600 + 0.1 * calls        # 30 + 15: the formula
    assert retries == budget.metrics()["withdrawals"]
    assert a.metrics()["giveups_budget"] + b.metrics()["giveups_budget"] > 0
    # without the budget the same calls would have made 4 * 75 + 2 * 75 retries
    assert retries < 150


def test_server_breaker_opens_then_rejects_fast_without_requests(server):
    server.set(default="500")
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0)

    @buttress.retry(attempts=2, breaker=breaker, on=OSError, backoff=Backoff(base=0))
    def fetch():
        return http_get(server.url)

    with pytest.raises(urllib.error.HTTPError):
        fetch()       # two requests, two failures
    with pytest.raises(CircuitOpenError):
        fetch()       # the third failure opens it: the retry is rejected
    assert breaker.state == "open" and server.count() == 3
    t0 = time.monotonic()
    for _ in range(1000):
        with pytest.raises(CircuitOpenError) as info:
            fetch()
    took = time.monotonic() - t0
    assert server.count() == 3                   # no request while open
    assert 29.0 < info.value.retry_after <= 30.001
    assert took < 2.0, took                      # 1000 rejections: no waiting, no I/O
    assert breaker.metrics()["rejected"] == 1 + 1000   # the second call's retry too


def test_server_slow_calls_are_counted(server):
    server.set("slow", "ok", "slow", "ok", "slow", default="ok")
    server.slow = 0.3
    breaker = CircuitBreaker(failure_threshold=0, slow_call=0.2)
    fetch = breaker(lambda: http_get(server.url))
    for _ in range(5):
        with buttress.deadline(10.0):
            assert fetch() == b"ok"
    m = breaker.metrics()
    # the three slow answers took >= 0.3 s; a quick one may be slow too on
    # a loaded machine, never the other way round
    assert 3 <= m["slow"] <= 5
    assert m["latency"]["max"] >= 0.29 and m["latency"]["count"] == 5


# ------------------------------------------------------- asyncio streams

class HTTPStatus(OSError):
    pass


async def aget(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        if not status:
            raise ConnectionResetError("closed before an answer")
        code = int(status.split()[1])
        if code >= 500:
            raise HTTPStatus(code)
        return await reader.read()
    finally:
        writer.close()


def test_async_streams_timeout_retries_deadline_and_breaker(server):
    server.set("hang", "500", "reset", "ok", default="ok")
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=30.0)
    starts = []

    @buttress.retry(attempts=5, deadline=5.0, timeout=0.3, breaker=breaker,
                    on=(OSError, TimeoutError), backoff=Backoff(base=0.01, cap=0.05))
    async def fetch():
        starts.append(time.monotonic())
        return await aget(server.port)

    t0 = time.monotonic()
    body = asyncio.run(fetch())
    assert body.endswith(b"ok")
    assert len(starts) == 4 == server.settled_count(4)
    # the hanging attempt was cut at its timeout, not at the server's 5 s
    assert starts[1] - starts[0] < 0.3 + MARGIN
    assert time.monotonic() - t0 < 5.0
    assert breaker.metrics()["failures"] == 3 and breaker.state == "closed"

    # Always hanging: attempts, each cut at 0.3 s, all within the deadline
    server.set(default="hang")
    starts.clear()

    @buttress.retry(attempts=3, deadline=2.0, timeout=0.3, on=TimeoutError,
                    backoff=Backoff(base=0.01, cap=0.02))
    async def slow_fetch():
        starts.append(time.monotonic())
        return await aget(server.port)

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(slow_fetch())
    took = time.monotonic() - t0
    assert len(starts) == 3 == server.settled_count(3)
    assert 0.3 * 3 <= took + 0.05 and took < 2.0 + MARGIN
    assert slow_fetch.metrics()["giveups_attempts"] == 1


def test_async_deadline_cuts_the_timeout_and_nothing_starts_after_it(server):
    server.set(default="hang")
    starts, ends = [], []

    @buttress.retry(attempts=20, deadline=1.0, timeout=0.4, on=TimeoutError,
                    backoff=Backoff(base=0.02, cap=0.05))
    async def fetch():
        now = buttress.monotonic()
        if not starts:
            ends.append(now + buttress.remaining())
        starts.append(now)
        return await aget(server.port)

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(fetch())
    took = time.monotonic() - t0
    assert all(s < ends[0] for s in starts)
    assert took <= 1.0 + MARGIN and len(starts) < 20
    assert fetch.metrics()["giveups_deadline"] == 1


def test_async_breaker_opens_and_budget_caps_concurrent_calls(server):
    server.set(default="500")
    breaker = CircuitBreaker(failure_threshold=4, reset_timeout=30.0)
    budget = RetryBudget(ratio=0.1, min_per_second=0.01, window=600.0)   # reserve 6

    @buttress.retry(attempts=4, budget=budget, on=OSError, backoff=Backoff(base=0.001),
                    breaker=breaker)
    async def fetch():
        return await aget(server.port)

    async def main():
        return await asyncio.gather(*(fetch() for _ in range(40)), return_exceptions=True)

    results = asyncio.run(main())
    kinds = Counter(type(r).__name__ for r in results)
    assert set(kinds) <= {"HTTPStatus", "CircuitOpenError"}
    assert kinds["CircuitOpenError"] > 0 and breaker.state == "open"
    m = fetch.metrics()
    # a call ended by a rejection made its last attempt without a request
    assert server.count() == m["attempts"] - kinds["CircuitOpenError"]
    retries = m["retries"]
    assert retries <= 0.01 * 600 + 0.1 * 40
    assert retries == budget.metrics()["withdrawals"]
