"""The failure drill: what retries, jitter, budgets and breakers do to a
struggling service.

    python -m buttress.drill            # simulation + AWS jitter experiment + chart
    python -m buttress.drill --real     # the same against a local HTTP server

The simulation runs in virtual time: a downstream service with a fixed number
of workers and a bounded queue goes through phases (healthy, outage,
brownout, recovery) while many clients call it.  Every decision a client
makes (retry or not, how long to wait, may this call go, is there budget
left) is made by the real buttress objects; before each call into buttress
the fake clock is set to the event's time, so the core sees virtual time.
See docs/drill.md for how to read the output.
"""
from __future__ import annotations

import argparse
import contextlib
import heapq
import http.server
import importlib
import json
import math
import random
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional, TextIO

import buttress

__all__ = ["Config", "Phase", "Progress", "STRATEGIES", "Strategy", "aws_experiment", "main",
           "run_real", "simulate", "write_chart"]

# --------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds of virtual time
    end: float
    kind: str  # "healthy" | "outage" (every request fails fast) | "brownout" (slow)


@dataclass(frozen=True)
class Config:
    """The service, the clients and the timeline.  The defaults make a
    service at 60% utilisation whose queue, once full, holds more work than
    a client waits for: the set-up in which retry storms outlive their cause."""

    clients: int = 150
    rate: float = 1.0            # requests per second per client (Poisson)
    workers: int = 25            # concurrent requests the service can work on
    service_time: float = 0.1    # mean seconds of work per request when healthy
    queue_limit: int = 600       # waiting requests; more are refused at once (503)
    timeout: float = 1.0         # a client gives up on an attempt after this
    fail_fast: float = 0.005     # seconds to get a 503 back
    brownout_slowdown: float = 2.0  # service time multiplier in a brownout
    phases: tuple[Phase, ...] = (
        Phase("healthy", 0.0, 30.0, "healthy"),
        Phase("outage", 30.0, 60.0, "outage"),
        Phase("brownout", 60.0, 90.0, "brownout"),
        Phase("recovery", 90.0, 150.0, "healthy"),
    )
    seed: int = 1

    @property
    def duration(self) -> float:
        return self.phases[-1].end

    @property
    def fault_end(self) -> float:
        """End of the last phase that is not healthy."""
        return max((p.end for p in self.phases if p.kind != "healthy"), default=0.0)

    def phase_at(self, t: float) -> str:
        for p in self.phases:
            if p.start <= t < p.end:
                return p.kind
        return "healthy"


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    attempts: int
    jitter: str = "full"
    budget: bool = False
    breaker: bool = False


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("none", "no retry", 1),
    Strategy("naive", "3 attempts, no jitter", 3, jitter="none"),
    Strategy("jitter", "3 attempts, full jitter", 3),
    Strategy("budget", "+ retry budget", 3, budget=True),
    Strategy("breaker", "+ circuit breaker", 3, budget=True, breaker=True),
)

# What each client of the drill uses (one set of objects per client, as each
# client is its own process in real life).  Backoff: buttress's defaults.
BUDGET: dict[str, Any] = dict(ratio=0.1, min_per_second=0.01, window=10.0)
BREAKER: dict[str, Any] = dict(failure_threshold=5, reset_timeout=5.0)

# --------------------------------------------------------------- helpers


class ServiceError(Exception):
    """The service answered 503."""


def percentile(sorted_values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 4)


