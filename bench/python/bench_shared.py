"""A circuit breaker in a shared region next to a private one, from Python
(issue 7); never a test.  Needs only buttress (built in place).

    make python && PYTHONPATH=python python3 bench/python/bench_shared.py [--quick]

1. The success path of a decorated function, `with breaker:` and
   allow()+record(), one process: private breaker vs one in Region(None).
   The variants run in turn within each repetition.
2. allow()+record() for a fixed time by 1 process, by 2 forked processes
   each on a private breaker of its own (what the machine's cores give right
   now), and by 2 forked processes on one shared breaker: total calls per
   second.  (2 threads are not the comparison here: the GIL serialises them.)
"""
import os
import platform
import sys
import time

import buttress

QUICK = "--quick" in sys.argv
REPEAT = 3 if QUICK else 7
RUN_S = 0.2 if QUICK else 0.5


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def per_call(fn, n):
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n * 1e9


def forms(br):
    @br
    def decorated():
        return None

    def deco_loop(n):
        for _ in range(n):
            decorated()

    def with_loop(n):
        for _ in range(n):
            with br:
                pass

    def two_step(n):
        allow, record = br.allow, br.record
        for _ in range(n):
            record(allow(), True)

    return {"decorated call": deco_loop, "with breaker:": with_loop,
            "allow() + record()": two_step}


def hammer(br, seconds):
    """allow+record pairs until `seconds` have passed; the count."""
    allow, record = br.allow, br.record
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            record(allow(), True)
        n += 1000
    return n


def in_processes(br, workers, seconds):
    """calls per second of `workers` forked processes on one breaker (None:
    each process makes a private breaker of its own)."""
    pipes, pids = [], []
    for _ in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            n = hammer(br or buttress.CircuitBreaker("bench-own"), seconds)
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        pipes.append(r)
        pids.append(pid)
    total = 0
    for r, pid in zip(pipes, pids):
        total += int(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
    return total / seconds


def main():
    region = buttress.Region(None)
    private = buttress.CircuitBreaker("bench-private")
    shared = buttress.CircuitBreaker("bench-shared", shared=region)
    fp, fs = forms(private), forms(shared)
    n = 100_000 if QUICK else 300_000
    rows = []
    for name in fp:
        fp[name](n // 10)  # warm-up
        fs[name](n // 10)
        a, b = [], []
        for r in range(REPEAT):
            if r % 2:
                a.append(per_call(fp[name], n))
                b.append(per_call(fs[name], n))
            else:
                b.append(per_call(fs[name], n))
                a.append(per_call(fp[name], n))
        rows.append((name, median(a), median(b), median([y / x for x, y in zip(a, b)])))

    one, own, two = [], [], []
    for r in range(REPEAT):
        one.append(in_processes(shared, 1, RUN_S))
        own.append(in_processes(None, 2, RUN_S))
        two.append(in_processes(shared, 2, RUN_S))
    load = os.getloadavg()[0]
    print("## Shared region, from Python\n")
    print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs; load average "
          f"{load:.2f} at the end; median of {REPEAT} runs.\n")
    print("| success path (ns per call) | private breaker | shared breaker | "
          "shared / private (median of the ratios within each run) |")
    print("|---|---:|---:|---:|")
    for name, a, b, ratio in rows:
        print(f"| {name} | {a:.0f} | {b:.0f} | {ratio:.2f} |")
    print()
    o, w, t = median(one), median(own), median(two)
    print("| allow() + record() (M calls/s total) | 1 process | 2 processes, a private "
          "breaker each | 2 processes, one shared breaker | shared / private |")
    print("|---|---:|---:|---:|---:|")
    print(f"| | {o / 1e6:.2f} | {w / 1e6:.2f} | {t / 1e6:.2f} | {t / w:.2f} |")
    m = shared.metrics()
    assert m["calls"] == m["successes"], m


if __name__ == "__main__":
    main()
