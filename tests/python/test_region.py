"""Shared-memory regions from Python (issue 7): one breaker, one budget for
all the processes of a server.

Children are forked with os.fork and driven through pipes (one pair per
child), so the parent decides when each step runs and every child reports
what it saw; a child that fails prints its traceback and exits non-zero.
Time is a fake clock kept in shared memory (buttress.testing(clock=...)
installed before the fork), so every process reads the same time and
nothing depends on how fast this machine runs.  Region names carry the
test's pid and are unlinked at teardown.
"""
import ctypes
import errno
import gc
import mmap
import os
import pickle
import random
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
import weakref

import pytest

import buttress
from buttress import CircuitBreaker, CircuitOpenError, Region, RegionError, RetryBudget

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

NOBODY = 65534
TIMEOUT = 120.0  # seconds a child may take to answer before the test fails
QUIT = "__quit__"

# ------------------------------------------------------------------ helpers


def _send(fd, obj):
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<I", len(data)) + data)


def _read_exact(fd, n, timeout):
    buf = b""
    while len(buf) < n:
        if timeout is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError("no answer from the child in %.0f s" % timeout)
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(fd, timeout=None):
    head = _read_exact(fd, 4, timeout)
    if head is None:
        return None
    data = _read_exact(fd, struct.unpack("<I", head)[0], timeout)
    if data is None:
        return None
    return pickle.loads(data)


class Child:
    """A forked process answering commands: serve(cmd) -> reply, until the
    parent closes its end.  The child exits 0 only when nothing raised."""

    def __init__(self, serve, live):
        c_r, p_w = os.pipe()
        p_r, c_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(p_w)
                os.close(p_r)
                for other in live:  # the other children's pipes are theirs
                    for fd in (other.r, other.w):
                        if fd is not None:
                            os.close(fd)
                while True:
                    cmd = _recv(c_r)
                    if cmd is None or cmd == QUIT:
                        code = 0
                        break
                    _send(c_w, (serve(cmd),))  # a 1-tuple: None is a reply too
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(c_r)
        os.close(c_w)
        self.pid, self.r, self.w = pid, p_r, p_w
        live.append(self)

    def send(self, cmd):
        _send(self.w, cmd)

    def recv(self):
        reply = _recv(self.r, TIMEOUT)
        if reply is None:
            raise AssertionError("child %d died (see its traceback above)" % self.pid)
        return reply[0]

    def ask(self, cmd):
        self.send(cmd)
        return self.recv()

    def finish(self):
        """Close the pipes, wait for the child; its exit status must be 0."""
        if self.w is not None:
            _send(self.w, QUIT)
            os.close(self.w)
            self.w = None
        status = self._wait()
        os.close(self.r)
        self.r = None
        assert os.waitstatus_to_exitcode(status) == 0, "child %d failed" % self.pid

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self._wait()
        os.close(self.w)
        os.close(self.r)
        self.w = self.r = None

    def _wait(self):
        deadline = time.monotonic() + TIMEOUT
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                return status
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError("child %d did not exit" % self.pid)
            time.sleep(0.002)


def ask_all(children, cmd):
    """Send to every child first, then collect: the children run at once."""
    for c in children:
        c.send(cmd)
    return [c.recv() for c in children]


class SharedClock:
    """A fake monotonic clock in shared memory: forked children see the
    parent's moves, and each other's.  One aligned 8-byte word read and
    written whole (ctypes), so a child killed while moving it never leaves
    half a value behind (struct.pack_into writes byte by byte)."""

    def __init__(self, start=1000.0):
        self.mem = mmap.mmap(-1, 8)
        self.ns = ctypes.c_int64.from_buffer(self.mem)
        self.set(start)

    def __call__(self):
        return self.ns.value / 1e9

    def set(self, seconds):
        self.ns.value = round(seconds * 1e9)

    def advance(self, seconds):
        self.set(self() + seconds)