def _client_seed(seed: int, strategy: int, client: int) -> int:
    # distinct, reproducible streams for every client of every strategy
    return (seed * 1_000_003 + strategy * 10_007 + client) % (2**63)


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal."""

    def __init__(self, total: float, stream: Optional[TextIO] = None,
                 enabled: Optional[bool] = None) -> None:
        self.total = total
        self.done = 0.0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = -1

    def advance(self, amount: float, what: str) -> None:
        self.done += amount
        if not self.enabled:
            return
        pct = int(100 * self.done / self.total) if self.total else 100
        if pct == self._last:
            return
        self._last = pct
        bar = "#" * (pct // 4)
        self.stream.write(f"\r[{bar:<25}] {pct:3d}% {what:<28}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 64 + "\r")
            self.stream.flush()


# --------------------------------------------------------------- simulation


class _Request:
    __slots__ = ("client", "t0", "call")

    def __init__(self, client: int, t0: float, call: Any) -> None:
        self.client = client
        self.t0 = t0
        self.call = call


class _Attempt:
    __slots__ = ("req", "resolved")

    def __init__(self, req: _Request) -> None:
        self.req = req
        self.resolved = False


# event kinds, in the order ties are broken
_ARRIVE, _SEND, _DONE, _WORKER_DONE, _TIMEOUT = range(5)


def _arrivals(cfg: Config) -> list[tuple[float, int]]:
    """Every client's request times (Poisson), merged: the same for every
    strategy so that they face exactly the same demand."""
    rng = random.Random(cfg.seed)
    out: list[tuple[float, int]] = []
    for c in range(cfg.clients):
        t = rng.expovariate(cfg.rate)
        while t < cfg.duration:
            out.append((t, c))
            t += rng.expovariate(cfg.rate)
    out.sort()
    return out


def _policies(cfg: Config, idx: int, s: Strategy) -> tuple[list[Any], list[Any]]:
    policies, breakers = [], []
    for c in range(cfg.clients):
        budget = buttress.RetryBudget(**BUDGET) if s.budget else None
        breaker = (buttress.CircuitBreaker(f"drill-{s.name}-{c}", **BREAKER)
                   if s.breaker else None)
        backoff = buttress.Backoff(jitter=s.jitter, seed=_client_seed(cfg.seed, idx, c))
        policies.append(buttress.RetryPolicy(s.attempts, backoff, budget=budget,
                                             breaker=breaker, name=f"drill-{s.name}"))
        if breaker is not None:
            breakers.append(breaker)
    return policies, breakers


def _simulate_one(cfg: Config, idx: int, s: Strategy, arrivals: list[tuple[float, int]],
                  clock: buttress.FakeClock, progress: Progress) -> dict[str, Any]:
    rng = random.Random(cfg.seed * 7919 + 1)  # service times; same stream for all
    policies, breakers = _policies(cfg, idx, s)
    nbuckets = int(math.ceil(cfg.duration))
    offered = [0] * nbuckets      # attempts that reached the service, per second
    demand = [0] * nbuckets       # client requests started, per second
    ok_by_start = [0] * nbuckets  # ... of which succeeded in the end
    goodput = [0] * nbuckets      # client requests completed successfully, per second
    open_share = [0.0] * nbuckets  # share of clients whose breaker is not closed
    latencies: list[float] = []
    rejected = 0  # attempts a breaker refused (never reached the service)
    giveups: dict[str, int] = {}

    busy = 0
    queue: list[_Attempt] = []
    qhead = 0  # queue is a list with a moving head: cheaper than a deque here
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    timeout_exc, refused_exc = TimeoutError("attempt timed out"), ServiceError("503")
    mean_work = cfg.service_time

    def push(t: float, kind: int, obj: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, kind, seq, obj))

    def start_work(att: _Attempt, t: float) -> None:
        nonlocal busy
        busy += 1
        slow = cfg.brownout_slowdown if cfg.phase_at(t) == "brownout" else 1.0
        # half fixed, half exponential: a floor plus a tail
        work = slow * (mean_work / 2 + rng.expovariate(2.0 / mean_work))
        push(t + work, _WORKER_DONE, att)
        if work > cfg.timeout:
            push(t + cfg.timeout, _TIMEOUT, att)

    def send(req: _Request, t: float) -> None:
        nonlocal rejected
        clock.set(t)
        try:
            req.call.admit()
        except buttress.CircuitOpenError as e:
            rejected += 1
            finish(req, req.call.failed(e), t, ok=False)
            return
        att = _Attempt(req)
        b = int(t)
        if b < nbuckets:
            offered[b] += 1
        if cfg.phase_at(t) == "outage" or len(queue) - qhead >= cfg.queue_limit:
            push(t + cfg.fail_fast, _DONE, att)  # refused at once
        elif busy < cfg.workers:
            start_work(att, t)
        else:
            queue.append(att)
            push(t + cfg.timeout, _TIMEOUT, att)

    def resolve(att: _Attempt, ok: bool, t: float, exc: BaseException) -> None:
        att.resolved = True
        req = att.req
        clock.set(t)
        if ok:
            finish(req, req.call.succeeded(None), t, ok=True)
        else:
            finish(req, req.call.failed(exc), t, ok=False)

    def finish(req: _Request, delay: Optional[float], t: float, ok: bool) -> None:
        if ok:
            latencies.append(t - req.t0)
            b0 = int(req.t0)
            ok_by_start[b0] += 1
            if int(t) < nbuckets:
                goodput[int(t)] += 1
        elif delay is not None:
            push(t + delay, _SEND, req)
        else:
            reason = req.call.reason or "not retried"
            giveups[reason] = giveups.get(reason, 0) + 1

    for t, c in arrivals:
        push(t, _ARRIVE, c)

    next_sample = 0
    step = cfg.duration / 20
    next_tick = step
    while heap:
        t, kind, _, obj = heapq.heappop(heap)
        while next_sample < nbuckets and t >= next_sample:
            # sample the breakers once a (virtual) second
            if breakers:
                clock.set(float(next_sample))
                n = sum(1 for br in breakers if br.state != "closed")
                open_share[next_sample] = n / len(breakers)
            next_sample += 1
        if t >= next_tick:
            progress.advance(step, s.label)
            next_tick += step
        if kind == _ARRIVE:
            clock.set(t)
            req = _Request(obj, t, policies[obj].begin())
            demand[int(t)] += 1
            send(req, t)
        elif kind == _SEND:
            send(obj, t)
        elif kind == _WORKER_DONE:
            busy -= 1
            if qhead < len(queue):
                nxt = queue[qhead]
                qhead += 1
                if qhead > 4096:  # compact now and then
                    del queue[:qhead]
                    qhead = 0
                start_work(nxt, t)
            if not obj.resolved:
                resolve(obj, True, t, timeout_exc)
        elif kind == _DONE:
            if not obj.resolved:
                resolve(obj, False, t, refused_exc)
        else:  # _TIMEOUT
            if not obj.resolved:
                resolve(obj, False, t, timeout_exc)
    progress.advance(max(0.0, cfg.duration + step - next_tick), s.label)

    latencies.sort()
    return _summarise(cfg, s, offered, demand, ok_by_start, goodput, open_share, latencies,
                      rejected, giveups)


def _summarise(cfg: Config, s: Strategy, offered: list[int], demand: list[int],
               ok_by_start: list[int], goodput: list[int], open_share: list[float],
               latencies: list[float], rejected: int, giveups: dict[str, int]) -> dict[str, Any]:
    def window(values: list[int], start: float, end: float) -> int:
        return sum(values[int(start):int(end)])

    outage = [p for p in cfg.phases if p.kind == "outage"]
    amp: Optional[float] = None
    if outage:
        o = outage[0]
        d = window(demand, o.start, o.end)
        amp = window(offered, o.start, o.end) / d if d else None
    # Recovered: from this second on, at least 90% of the requests that
    # start in every second succeed, until the end of the run.
    recover: Optional[float] = None
    first = int(cfg.fault_end)
    for b in range(len(demand) - 1, first - 1, -1):
        if demand[b] and ok_by_start[b] / demand[b] < 0.9:
            break
        recover = b - cfg.fault_end
    if recover is not None and recover >= len(demand) - first - 1:
        recover = None  # never for long enough to tell
    total_req = sum(demand)
    return {
        "name": s.name,
        "label": s.label,
        "requests": total_req,
        "calls": sum(offered),
        "rejected_by_breaker": rejected,
        "amplification_outage": _round(amp),
        "amplification_total": _round(sum(offered) / total_req if total_req else None),
        "successes": len(latencies),
        "success_rate": _round(len(latencies) / total_req if total_req else None),
        "goodput": _round(len(latencies) / cfg.duration),
        "latency_p50": _round(percentile(latencies, 50)),
        "latency_p95": _round(percentile(latencies, 95)),
        "latency_p99": _round(percentile(latencies, 99)),
        "recover_s": _round(recover),
        "giveups": dict(sorted(giveups.items())),
        "series": {"offered": offered, "demand": demand, "goodput": goodput,
                   "breaker_open": [round(x, 4) for x in open_share]},
    }


def simulate(cfg: Config = Config(), strategies: tuple[Strategy, ...] = STRATEGIES,
             progress: Optional[Progress] = None) -> dict[str, Any]:
    """Run every strategy against the same demand; results are a plain
    dict (JSON-ready) that depends only on cfg (its seed included)."""
    arrivals = _arrivals(cfg)
    own = progress is None
    if progress is None:
        progress = Progress(cfg.duration * len(strategies))
    clock = buttress.FakeClock(0.0)
    results = []
    try:
        with buttress.testing(clock=clock):
            for i, s in enumerate(strategies):
                clock.set(0.0)
                results.append(_simulate_one(cfg, i, s, arrivals, clock, progress))
    finally:
        if own:
            progress.close()
    c = asdict(cfg)
    c["phases"] = [asdict(p) for p in cfg.phases]
    return {"config": c, "budget": BUDGET, "breaker": BREAKER,
            "capacity_per_second": round(cfg.workers / cfg.service_time, 3),
            "strategies": results}


# --------------------------------------------------------------- AWS experiment
# 100 clients each want to write one record guarded by optimistic
# concurrency: an attempt reads the version, works for a moment, then writes
# only if nobody else wrote in between.  Losers back off and try again.

AWS_JITTERS = ("none", "equal", "full", "decorrelated")
# The trends the AWS study reported, in our words: without jitter the
# clients retry in lockstep and collide again and again, so they make by far
# the most calls; every jittered schedule breaks the lockstep, and full and
# decorrelated jitter need far fewer calls than none.
AWS_TRENDS = {
    "none": "by far the most calls, slowest to finish",
    "equal": "far fewer calls than none; behind full",
    "full": "among the fewest calls",
    "decorrelated": "among the fewest calls, close to full",
}


def aws_experiment(seed: int = 1, clients: int = 100, trials: int = 10,
                   work: float = 0.1, backoff: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """Mean calls and completion time per jitter mode over `trials` runs.
    Each client drives its own buttress RetryCall (a RetryPolicy with a
    seeded Backoff; buttress's default backoff unless `backoff` is given),
    so the delays are buttress's own, taken in virtual time."""
    bo = dict(base=0.1, multiplier=2.0, cap=10.0) if backoff is None else backoff
    results: dict[str, Any] = {}
    for j, jitter in enumerate(AWS_JITTERS):
        calls = finish = 0.0
        for trial in range(trials):
            c, f = _contend(clients, work, buttress.RetryPolicy(
                1_000_000, buttress.Backoff(**bo, jitter=jitter,
                                            seed=_client_seed(seed, 100 + j, trial))))
            calls += c
            finish += f
        results[jitter] = {"calls": round(calls / trials, 1),
                           "completion": round(finish / trials, 3),
                           "trend": AWS_TRENDS[jitter]}
    return {"clients": clients, "trials": trials, "work": work, "backoff": bo,
            "results": results}


def _contend(clients: int, work: float, policy: buttress.RetryPolicy) -> tuple[int, float]:
    """One race: -> (calls made, time the last client's write landed)."""
    runs = [policy.begin() for _ in range(clients)]
    read = [0] * clients  # the version each client's current attempt read
    version = 0
    # (time, kind, seq, client); at equal times writes go before reads, so
    # an attempt that starts just as another write lands sees that write
    write, read_ev = 0, 1
    heap = [(0.0, read_ev, c, c) for c in range(clients)]  # all start at once
    heapq.heapify(heap)
    seq, calls, finished = clients, 0, 0.0
    while heap:
        t, kind, _, c = heapq.heappop(heap)
        seq += 1
        if kind == read_ev:
            calls += 1
            read[c] = version
            heapq.heappush(heap, (t + work, write, seq, c))
        elif read[c] == version:  # nobody wrote since we read: our write wins
            version += 1
            runs[c].end(True)
            runs[c].close()
            finished = t
        else:  # conflict: buttress says how long to wait
            delay = runs[c].next()
            if delay is None:  # not with this attempt limit
                raise RuntimeError(f"client {c} gave up: {runs[c].reason}")
            heapq.heappush(heap, (t + delay, read_ev, seq, c))
    return calls, finished


# --------------------------------------------------------------- --real
# The same drill against a real HTTP server on 127.0.0.1, scaled down to a
# few seconds per strategy, with real threads calling through the buttress
# decorators.

REAL_BOUND = 30.0  # seconds, everything included


class _Service(http.server.ThreadingHTTPServer):
    """Fails on schedule: phases are fractions of each strategy's run."""

    daemon_threads = True
    allow_reuse_address = False
    # fractions of a run: healthy, outage, brownout, recovery
    SHAPE = (("healthy", 0.2), ("outage", 0.3), ("brownout", 0.2), ("recovery", 0.3))

    def __init__(self, workers: int = 8, queue_limit: int = 4,
                 service_time: float = 0.01) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.workers = threading.Semaphore(workers)
        self.limit = workers + queue_limit
        self.service_time = service_time
        self.lock = threading.Lock()
        self.inflight = 0
        self.t0 = time.monotonic()
        self.length = 1.0
        self.arrivals: list[float] = []  # times (since t0) of requests received

    def restart(self, length: float) -> None:
        with self.lock:
            self.t0, self.length, self.arrivals = time.monotonic(), length, []

    def phase(self, since: float) -> str:
        edge = 0.0
        for name, frac in self.SHAPE:
            edge += frac * self.length
            if since < edge:
                return name
        return "recovery"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Service

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        with srv.lock:
            since = time.monotonic() - srv.t0
            srv.arrivals.append(since)
            phase = srv.phase(since)
            full = srv.inflight >= srv.limit
            if not full and phase != "outage":
                srv.inflight += 1
        if phase == "outage" or full:
            self._reply(503)
            return
        try:
            with srv.workers:
                slow = 10.0 if phase == "brownout" else 1.0
                time.sleep(srv.service_time * slow)
        finally:
            with srv.lock:
                srv.inflight -= 1
        self._reply(200)

    def _reply(self, code: int) -> None:
        body = b"ok\n" if code == 200 else b"unavailable\n"
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up and closed the connection

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


@contextlib.contextmanager
def _serving() -> Iterator[_Service]:
    """The server in a thread, always stopped and its socket closed."""
    srv = _Service()
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                          name="drill-server", daemon=True)
    th.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=5)


