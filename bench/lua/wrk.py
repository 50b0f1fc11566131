"""wrk against a private nginx: the same location with and without a
breaker.  Numbers, never a test.

    python3 bench/lua/wrk.py [seconds]      (after `make lua`)
    ROUNDS=7 python3 bench/lua/wrk.py 3     rounds (default 5), seconds per run

Locations: /plain (content_by_lua says "ok") vs /call (the same through
br:call) and /call_simple (through the pure-Lua baseline breaker of
bench/lua/simple_breaker.lua); /proxy vs /proxy_guarded (proxy_pass to a static location over
upstream keepalive, the guarded one with br:allow in access_by_lua and
br:record in log_by_lua; /proxy_hooks and /proxy_ctx split out what the
Lua phase handlers and ngx.ctx cost without any breaker); /plain_again is
/plain under another name: the noise floor.

One worker.  On a machine with two CPUs or more, nginx (master and worker)
is pinned to CPU $NGINX_CPU (default 0) and wrk to CPU $WRK_CPU (default 1)
with taskset, so that the two do not take turns on one CPU.  Each round
runs every location once, the order reversed every other round; each pair
is compared within a round (req/s, and the worker's CPU time per request
from /proc, which other load on the machine moves much less), and the
table gives the median of the per-round ratios with their range.
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "nginx"))
from harness import Nginx  # noqa: E402

HTTP = r"""
upstream self_static { server 127.0.0.1:@PORT@; keepalive 32; }
"""
SERVER = r"""
location = /static { return 200 "ok\n"; }
location = /plain { content_by_lua_block { require("app_bench").plain() } }
location = /plain_again { content_by_lua_block { require("app_bench").plain() } }
location = /call { content_by_lua_block { require("app_bench").call() } }
location = /call_simple { content_by_lua_block { require("app_bench").call_simple() } }
location = /proxy {
    proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_pass http://self_static/static;
}
location = /proxy_hooks {
    access_by_lua_block { require("app_bench").noop() }
    proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_pass http://self_static/static;
    log_by_lua_block { require("app_bench").noop() }
}
location = /proxy_ctx {
    access_by_lua_block { require("app_bench").ctx_access() }
    proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_pass http://self_static/static;
    log_by_lua_block { require("app_bench").ctx_log() }
}
location = /proxy_guarded {
    access_by_lua_block { require("app_bench").access() }
    proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_pass http://self_static/static;
    log_by_lua_block { require("app_bench").log() }
}
"""


TICK = os.sysconf("SC_CLK_TCK")


def worker_cpu(master):
    """CPU seconds (user + system) used so far by nginx's worker processes."""
    total = 0
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        kids = [int(x) for x in f.read().split()]
    for pid in kids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
NGINX_CPU = os.environ.get("NGINX_CPU", "0")
WRK_CPU = os.environ.get("WRK_CPU", "1")


def pin_nginx(master):
    """Pins the master and its workers to NGINX_CPU."""
    if not PIN:
        return
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        kids = [int(x) for x in f.read().split()]
    for pid in [master] + kids:
        subprocess.run(["taskset", "-pc", NGINX_CPU, str(pid)], capture_output=True, check=True)


def wrk(ng, path, secs):
    """(requests per second, worker CPU microseconds per request)"""
    cpu0 = worker_cpu(ng.pid)
    cmd = ["wrk", "-t1", "-c32", "-d%ds" % secs, "http://127.0.0.1:%d%s" % (ng.port, path)]
    if PIN:
        cmd = ["taskset", "-c", WRK_CPU] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    cpu = worker_cpu(ng.pid) - cpu0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError("%s: %s non-2xx responses" % (path, bad.group(1)))
    rps = float(m.group(1)) if m else 0.0
    per = cpu / int(n.group(1)) * 1e6 if n and int(n.group(1)) else float("inf")
    return rps, per


def median(xs):
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rounds = int(os.environ.get("ROUNDS", "5"))
    if not shutil.which("wrk"):
        print("wrk not found")
        return 1
    load0 = loadavg()
    ng = Nginx(SERVER, http_extra=HTTP, lua_path=HERE + "/?.lua;")
    ng.start()
    try:
        pin_nginx(ng.pid)
        pairs = (
            ("/plain", "/plain_again"),      # the same location twice: noise floor
            ("/plain", "/call"),             # br:call in content_by_lua
            ("/plain", "/call_simple"),      # the pure-Lua baseline breaker's call there
            ("/proxy", "/proxy_hooks"),      # empty access/log Lua handlers
            ("/proxy", "/proxy_ctx"),        # hooks passing a value in ngx.ctx, reading ngx.status
            ("/proxy_ctx", "/proxy_guarded"),  # the breaker itself: allow + record
            ("/proxy", "/proxy_guarded"),    # all a user pays
        )
        order = sorted({p for pair in pairs for p in pair})
        for p in order:
            wrk(ng, p, 1)  # warm up: JIT, keepalive pool
        runs = []  # one {path: (rps, cpu)} per round
        for r in range(rounds):
            got = {}
            for p in (order if r % 2 == 0 else order[::-1]):
                got[p] = wrk(ng, p, secs)
            runs.append(got)
    finally:
        ng.cleanup()
    load1 = loadavg()
    print("wrk -t1 -c32 -d%ds, one nginx worker, %d rounds, %s; load average %s before, %s after"
          % (secs, rounds, "nginx on CPU %s, wrk on CPU %s" % (NGINX_CPU, WRK_CPU)
             if PIN else "not pinned", load0, load1))
    print()
    print("| baseline | req/s | worker CPU/req | compared | req/s | worker CPU/req "
          "| cost (req/s): median [range] | cost (CPU): median [range] |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for a, b in pairs:
        # per round: the compared location's throughput lost, and its
        # extra CPU per request (as a throughput cost: 1 - cpu_a / cpu_b)
        c_rps = [(1 - run[b][0] / run[a][0]) * 100 for run in runs]
        c_cpu = [(1 - run[a][1] / run[b][1]) * 100 for run in runs]
        print("| %s | %.0f | %.2f µs | %s | %.0f | %.2f µs | %.1f %% [%.1f, %.1f] | %.1f %% [%.1f, %.1f] |"
              % (a, median([run[a][0] for run in runs]), median([run[a][1] for run in runs]),
                 b, median([run[b][0] for run in runs]), median([run[b][1] for run in runs]),
                 median(c_rps), min(c_rps), max(c_rps), median(c_cpu), min(c_cpu), max(c_cpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
