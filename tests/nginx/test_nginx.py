"""A real nginx (Debian nginx + libnginx-mod-http-lua + luajit2) running
the FFI path: a breaker guards an upstream location that fails on command.

    python3 tests/nginx/test_nginx.py      (from the repository root, after
                                            `make lua`; or `make test-nginx`)

Ends with "N passed, N failed".
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Nginx, run_suite  # noqa: E402

SERVER = r"""
location = /upstream { content_by_lua_block { require("app").upstream() } }
location = /proxied {
    access_by_lua_block { require("app").access() }
    proxy_pass http://127.0.0.1:@PORT@/upstream;
    log_by_lua_block { require("app").log() }
}
location = /guarded { content_by_lua_block { require("app").guarded() } }
location = /retry { content_by_lua_block { require("app").retry() } }
location = /ping { content_by_lua_block { require("app").ping() } }
location = /control { content_by_lua_block { require("app").control() } }
location = /stats { content_by_lua_block { require("app").stats() } }
location = /metrics { content_by_lua_block { ngx.print(require("buttress").prometheus()) } }
"""

# Two workers sharing one breaker through a region made before the fork.
SHARED_HTTP = r"""init_by_lua_block { require("app_shared") }"""
SHARED_SERVER = r"""
add_header X-Worker $pid always;
location = /upstream { content_by_lua_block { require("app").upstream() } }
location = /shared {
    access_by_lua_block { require("app_shared").access() }
    proxy_pass http://127.0.0.1:@PORT@/upstream;
    log_by_lua_block { require("app_shared").log() }
}
location = /control { content_by_lua_block { require("app").control() } }
location = /stats { content_by_lua_block { require("app_shared").stats() } }
"""

results = []
shared_results = []


def check(name):
    def deco(fn):
        results.append((name, fn))
        return fn
    return deco


def shared_check(name):
    def deco(fn):
        shared_results.append((name, fn))
        return fn
    return deco


def stats(ng):
    _, body, _, _ = ng.get("/stats")
    return dict(kv.split("=", 1) for kv in body.split())


def mode(ng, m):
    assert ng.get("/control?mode=" + m)[0] == 200


@check("the FFI path is the one loaded in nginx")
def t_backend(ng):
    assert stats(ng)["backend"] == "ffi", stats(ng)


@check("closed breaker passes requests and upstream errors through")
def t_closed(ng):
    mode(ng, "ok")
    st, body, _, _ = ng.get("/proxied")
    assert st == 200 and "upstream ok" in body, (st, body)
    mode(ng, "fail")
    st, _, _, _ = ng.get("/proxied")
    assert st == 500, st
    assert stats(ng)["state"] == "closed"


@check("the breaker opens after the threshold (3 consecutive failures)")
def t_opens(ng):
    for _ in range(2):  # one failure already recorded above
        st, _, _, _ = ng.get("/proxied")
        assert st == 500, st
    assert stats(ng)["state"] == "open", stats(ng)


@check("an open breaker answers a fast 503 without touching the upstream")
def t_fast_503(ng):
    mode(ng, "slow_ok")  # were the upstream reached, this would take 1 s
    before = int(stats(ng)["hits"])
    for _ in range(5):
        st, body, headers, secs = ng.get("/proxied")
        assert st == 503, (st, body)
        assert "circuit open" in body
        assert secs < 0.2, "rejection took %.3f s" % secs
        assert int(headers.get("Retry-After", "0")) >= 1, headers
    assert int(stats(ng)["hits"]) == before, "a rejected request reached the upstream"
    assert int(stats(ng)["rejected"]) >= 5


@check("half-open admits only the configured trials (half_open_calls=2)")
def t_half_open(ng):
    time.sleep(1.1)  # reset_timeout = 1 s
    before = int(stats(ng)["hits"])
    codes = []
    lock = threading.Lock()

    def one():
        st, _, _, _ = ng.get("/proxied")
        with lock:
            codes.append(st)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes.sort()
    assert codes == [200, 200, 503, 503, 503, 503], codes
    assert int(stats(ng)["hits"]) - before == 2, stats(ng)


@check("a successful trial closes the breaker; traffic flows again")
def t_recovered(ng):
    assert stats(ng)["state"] == "closed", stats(ng)
    mode(ng, "ok")
    for _ in range(3):
        st, _, _, _ = ng.get("/proxied")
        assert st == 200, st


@check("/metrics serves the Prometheus text of the named breakers")
def t_metrics(ng):
    st, body, _, _ = ng.get("/metrics")
    assert st == 200, st
    assert 'buttress_breaker_state{breaker="proxied",state="closed"} 1' in body, body[:500]
    assert 'buttress_breaker_transitions_total{breaker="proxied",from="closed",to="open"} 1' in body


@check("br:call guards a subrequest: opens, then rejects with 503")
def t_guarded(ng):
    mode(ng, "ok")
    assert ng.get("/guarded")[0] == 200
    mode(ng, "fail")
    assert ng.get("/guarded")[0] == 502
    assert ng.get("/guarded")[0] == 502
    st, body, _, secs = ng.get("/guarded")
    assert st == 503 and "circuit open" in body, (st, body)
    assert stats(ng)["guarded"] == "open"
    mode(ng, "ok")


@check("a retry sleeping in ngx.sleep leaves the worker serving others")
def t_retry_nonblocking(ng):
    out = {}

    def slow():
        out["r"] = ng.get("/retry", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.05)
    pings = []
    while t.is_alive():
        st, body, _, secs = ng.get("/ping")
        assert st == 200 and "pong" in body
        pings.append(secs)
        time.sleep(0.02)
    t.join()
    st, body, _, secs = out["r"]
    kind, took = body.split()
    assert st == 200 and kind == "exhausted", body
    assert float(took) >= 0.85, "the retry slept only %s s" % took  # 0.3 + 0.6
    assert len(pings) >= 5, "only %d pings answered meanwhile" % len(pings)
    assert max(pings) < 0.25, "a ping waited %.3f s: the worker was blocked" % max(pings)


@shared_check("2 workers, one shared breaker: opens after exactly the threshold")
def t_shared_opens(ng):
    mode(ng, "fail")
    pids = set()
    for i in range(4):
        st, _, headers, _ = ng.get("/shared")
        assert st == 500, "failure %d got %d" % (i + 1, st)
        pids.add(headers.get("X-Worker"))
        time.sleep(0.05)  # recorded in log_by_lua, after the response went out
    # Per-worker breakers would each need 4 failures: with two workers a
    # later request would still reach the upstream.
    for _ in range(12):
        st, _, headers, _ = ng.get("/shared")
        assert st == 503, st
        pids.add(headers.get("X-Worker"))
    ng.shared_pids = pids
    s = stats(ng)
    assert s["state"] == "open" and int(s["failures"]) == 4, s


@shared_check("requests reached both workers (reuseport)")
def t_shared_spread(ng):
    assert len(ng.shared_pids) >= 2, "all requests went to one worker: %s" % ng.shared_pids


@shared_check("2 workers, one shared breaker: half-open admits one trial in all")
def t_shared_half_open(ng):
    mode(ng, "slow_ok")
    time.sleep(1.1)
    before = int(stats(ng)["hits"])
    codes = []
    lock = threading.Lock()

    def one():
        st, _, _, _ = ng.get("/shared")
        with lock:
            codes.append(st)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes.sort()
    assert codes == [200] + [503] * 7, codes
    assert int(stats(ng)["hits"]) - before == 1
    assert stats(ng)["state"] == "closed"


example_results = []


def example_check(name):
    def deco(fn):
        example_results.append((name, fn))
        return fn
    return deco


@example_check("examples/lua/openresty: the documented setup works as written")
def t_example(ng):
    st, body, _, _ = ng.get("/pay/")
    assert st == 200 and "upstream ok" in body, (st, body)
    st, body, _, _ = ng.get("/quote")
    assert st == 200 and "upstream ok" in body, (st, body)
    assert ng.get("/upstream/fail")[0] == 200
    codes = []
    for _ in range(7):
        codes.append(ng.get("/pay/")[0])
        time.sleep(0.05)  # the outcome is recorded in log_by_lua, after the response
    assert codes == [500] * 5 + [503] * 2, codes
    st, _, headers, _ = ng.get("/pay/")
    assert st == 503 and int(headers.get("Retry-After", "0")) >= 1, headers
    st, body, _, secs = ng.get("/quote")  # three attempts, two ngx.sleep waits
    assert st == 503 and "exhausted" in body, (st, body)
    st, body, _, _ = ng.get("/metrics")
    assert 'buttress_breaker_state{breaker="payments",state="open"} 1' in body, body[:400]


def main():
    passed = failed = 0
    suites = [
        ("one worker", lambda: Nginx(SERVER), results),
        ("two workers, shared region",
         lambda: Nginx(SHARED_SERVER, http_extra=SHARED_HTTP, workers=2, reuseport=True),
         shared_results),
    ]
    suites.append(("examples/lua/openresty/nginx.conf",
                   lambda: Nginx.from_conf(os.path.join(REPO, "examples/lua/openresty/nginx.conf"),
                                           REPO),
                   example_results))
    for label, make, checks in suites:
        print("== nginx: " + label)
        try:
            ng = make().start()
        except Exception as e:  # no nginx, or it did not start: its checks fail
            print("FAIL starting nginx: %s" % e)
            failed += len(checks) + 1
            continue
        try:
            p, f = run_suite(ng, checks)
            passed += p
            failed += f
        finally:
            ng.cleanup()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