def _real_fetch(url: str, s: Strategy, budget: Optional[buttress.RetryBudget],
                breaker: Optional[buttress.CircuitBreaker]) -> Callable[[], bytes]:
    def get() -> bytes:
        left = buttress.remaining()
        tmo = 0.25 if left is None else max(0.001, min(0.25, left))
        with urllib.request.urlopen(url, timeout=tmo) as r:
            return bytes(r.read())

    backoff = buttress.Backoff(base=0.02, cap=0.5, jitter=s.jitter)
    return buttress.retry(attempts=s.attempts, backoff=backoff, deadline=1.0,
                          budget=budget, breaker=breaker, name=f"real-{s.name}")(get)


def run_real(seconds: float = 4.0, threads: int = 16, interval: float = 0.05,
             strategies: tuple[Strategy, ...] = STRATEGIES,
             progress: Optional[Progress] = None) -> dict[str, Any]:
    """Each strategy for `seconds` against the local server; everything is
    bounded by REAL_BOUND seconds and the server is always stopped."""
    hard_end = time.monotonic() + REAL_BOUND
    seconds = min(seconds, (REAL_BOUND - 2.0 * len(strategies)) / max(1, len(strategies)))
    stop = threading.Event()
    results: list[dict[str, Any]] = []
    own = progress is None
    if progress is None:
        progress = Progress(float(len(strategies)))
    port = 0
    try:
        with _serving() as srv:
            port = srv.server_address[1]
            url = f"http://127.0.0.1:{port}/"
            try:
                for s in strategies:
                    if time.monotonic() + seconds > hard_end - 1.0:
                        break  # keep the bound
                    results.append(_real_one(srv, url, s, seconds, threads, interval,
                                             stop, hard_end))
                    progress.advance(1.0, f"--real {s.label}")
            finally:
                stop.set()  # clients first (also on Ctrl-C), then the server
    finally:
        if own:
            progress.close()
    return {"seconds": seconds, "threads": threads, "interval": interval, "port": port,
            "shape": [list(x) for x in _Service.SHAPE], "strategies": results}


