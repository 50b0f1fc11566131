"""wrk against a private nginx: the same location with and without a
breaker.  Numbers, never a test.

    python3 bench/lua/wrk.py [seconds]      (after `make lua`)

Locations: /plain (content_by_lua says "ok") vs /call (the same through
br:call); /proxy vs /proxy_guarded (proxy_pass to a static location over
upstream keepalive, the guarded one with br:allow in access_by_lua and
br:record in log_by_lua; /proxy_hooks and /proxy_ctx split out what the
Lua phase handlers and ngx.ctx cost without any breaker).  One worker; rounds alternate the order and the
best of each is kept: req/s, and the worker's CPU time per request (from
/proc), which other load on the machine barely moves.
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


def wrk(ng, path, secs):
    """(requests per second, worker CPU microseconds per request)"""
    cpu0 = worker_cpu(ng.pid)
    out = subprocess.run(["wrk", "-t1", "-c32", "-d%ds" % secs,
                          "http://127.0.0.1:%d%s" % (ng.port, path)],
                         capture_output=True, text=True).stdout
    cpu = worker_cpu(ng.pid) - cpu0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError("%s: %s non-2xx responses" % (path, bad.group(1)))
    rps = float(m.group(1)) if m else 0.0
    per = cpu / int(n.group(1)) * 1e6 if n and int(n.group(1)) else float("inf")
    return rps, per


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(os.environ.get("ROUNDS", "4"))
    if not shutil.which("wrk"):
        print("wrk not found")
        return 1
    ng = Nginx(SERVER, http_extra=HTTP, lua_path=HERE + "/?.lua;")
    ng.start()
    try:
        rows = []
        pairs = (
            ("/plain", "/plain_again"),      # the same location twice: noise floor
            ("/plain", "/call"),             # br:call in content_by_lua
            ("/proxy", "/proxy_hooks"),      # empty access/log Lua handlers
            ("/proxy", "/proxy_ctx"),        # hooks passing a value in ngx.ctx, reading ngx.status
            ("/proxy_ctx", "/proxy_guarded"),  # the breaker itself: allow + record
            ("/proxy", "/proxy_guarded"),    # all a user pays
        )
        best, cpu = {}, {}
        for p in {p for pair in pairs for p in pair}:
            wrk(ng, p, 1)  # warm up: JIT, keepalive pool
            best[p], cpu[p] = 0.0, float("inf")
        order = sorted(best)
        for r in range(rounds):
            for p in (order if r % 2 == 0 else order[::-1]):
                rps, per = wrk(ng, p, secs)
                best[p] = max(best[p], rps)
                cpu[p] = min(cpu[p], per)
        # On a shared machine req/s swings with other load; the worker's own
        # CPU time per request does not, and a CPU-bound worker's throughput
        # is its inverse: the cost column comes from it.
        print("wrk -t1 -c32 -d%ds, one nginx worker, best of %d rounds" % (secs, rounds))
        print()
        print("| baseline | req/s | worker CPU/req | compared | req/s | worker CPU/req | cost (CPU) | cost (req/s) |")
        print("|---|---:|---:|---|---:|---:|---:|---:|")
        for a, b in pairs:
            c_cpu = (1 - cpu[a] / cpu[b]) * 100
            c_rps = (1 - best[b] / best[a]) * 100 if best[a] else float("nan")
            print("| %s | %.0f | %.2f µs | %s | %.0f | %.2f µs | %.1f %% | %.1f %% |"
                  % (a, best[a], cpu[a], b, best[b], cpu[b], c_cpu, c_rps))
    finally:
        ng.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
