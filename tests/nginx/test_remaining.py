"""r:remaining() in a real nginx location (Debian nginx + the lua module,
LuaJIT, the FFI path): per-request deadlines, nesting, the core's monotonic
clock, and the cosocket example examples/lua/openresty/deadline.lua, whose
socket timeouts come from the time the retry has left (issue 6).

    python3 tests/nginx/test_remaining.py   (from the repository root, after
                                             `make lua`)

Ends with "N passed, N failed".  Every bound on elapsed time is generous:
the machine may be busy.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Nginx, run_main  # noqa: E402

SERVER = r"""
location = /slow { content_by_lua_block { require("app_remaining").slow() } }
location = /remaining { content_by_lua_block { require("app_remaining").remaining() } }
location = /nested { content_by_lua_block { require("app_remaining").nested() } }
location = /own { content_by_lua_block { require("app_remaining").own() } }
location = /cosocket { content_by_lua_block { require("app_remaining").cosocket() } }
"""

# Cosocket errors are the point of some checks: keep them out of the error
# log, which must otherwise stay clean.
HTTP = "lua_socket_log_errors off;"
LUA_PATH = os.path.join(REPO, "examples", "lua", "openresty", "?.lua") + ";"

checks = []


def check(name):
    def deco(fn):
        checks.append((name, fn))
        return fn
    return deco


def fields(body):
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}; a leading bare word is 'status'."""
    out = {}
    for i, kv in enumerate(body.split()):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k] = v
        elif i == 0:
            out["status"] = kv
    return out


def num(v):
    return None if v == "nil" else float(v)


def get(ng, path, timeout=15):
    st, body, _, secs = ng.get(path, timeout=timeout)
    assert st == 200, (path, st, body)
    return fields(body), secs


@check("r:remaining() inside the call, nil outside; the FFI path is the one loaded")
def t_remaining(ng):
    f, _ = get(ng, "/remaining?d=2")
    assert f["backend"] == "ffi", f
    assert num(f["outside"]) is None and num(f["after"]) is None, f
    first = num(f["first"])
    assert 1.0 < first <= 2.0, f


@check("remaining() reads the core's monotonic clock, not ngx.now()")
def t_monotonic(ng):
    f, _ = get(ng, "/remaining?d=2")
    # no yield between the two reads: ngx.now() did not move, the core's clock did
    assert f["ngx_same"] == "true", f
    assert num(f["second"]) < num(f["first"]), f


@check("nested retries: the inner deadline is the earlier one, the outer comes back")
def t_nested(ng):
    f, secs = get(ng, "/nested")
    assert 0.5 < num(f["long"]) <= 1.0, f    # inner 30 s, bounded by the outer 1 s
    assert 0.0 < num(f["short"]) <= 0.25, f  # inner 0.25 s: its own
    assert 0.5 < num(f["after"]) <= 1.0, f
    # an inner retry that keeps failing gives up at the outer deadline
    assert f["kind"] == "deadline", f
    assert 0.5 <= num(f["took"]) <= 1.0 + 1.0, f
    assert secs < 5, secs


@check("concurrent requests each see their own deadline")
def t_own(ng):
    deadlines = [1.0, 3.0, 5.0, 7.0]
    out = {}
    lock = threading.Lock()

    def one(d):
        f, _ = get(ng, "/own?d=%g&s=0.3" % d)
        with lock:
            out[d] = num(f["left"])

    threads = [threading.Thread(target=one, args=(d,)) for d in deadlines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in deadlines:
        # 0.3 s slept inside; 1 s of slack for a busy machine
        assert d - 0.3 - 1.0 < out[d] <= d - 0.3 + 0.01, (d, out)


@check("cosocket example: a fast upstream answers through the retry")
def t_cosocket_ok(ng):
    st, body, _, _ = ng.get("/cosocket?ms=0&d=2")
    assert st == 200 and body.startswith("ok slow ok"), body
    assert fields(body)["attempts"] == "1", body


@check("cosocket example: a hanging upstream is cut at the deadline, not 60 s later")
def t_cosocket_deadline(ng):
    f, secs = get(ng, "/cosocket?ms=2500&d=0.5")
    assert f["status"] == "err", f
    # the read timed out when the time ran out; no time for another attempt
    assert f["kind"] == "deadline" and f["cause"] == "receive:_timeout", f
    assert f["attempts"] == "1", f
    assert 0.45 <= num(f["took"]) < 0.5 + 1.0, f
    assert secs < 2.0, secs


@check("cosocket example: failures are retried with the time left, then given up")
def t_cosocket_retries(ng):
    f, _ = get(ng, "/cosocket?ms=0&fail=1&d=5&attempts=3")
    assert f["status"] == "err", f
    assert f["kind"] == "exhausted" and f["cause"] == "status_503", f
    assert f["attempts"] == "3", f


@check("cosocket example: slow attempts share one deadline")
def t_cosocket_shared_deadline(ng):
    # each attempt takes 0.3 s and fails: the 1 s deadline allows about three
    f, secs = get(ng, "/cosocket?ms=300&fail=1&d=1&attempts=10")
    assert f["kind"] == "deadline", f
    assert 2 <= int(f["attempts"]) <= 4, f
    assert num(f["took"]) < 1.0 + 1.0, f


def main():
    return run_main("remaining() and deadlines",
                    lambda: Nginx(SERVER, http_extra=HTTP, lua_path=LUA_PATH).start(), checks)

if __name__ == "__main__":
    sys.exit(main())