def _real_one(srv: _Service, url: str, s: Strategy, seconds: float, threads: int,
              interval: float, stop: threading.Event, hard_end: float) -> dict[str, Any]:
    budget = buttress.RetryBudget(ratio=0.1, min_per_second=1.0, window=1.0) if s.budget else None
    breaker = (buttress.CircuitBreaker(f"real-{s.name}", failure_threshold=5,
                                       reset_timeout=0.25) if s.breaker else None)
    fetch = _real_fetch(url, s, budget, breaker)
    lock = threading.Lock()
    outcomes: list[tuple[float, bool, float]] = []  # (start since t0, ok, latency)
    srv.restart(seconds)
    t0 = srv.t0
    end = min(t0 + seconds, hard_end - 1.0)

    def client(k: int) -> None:
        nxt = t0 + interval * k / threads  # spread the clients' first calls
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                return
            if nxt > now:
                time.sleep(nxt - now)
                continue
            nxt += interval
            start = time.monotonic()
            try:
                fetch()
                ok = True
            except Exception:  # 503, timeouts, open circuit: a failed request
                ok = False
            with lock:
                outcomes.append((start - t0, ok, time.monotonic() - start))

    pool = [threading.Thread(target=client, args=(k,), daemon=True, name=f"drill-client-{k}")
            for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=max(0.1, hard_end - time.monotonic()))
    with srv.lock:
        arrivals = list(srv.arrivals)
    return _real_summary(s, seconds, outcomes, arrivals)


