"""nginx reload (SIGHUP) with a breaker in a shared region (issue 7), on a
real nginx with two workers.

On SIGHUP the master reads its configuration again, runs init_by_lua again
in a fresh Lua VM, forks new workers and lets the old ones finish. So:
- a named region is attached again by name: the breaker's state and
  counters survive the reload;
- an anonymous region is made anew by the second init_by_lua: the new
  workers start with a fresh, closed breaker.

    python3 tests/nginx/test_reload.py     (from the repository root, after
                                            `make lua`; or `make test-nginx`)

Ends with "N passed, N failed".
"""

import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Nginx, check_log_clean  # noqa: E402

SERVER = r"""
add_header X-Worker $pid always;
location = /upstream { content_by_lua_block { require("app").upstream() } }
location = /shared {
    access_by_lua_block { require("app_reload").access() }
    proxy_pass http://127.0.0.1:@PORT@/upstream;
    log_by_lua_block { require("app_reload").log() }
}
location = /control { content_by_lua_block { require("app").control() } }
location = /stats { content_by_lua_block { require("app_reload").stats() } }
"""


def http_extra(region_name):
    return 'init_by_lua_block { require("app_reload").init("%s") }' % region_name


def stats(ng):
    status, body, _, _ = ng.get("/stats")
    assert status == 200, (status, body)
    return dict(kv.split("=", 1) for kv in body.split())


def workers(master):
    """The master's child processes (its workers, old ones included while
    they shut down)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # fields: state, ppid, ...
            pids.add(int(entry))
    return pids


def region_maps(pid, region_name):
    """(start, inode) of the shared mappings in pid that may be the region:
    its /dev/shm file, or for an anonymous one, the 1 MiB shared mappings of
    /dev/zero (lua_shared_dict zones are such mappings too)."""
    found = set()
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or "s" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if region_name:
                if parts[5] == "/dev/shm" + region_name:
                    found.add((lo, parts[4]))
            elif parts[5] == "/dev/zero" and hi - lo == 1 << 20:
                found.add((lo, parts[4]))
    return found


def open_breaker(ng):
    assert ng.get("/control?mode=fail")[0] == 200
    for i in range(3):
        st, _, _, _ = ng.get("/shared")
        assert st == 500, "failure %d got %d" % (i + 1, st)
        time.sleep(0.05)  # recorded in log_by_lua, after the response went out
    for _ in range(4):
        assert ng.get("/shared")[0] == 503
    s = stats(ng)
    assert s["state"] == "open" and s["failures"] == "3" and s["rejected"] == "4", s
    return s


def reload(ng):
    """SIGHUP the master (pid from its pid file); wait until only new
    workers are left.  Returns (old workers, new workers)."""
    old = workers(ng.pid)
    assert len(old) == 2, old
    os.kill(ng.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers(ng.pid)
        if len(now) == 2 and not (now & old):
            return old, now
        time.sleep(0.05)
    raise AssertionError("no new workers after SIGHUP: before %s, now %s\n%s"
                         % (old, workers(ng.pid), ng.log()))


def check_reload(ng, survives):
    before = open_breaker(ng)
    assert before["inits"] == "1", before
    old, new = reload(ng)
    for _ in range(6):  # whichever new worker answers
        s = stats(ng)
        assert int(s["pid"]) in new, (s, new)
        assert s["inits"] == "2", s  # init_by_lua ran again, in the master
        if survives:
            assert s["state"] == "open" and s["failures"] == "3", s
            assert int(s["rejected"]) >= 4 and int(s["calls"]) == 3, s
        else:
            assert s["state"] == "closed" and s["failures"] == "0", s
            assert s["calls"] == "0" and s["rejected"] == "0", s
    st, _, headers, _ = ng.get("/shared")
    assert int(headers["X-Worker"]) in new
    if survives:
        assert st == 503, st  # still open in the new workers
    else:
        assert st == 500, st  # a fresh breaker lets the call through
        time.sleep(0.05)
        assert stats(ng)["failures"] == "1"
    return old, new


def check_no_leak(ng, region_name, survives):
    """More reloads: the master unmaps the region of the Lua VM it closes,
    so it never holds more regions than at the start."""
    first = region_maps(ng.pid, region_name)
    if region_name:
        assert len(first) == 1, first
    for n in range(2):
        reload(ng)
        deadline = time.monotonic() + 10
        while True:
            now = region_maps(ng.pid, region_name)
            if len(now) == len(first) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(now) == len(first), (n, first, now)
        inodes = {inode for _, inode in now}
        if region_name:
            assert inodes == {inode for _, inode in first}  # the same object, mapped again
        s = stats(ng)
        assert s["inits"] == str(3 + n), s
        assert s["state"] == ("open" if survives else "closed"), s


def run(label, region_name, survives):
    print("== nginx reload: " + label)
    try:
        ng = Nginx(SERVER, http_extra=http_extra(region_name), workers=2,
                   reuseport=True).start()
    except Exception as e:  # no nginx, or it did not start
        print("FAIL starting nginx: %s" % e)
        return 0, 3
    passed = failed = 0
    try:
        try:
            check_reload(ng, survives)
            what = "survive" if survives else "start fresh"
            print("ok   SIGHUP: the breaker's state and counters %s" % what)
            passed += 1
        except Exception:
            failed += 1
            print("FAIL SIGHUP")
            traceback.print_exc(file=sys.stdout)
            print(ng.log())
        try:
            check_no_leak(ng, region_name, survives)
            print("ok   two more reloads: the master holds no extra mapping")
            passed += 1
        except Exception:
            failed += 1
            print("FAIL two more reloads")
            traceback.print_exc(file=sys.stdout)
        p, f = check_log_clean(ng)
        passed += p
        failed += f
    finally:
        ng.cleanup()
        if region_name:
            try:
                os.unlink("/dev/shm" + region_name)
            except FileNotFoundError:
                pass
    return passed, failed


def main():
    passed = failed = 0
    name = "/buttress-nginx-reload-%d" % os.getpid()
    for label, region_name, survives in (("named region", name, True),
                                         ("anonymous region", "", False)):
        p, f = run(label, region_name, survives)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