@pytest.fixture
def live():
    """Children still running at teardown are killed (a failed test)."""
    children = []
    yield children
    for c in children:
        if c.pid is not None:
            try:
                os.kill(c.pid, signal.SIGKILL)
                os.waitpid(c.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@pytest.fixture
def clock():
    clk = SharedClock()
    with buttress.testing(clock=clk):
        yield clk


@pytest.fixture
def shm_name():
    """Unique region names; each is unlinked at teardown."""
    names = []

    def make(tag="r"):
        name = "/buttress-pytest-%d-%s-%d" % (os.getpid(), tag, len(names))
        names.append(name)
        return name

    yield make
    for n in names:
        try:
            buttress.unlink_region(n)
        except OSError:
            pass


def shm_path(name):
    return "/dev/shm" + name


# ------------------------------------------------------- counters, budgets


def test_four_processes_250k_operations_every_counter_exact(live):
    n = 250_000
    region = Region(None)
    br = CircuitBreaker("exact", shared=region, failure_threshold=0)  # never opens

    @br
    def ok():
        return 1

    def work(cmd):
        # Every form at once: two-step, decorator, `with`, excluded.
        for i in range(n // 4):
            t = br.allow()
            br.record(t, False)
            ok()
            with br:
                pass
            t = br.allow()
            br.record(t, "excluded")
        return br.metrics()["calls"]

    kids = [Child(work, live) for _ in range(4)]
    seen = ask_all(kids, "go")
    for c in kids:
        c.finish()
    m = br.metrics()
    assert m["calls"] == 4 * n
    assert m["successes"] == 2 * n
    assert m["failures"] == n
    assert m["excluded"] == n
    assert m["stale"] == m["rejected"] == m["cancelled"] == 0
    assert m["state"] == "closed"
    assert max(seen) <= 4 * n and min(seen) >= n  # each saw the others' calls too


def test_shared_budget_is_exact_across_processes(live, clock):
    # Within one window: at most min_per_second * window + ratio * calls.
    region = Region(None)
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, window=10.0, name="retries",
                         shared=region)
    deposits, attempts = 1000, 1500
    limit = 10 + 0.5 * 4 * deposits

    def work(cmd):
        if cmd == "deposit":
            for _ in range(deposits):
                budget.deposit()
            return None
        return sum(budget.withdraw() for _ in range(attempts))

    kids = [Child(work, live) for _ in range(4)]
    ask_all(kids, "deposit")
    got = ask_all(kids, "withdraw")
    for c in kids:
        c.finish()
    m = budget.metrics()
    assert m["deposits"] == 4 * deposits
    assert m["withdrawals"] == sum(got) <= limit
    assert m["withdrawals"] + m["rejections"] == 4 * attempts
    # A race may refuse a retry that would have fitted, never admit one too
    # many: what is left is exactly the rest of the budget.
    while budget.withdraw():
        pass
    assert budget.metrics()["withdrawals"] == limit


def test_half_open_admits_exactly_k_trials_across_processes(live, clock):
    k, rounds = 3, 1000
    region = Region(None)
    br = CircuitBreaker("trials", shared=region, failure_threshold=1, reset_timeout=1.0,
                        half_open_calls=k)
    held = []

    def work(cmd):
        if cmd == "try":  # every child asks for 3 trials and keeps what it gets
            for _ in range(3):
                try:
                    held.append(br.allow())
                except CircuitOpenError:
                    pass
            return len(held)
        counted = sum(br.record(t, cmd == "succeed") for t in held)
        held.clear()
        return counted

    kids = [Child(work, live) for _ in range(4)]
    for r in range(rounds):
        if br.state == "closed":
            br.record(br.allow(), False)  # open it
        assert br.state == "open"
        clock.advance(1.0)
        admitted = ask_all(kids, "try")
        assert sum(admitted) == k, (r, admitted)
        outcome = "succeed" if r % 2 else "fail"
        counted = ask_all(kids, outcome)
        # The first outcome moves the breaker; the other trials are stale.
        assert sum(counted) == 1, (r, counted)
        assert br.state == ("closed" if r % 2 else "open"), r
    for c in kids:
        c.finish()
    m = br.metrics()
    assert m["transitions"]["open>half_open"] == rounds
    assert m["transitions"]["half_open>closed"] == rounds // 2
    assert m["transitions"]["half_open>open"] == rounds // 2
    assert m["stale"] == rounds * (k - 1)
    assert m["rejected"] == rounds * (4 * 3 - k)


# ----------------------------------------------------------------- kill -9


def test_sigkill_holding_the_trial_permit_recovers_after_trial_timeout(live, clock):
    region = Region(None)
    br = CircuitBreaker("killed", shared=region, failure_threshold=1, reset_timeout=1.0,
                        trial_timeout=5.0)
    br.record(br.allow(), False)
    clock.advance(1.0)
    held = []

    def work(cmd):
        held.append(br.allow())  # the only permit, never given back
        return br.state

    kid = Child(work, live)
    assert kid.ask("take") == "half_open"
    kid.kill()
    with pytest.raises(CircuitOpenError):
        br.allow()  # the dead process still holds the permit
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        br.allow()  # not expired yet
    clock.advance(0.2)  # past trial_timeout
    br.record(br.allow(), True)
    assert br.state == "closed"


def test_sigkill_at_random_moments_leaves_every_invariant_true(live, clock):
    region = Region(None)
    cfg = dict(failure_threshold=2, reset_timeout=1.0, half_open_calls=2, trial_timeout=3.0,
               success_threshold=2)
    br = CircuitBreaker("chaos", shared=region, **cfg)
    rng = random.Random(7)
    outcomes = (True, False, "excluded", "cancelled")

    def work(cmd):
        # Churn through every state until killed: the clock moves when the
        # breaker rejects, so open periods end.
        r = random.Random(os.getpid())
        buttress.CircuitBreaker("chaos-%d" % os.getpid(), shared=region)  # slots too
        i = 0
        while True:
            try:
                t = br.allow()
            except CircuitOpenError:
                clock.advance(0.5)
                continue
            if i == 0:
                _send(kid_w, "running")
            i += 1
            br.record(t, outcomes[r.randrange(4)])

    runs = 25
    for run in range(runs):
        kid_r, kid_w = os.pipe()
        kid = Child(work, live)
        kid.send("go")
        assert _recv(kid_r, TIMEOUT) == "running"
        time.sleep(rng.uniform(0, 0.02))
        kid.kill()
        os.close(kid_r)
        os.close(kid_w)
        m = br.metrics()
        assert m["state"] in ("closed", "open", "half_open"), m
        assert m["calls"] == (m["successes"] + m["failures"] + m["excluded"] + m["cancelled"]
                              + m["stale"]), m
        assert m["consecutive_failures"] < 2 or m["state"] != "closed", m
        # Whatever the child was doing, the breaker recovers: permits it held
        # expire after trial_timeout.
        clock.advance(3.0 + 1.0)
        for _ in range(6):
            try:
                br.record(br.allow(), True)
            except CircuitOpenError:
                clock.advance(3.0)
        assert br.state == "closed", (run, br.metrics())
    m = br.metrics()
    assert m["calls"] > runs
    for edge in ("closed>open", "open>half_open", "half_open>closed", "half_open>open"):
        assert m["transitions"][edge] > 0, m["transitions"]  # the children churned
    info = region.info()
    assert info["slots_used"] == 1 + runs  # one slot per killed child, none corrupted


# ------------------------------------------------------ named and anonymous


def test_named_region_attach_sees_live_state_and_never_resets_it(live, shm_name):
    name = shm_name()
    cfg = dict(failure_threshold=3, reset_timeout=60.0)
    region = Region(name)
    assert os.stat(shm_path(name)).st_mode & 0o777 == 0o600
    br = CircuitBreaker("payments", shared=region, **cfg)
    for _ in range(3):
        br.record(br.allow(), False)
    assert br.state == "open"

    def work(cmd):
        # A new mapping of the same name, not the one inherited at the fork.
        mine = Region(name, size=1 << 16)  # size is ignored when attaching
        b = CircuitBreaker("payments", shared=mine, **cfg)
        before = b.metrics()
        try:
            b.allow()
            rejected = False
        except CircuitOpenError:
            rejected = True
        return before["state"], before["failures"], rejected, mine.info()["size"]

    kid = Child(work, live)
    assert kid.ask("attach") == ("open", 3, True, 1 << 20)
    kid.finish()
    m = br.metrics()
    assert m["state"] == "open" and m["failures"] == 3 and m["rejected"] == 1

    # A separate interpreter (not forked) attaching by name.
    code = (
        "import buttress\n"
        f"r = buttress.Region({name!r}, create=False)\n"
        f"b = buttress.CircuitBreaker('payments', shared=r, **{cfg!r})\n"
        "m = b.metrics()\n"
        "print(m['state'], m['failures'], m['rejected'])\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(buttress.__file__)) + os.pathsep + \
        env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["open", "3", "1"]
    # Re-creating the region in this process attaches too.
    again = Region(name)
    b2 = CircuitBreaker("payments", shared=again, **cfg)
    assert b2.state == "open" and b2.metrics()["failures"] == 3
    assert region.unlink() is True
    assert region.unlink() is False
    assert br.state == "open"  # mappings outlive the name


def test_anonymous_region_is_inherited_by_fork(live):
    region = Region(None, size=1 << 16)
    br = CircuitBreaker("inherited", shared=region, failure_threshold=3)

    def work(cmd):
        if cmd == "fail":
            for _ in range(3):
                br.record(br.allow(), False)
            return br.state
        # made after the fork, in the child: the parent finds it by name
        late = CircuitBreaker("late", shared=region)
        for _ in range(5):
            late.record(late.allow(), True)
        return late.metrics()["successes"]

    kid = Child(work, live)
    assert kid.ask("fail") == "open"
    assert br.state == "open" and br.metrics()["failures"] == 3
    assert kid.ask("late") == 5
    kid.finish()
    late = CircuitBreaker("late", shared=region)
    assert late.metrics()["successes"] == 5
    # A private breaker of the same name is another breaker.
    assert CircuitBreaker("inherited").state == "closed"


def test_shared_retry_budget_needs_a_name_and_takes_one(live):
    region = Region(None, size=1 << 16)
    with pytest.raises(TypeError, match="shared retry budget needs a name"):
        RetryBudget(shared=region)
    b = RetryBudget(ratio=0.0, min_per_second=1.0, window=1.0, name="api", shared=region)
    assert b.name == "api" and b.shared is region
    assert "name='api'" in repr(b)

    def work(cmd):
        return RetryBudget(ratio=0.0, min_per_second=1.0, window=1.0, name="api",
                           shared=region).withdraw()

    kid = Child(work, live)
    assert kid.ask("x") is True  # one retry a window: the child takes it
    kid.finish()
    assert b.withdraw() is False
    assert b.metrics()["withdrawals"] == 1


def test_listeners_fire_in_the_process_that_made_the_transition(live):
    region = Region(None, size=1 << 16)
    seen = []
    br = CircuitBreaker("heard", shared=region, failure_threshold=1,
                        on_state_change=lambda b, old, new: seen.append((old, new)))

    def work(cmd):
        br.record(br.allow(), False)
        return seen

    kid = Child(work, live)
    assert kid.ask("x") == [("closed", "open")]
    kid.finish()
    assert br.state == "open" and seen == []  # the parent made no transition


# -------------------------------------------------------------- bad input


def test_region_names_and_sizes():
    with pytest.raises(ValueError, match=r"too long: 301 bytes, at most 200"):
        Region("/" + "x" * 300)
    for bad in ("noslash", "/a/b", "/", ""):
        with pytest.raises(ValueError, match="'/name'"):
            Region(bad)
    with pytest.raises(TypeError, match="name must be a str"):
        Region(b"/bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"size must be in \[65536, "):
        Region(None, size=4096)
    with pytest.raises(ValueError, match=r"size must be in \[65536, "):
        Region("/buttress-pytest-never-made", size=65535)
    assert not os.path.exists("/dev/shm/buttress-pytest-never-made")
    with pytest.raises(TypeError, match="size must be an int"):
        Region(None, size=1.5e6)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="size must be an int"):
        Region(None, size=True)
    with pytest.raises(ValueError, match="mode must be in"):
        Region("/buttress-pytest-never-made", mode=0o1777)
    with pytest.raises(ValueError, match="create=False needs a name"):
        Region(None, create=False)
    with pytest.raises(FileNotFoundError):
        Region("/buttress-pytest-missing-%d" % os.getpid(), create=False)
    with pytest.raises(ValueError, match="'/name'"):
        buttress.unlink_region("nope")
    assert buttress.unlink_region("/buttress-pytest-missing-%d" % os.getpid()) is False


def test_breaker_names_in_a_region():
    region = Region(None, size=1 << 16)
    with pytest.raises(TypeError, match="shared circuit breaker needs a name"):
        CircuitBreaker(shared=region)
    with pytest.raises(ValueError, match="too long for a shared circuit breaker: 64 bytes"):
        CircuitBreaker("x" * 64, shared=region)
    with pytest.raises(ValueError, match="too long for a shared retry budget: 64 bytes"):
        RetryBudget(name="é" * 32, shared=region)  # 32 characters, 64 bytes
    CircuitBreaker("y" * 63, shared=region)  # the longest
    with pytest.raises(TypeError, match="shared must be a buttress.Region or None"):
        CircuitBreaker("z", shared="/region")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        CircuitBreaker("", shared=region)
    assert region.info()["slots_used"] == 1  # nothing half-made by the failures


def test_garbage_in_the_region_file_is_a_clear_error(shm_name):
    for content in (os.urandom(100_000), b"not a region", b"\0" * 100_000):
        name = shm_name("junk")
        with open(shm_path(name), "wb") as f:
            f.write(content)
        with pytest.raises(RegionError, match="not a buttress region of this version") as e:
            Region(name)
        assert isinstance(e.value, OSError) and isinstance(e.value, buttress.ButtressError)
        assert name in str(e.value)
        with open(shm_path(name), "rb") as f:
            assert f.read() == content  # never "repaired" into a region


def test_a_region_of_another_abi_is_refused(shm_name):
    name = shm_name("abi")
    Region(name).close()
    with open(shm_path(name), "r+b") as f:
        f.seek(4)  # the header: magic (4 bytes), ABI version (4), size (8)
        f.write(struct.pack("<I", buttress._core.ABI_VERSION + 1))
    with pytest.raises(RegionError, match="ABI"):
        Region(name)


def test_an_empty_region_file_is_refused_not_formatted(shm_name):
    # What a creator killed between creating and sizing the file leaves.
    name = shm_name("empty")
    open(shm_path(name), "wb").close()
    with pytest.raises(RegionError, match="not a buttress region"):
        Region(name)
    assert os.path.getsize(shm_path(name)) == 0


def test_permission_denied_is_permission_error(live, shm_name):
    name = shm_name("perm")
    region = Region(name)  # mode 0600, owned by this user
    CircuitBreaker("p", shared=region)
    if os.geteuid() == 0:
        # Root bypasses file modes: try as another user, in a child.
        def work(cmd):
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                Region(name)
            except PermissionError as e:
                return ("PermissionError", e.errno, e.filename)
            return ("opened", None, None)

        kid = Child(work, live)
        assert kid.ask("open") == ("PermissionError", errno.EACCES, name)
        kid.finish()
    else:
        os.chmod(shm_path(name), 0)
        with pytest.raises(PermissionError) as e:
            Region(name)
        assert e.value.filename == name
    assert CircuitBreaker("p", shared=region).state == "closed"  # unharmed


def test_same_name_other_config_is_value_error():
    region = Region(None, size=1 << 16)
    CircuitBreaker("svc", shared=region, failure_threshold=5)
    CircuitBreaker("svc", shared=region, failure_threshold=5, on=KeyError)  # local settings
    with pytest.raises(ValueError, match="'svc' already exists .* different configuration"):
        CircuitBreaker("svc", shared=region, failure_threshold=6)
    with pytest.raises(ValueError, match="different configuration"):
        CircuitBreaker("svc", shared=region, window=50)
    with pytest.raises(ValueError, match="retry budget 'svc' already exists"):
        RetryBudget(name="svc", shared=region)  # the name holds a breaker
    RetryBudget(name="budget", shared=region, ratio=0.1)
    with pytest.raises(ValueError, match="retry budget 'budget' already exists"):
        RetryBudget(name="budget", shared=region, ratio=0.2)


def test_full_region_is_region_error_and_changes_nothing():
    region = Region(None, size=65536)  # the smallest: the slot table and a few breakers
    made = []
    with pytest.raises(RegionError, match="is full: no room for circuit breaker") as e:
        for i in range(100):
            made.append(CircuitBreaker("b%d" % i, shared=region, failure_threshold=1))
    assert e.value.errno == errno.ENOSPC
    assert made, "not even one breaker fitted"
    before = region.info()
    with pytest.raises(RegionError):
        CircuitBreaker("one-more", shared=region)
    assert region.info() == before
    for b in made:  # the ones placed are intact
        b.record(b.allow(), False)
        assert b.state == "open"
    # The slot table fills too: 256 names at most.
    big = Region(None)
    budgets = [RetryBudget(name="g%d" % i, shared=big) for i in range(256)]
    with pytest.raises(RegionError, match="256 of 256 slots"):
        RetryBudget(name="g256", shared=big)
    assert len(budgets) == 256


def test_busy_slot_then_takeover_of_a_dead_creator(live, shm_name):
    # A slot left in the "being created" state, as a process killed while
    # creating it leaves it.  The slot table starts after the 24-byte header
    # (core/region.c); a status word is (pid << 3) | 1 while claiming.
    name = shm_name("busy")
    region = Region(name, size=1 << 16)

    def idle(cmd):
        time.sleep(3600)

    creator = Child(idle, live)
    with open(shm_path(name), "r+b") as f:
        f.seek(24)
        f.write(struct.pack("<Q", (creator.pid << 3) | 1))
    with pytest.raises(RegionError, match="being created by another process") as e:
        CircuitBreaker("wanted", shared=region)
    assert e.value.errno == errno.EBUSY
    creator.kill()  # dead and reaped: its slot is taken over
    br = CircuitBreaker("wanted", shared=region)
    assert br.state == "closed" and region.info()["slots_used"] == 1


# --------------------------------------------------------- lifetime and GC


def maps_of(name):
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith("/dev/shm" + name))


def test_the_region_outlives_its_python_object_while_a_breaker_uses_it(shm_name):
    name = shm_name("gc")
    region = Region(name, size=1 << 16)
    gone = weakref.ref(region)
    br = CircuitBreaker("kept", shared=region, failure_threshold=2)
    assert maps_of(name) == 1
    del region
    gc.collect()
    assert gone() is not None  # held by the breaker
    br.record(br.allow(), False)
    br.record(br.allow(), False)
    assert br.state == "open" and br.metrics()["failures"] == 2
    assert maps_of(name) == 1
    del br
    gc.collect()
    assert gone() is None
    assert maps_of(name) == 0  # unmapped with its last user


def test_close_waits_for_the_last_user_and_refuses_new_ones(shm_name):
    name = shm_name("close")
    with Region(name, size=1 << 16) as region:
        br = CircuitBreaker("a", shared=region)
        budget = RetryBudget(name="b", shared=region)
    assert region.closed and "closed" in repr(region)
    assert maps_of(name) == 1  # still used by br and budget
    br.record(br.allow(), True)
    assert budget.withdraw() is True
    with pytest.raises(ValueError, match="region .* is closed"):
        CircuitBreaker("c", shared=region)
    del br
    gc.collect()
    assert maps_of(name) == 1
    del budget
    gc.collect()
    assert maps_of(name) == 0
    region.close()  # twice is fine


def test_a_cycle_through_the_region_is_collected(shm_name):
    name = shm_name("cycle")
    region = Region(name, size=1 << 16)
    region.breaker = CircuitBreaker("cyc", shared=region)  # region -> breaker -> region
    gone = weakref.ref(region)
    del region
    gc.collect()
    assert gone() is None
    assert maps_of(name) == 0


def test_info_and_repr():
    region = Region(None, size=1 << 17)
    info = region.info()
    assert info["name"] is None and info["size"] == 1 << 17 and info["slots"] == 256
    assert info["slots_used"] == 0 and info["users"] == 0 and 0 < info["used"] < 1 << 17
    br = CircuitBreaker("i", shared=region)
    info2 = region.info()
    assert info2["slots_used"] == 1 and info2["users"] == 1 and info2["used"] > info["used"]
    assert br.shared is region and CircuitBreaker("private").shared is None
    assert repr(region) == "<Region anonymous size=131072>"
    assert region.unlink() is False  # anonymous: no name
    assert buttress.REGION_SIZE == 1 << 20 and Region(None).size == 1 << 20