def _real_summary(s: Strategy, seconds: float, outcomes: list[tuple[float, bool, float]],
                  arrivals: list[float]) -> dict[str, Any]:
    edges, e = [], 0.0
    for name, frac in _Service.SHAPE:
        edges.append((name, e, e + frac * seconds))
        e += frac * seconds
    o_start, o_end = next((a, b) for n, a, b in edges if n == "outage")
    fault_end = next(b for n, a, b in edges if n == "brownout")
    in_outage = [x for x in outcomes if o_start <= x[0] < o_end]
    served = sum(1 for a in arrivals if o_start <= a < o_end)
    lat = sorted(x[2] for x in outcomes if x[1])
    # recovered: from then on, 90% of the requests of every tenth of a
    # second succeed
    step = seconds / 40
    recover: Optional[float] = None
    b = seconds
    while b - step >= fault_end - 1e-9:
        chunk = [x for x in outcomes if b - step <= x[0] < b]
        if chunk and sum(x[1] for x in chunk) / len(chunk) < 0.9:
            break
        recover = max(0.0, b - step - fault_end)
        b -= step
    n = len(outcomes)
    return {
        "name": s.name, "label": s.label, "requests": n, "calls": len(arrivals),
        "amplification_outage": _round(served / len(in_outage) if in_outage else None),
        "successes": len(lat), "success_rate": _round(len(lat) / n if n else None),
        "goodput": _round(len(lat) / seconds),
        "latency_p50": _round(percentile(lat, 50)), "latency_p95": _round(percentile(lat, 95)),
        "latency_p99": _round(percentile(lat, 99)), "recover_s": _round(recover),
    }


# --------------------------------------------------------------- output

_COLUMNS = (
    ("strategy", "label", "{}", 24),
    ("calls", "calls", "{:d}", 7),
    ("amp(outage)", "amplification_outage", "{:.2f}", 11),
    ("goodput/s", "goodput", "{:.1f}", 9),
    ("ok %", "success_rate", "{:.1%}", 6),
    ("p50 s", "latency_p50", "{:.3f}", 6),
    ("p95 s", "latency_p95", "{:.3f}", 6),
    ("p99 s", "latency_p99", "{:.3f}", 6),
    ("recover s", "recover_s", "{:.0f}", 9),
)


def format_table(rows: list[dict[str, Any]], recover_fmt: str = "{:.0f}") -> str:
    cols = [(h, k, recover_fmt if k == "recover_s" else f, w) for h, k, f, w in _COLUMNS]
    lines = ["  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
                       for i, (h, _, _, w) in enumerate(cols))]
    lines.append("  ".join("-" * w for _, _, _, w in cols))
    for r in rows:
        cells = []
        for i, (_, k, f, w) in enumerate(cols):
            v = r.get(k)
            text = ("never" if k == "recover_s" else "-") if v is None else f.format(v)
            cells.append(f"{text:<{w}}" if i == 0 else f"{text:>{w}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_aws(aws: dict[str, Any]) -> str:
    lines = [f"{'jitter':<13} {'calls':>8} {'done at s':>10}   published trend",
             f"{'-' * 13} {'-' * 8} {'-' * 10}   {'-' * 44}"]
    for name, r in aws["results"].items():
        lines.append(f"{name:<13} {r['calls']:>8.0f} {r['completion']:>10.1f}   {r['trend']}")
    res = aws["results"]
    lines.append("\nhere: " + ", ".join(
        f"{m} jitter makes {res['none']['calls'] / res[m]['calls']:.1f}x fewer calls"
        for m in ("full", "decorrelated")) + " than none")
    return "\n".join(lines)


def write_chart(sim: dict[str, Any], path: str, dpi: int = 100) -> bool:
    """Offered load, successes and breaker state over time, one line per
    strategy.  False (and nothing written) when matplotlib is missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")  # files only, no display needed
    plt = importlib.import_module("matplotlib.pyplot")
    cfg = sim["config"]
    strategies = sim["strategies"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1.3]})
    colors = ["#7f7f7f", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"]
    shades = {"outage": "#f4c7c3", "brownout": "#fce8b2"}
    for ax in axes:
        for p in cfg["phases"]:
            if p["kind"] in shades:
                ax.axvspan(p["start"], p["end"], color=shades[p["kind"]], alpha=0.6, lw=0)
        ax.grid(alpha=0.3)
    for p in cfg["phases"]:
        axes[0].text((p["start"] + p["end"]) / 2, 1.02, p["name"], ha="center",
                     va="bottom", transform=axes[0].get_xaxis_transform(), fontsize=9)
    for s, color in zip(strategies, colors):
        ser = s["series"]
        xs = [i + 0.5 for i in range(len(ser["offered"]))]
        axes[0].plot(xs, ser["offered"], color=color, lw=1.4, label=s["label"])
        axes[1].plot(xs, ser["goodput"], color=color, lw=1.4, label=s["label"])
        if any(ser["breaker_open"]):
            axes[2].fill_between(xs, [100 * v for v in ser["breaker_open"]], step="mid",
                                 color=color, alpha=0.7, label=s["label"])
    axes[0].axhline(sim["capacity_per_second"], color="black", ls="--", lw=1)
    axes[0].text(1, sim["capacity_per_second"], " capacity", va="bottom", fontsize=8)
    demand = strategies[0]["series"]["demand"]
    axes[1].plot([i + 0.5 for i in range(len(demand))], demand, color="black", ls=":",
                 lw=1, label="client requests")
    # the demand line only; placed where the outage leaves the panel empty
    axes[1].legend(handles=axes[1].get_lines()[-1:], loc="center left",
                   bbox_to_anchor=(0.22, 0.35), fontsize=8)
    axes[0].set_ylabel("calls reaching\nthe service /s")
    axes[1].set_ylabel("successful\nrequests /s")
    axes[2].set_ylabel("breakers\nopen %")
    axes[2].set_ylim(0, 105)
    axes[2].set_xlabel("virtual time (s)")
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    fig.suptitle(f"buttress failure drill: {cfg['clients']} clients, seed {cfg['seed']}",
                 y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": "matplotlib (buttress.drill)"})
    plt.close(fig)
    return True


# --------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m buttress.drill",
        description="A failure drill: retries, jitter, budgets and breakers against a "
                    "struggling service, in virtual time (or --real).")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--clients", type=int, default=Config.clients,
                   help=f"clients calling the service (default {Config.clients})")
    p.add_argument("--out", default="drill.png", help="chart path (default drill.png)")
    p.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-aws", action="store_true", help="skip the AWS jitter experiment")
    p.add_argument("--real", action="store_true",
                   help="run against a local HTTP server with real threads (<= 30 s)")
    p.add_argument("--real-seconds", type=float, default=4.0,
                   help="seconds per strategy with --real (default 4)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1:
        _parser().error("--clients must be at least 1")
    out: dict[str, Any] = {"seed": args.seed}
    if args.real:
        real = run_real(seconds=args.real_seconds)
        out["real"] = real
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"--real: {real['threads']} threads against http://127.0.0.1:"
                  f"{real['port']}/ for {real['seconds']:.1f} s per strategy "
                  "(healthy 20%, outage 30%, brownout 20%, recovery 30%)\n")
            print(format_table(real["strategies"], recover_fmt="{:.2f}"))
        return 0
    cfg = Config(clients=args.clients, seed=args.seed)
    sim = simulate(cfg)
    out["simulation"] = sim
    if not args.no_aws:
        out["aws"] = aws_experiment(seed=args.seed)
    chart: Optional[str] = None
    if not args.no_chart:
        if write_chart(sim, args.out):
            chart = args.out
        else:
            print("matplotlib is not installed, so no chart was drawn; install it with\n"
                  "    python3 -m pip install matplotlib", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    ph = ", ".join(f"{p.name} {p.start:.0f}-{p.end:.0f} s" for p in cfg.phases)
    print(f"Failure drill (virtual time, seed {cfg.seed}): {cfg.clients} clients, "
          f"{cfg.clients * cfg.rate:.0f} requests/s in all,\na service of "
          f"{cfg.workers / cfg.service_time:.0f} requests/s with a queue of "
          f"{cfg.queue_limit}; client timeout {cfg.timeout:g} s.\nPhases: {ph}.\n")
    print(format_table(sim["strategies"]))
    print("\ncalls: attempts that reached the service; amp(outage): those calls per "
          "client request\nduring the outage; recover s: after the brownout ends, until "
          "90% of requests succeed.")
    if "aws" in out:
        aws = out["aws"]
        print(f"\nAWS jitter experiment: {aws['clients']} clients write one record each "
              f"with optimistic\nconcurrency (one write wins per race), mean of "
              f"{aws['trials']} runs, buttress default backoff:\n")
        print(format_aws(aws))
    if chart:
        print(f"\nchart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
