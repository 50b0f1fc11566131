"""The failure drill (python -m buttress.drill): reproducible, the numbers it
is meant to show, its chart, and --real's bounds."""
import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import buttress
from buttress import drill

PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(buttress.__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A short timeline: the whole fault is a full outage.
OUTAGE = drill.Config(clients=100, seed=7, phases=(
    drill.Phase("healthy", 0.0, 10.0, "healthy"),
    drill.Phase("outage", 10.0, 50.0, "outage"),
    drill.Phase("recovery", 50.0, 70.0, "healthy"),
))


@pytest.fixture(scope="module")
def outage_run():
    return {s["name"]: s for s in drill.simulate(OUTAGE)["strategies"]}


def run_json(*args):
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        assert drill.main(["--json", "--no-chart", *args]) == 0
    finally:
        sys.stdout = old
    return out.getvalue()


def test_same_seed_same_json():
    a = run_json("--seed", "5")
    assert a == run_json("--seed", "5")
    doc = json.loads(a)
    assert [s["name"] for s in doc["simulation"]["strategies"]] == [
        "none", "naive", "jitter", "budget", "breaker"]
    assert set(doc["aws"]["results"]) == {"none", "equal", "full", "decorrelated"}
    assert run_json("--seed", "6", "--no-aws") != run_json("--seed", "5", "--no-aws")


def test_budget_and_breaker_cap_amplification_in_a_full_outage(outage_run):
    naive = outage_run["naive"]["amplification_outage"]
    guarded = outage_run["breaker"]["amplification_outage"]
    assert 2.7 <= naive <= 3.0, naive  # every request tries 3 times
    assert guarded <= 1.2, guarded
    assert outage_run["budget"]["amplification_outage"] <= 1.3
    assert outage_run["none"]["amplification_outage"] == 1.0
    # the breaker really was open, and it closed again once the service was back
    br = outage_run["breaker"]
    assert max(br["series"]["breaker_open"]) > 0.9
    assert br["series"]["breaker_open"][-1] == 0.0
    assert br["recover_s"] is not None and br["recover_s"] <= 10


def test_default_drill_tells_the_story():
    res = {s["name"]: s for s in drill.simulate(drill.Config(seed=1))["strategies"]}
    # unbounded retries keep the queue full of work nobody waits for ...
    assert res["naive"]["recover_s"] is None and res["jitter"]["recover_s"] is None
    # ... bounded ones let the service come back
    for name in ("none", "budget", "breaker"):
        assert res[name]["recover_s"] is not None and res[name]["recover_s"] < 10, name
    assert res["breaker"]["success_rate"] > res["naive"]["success_rate"]
    assert res["breaker"]["calls"] < res["naive"]["calls"] / 2


def test_aws_experiment_trends():
    aws = drill.aws_experiment(seed=3, trials=4)["results"]
    # without jitter every race has one winner: 100 + 99 + ... + 1 calls
    assert aws["none"]["calls"] == 5050
    for mode in ("full", "decorrelated"):
        assert aws[mode]["calls"] < aws["none"]["calls"] / 3, mode
        assert aws[mode]["completion"] < aws["none"]["completion"] / 3, mode


def test_chart_is_a_png_written_by_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    sim = drill.simulate(OUTAGE)
    path = tmp_path / "drill.png"
    assert drill.write_chart(sim, str(path))
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert b"IHDR" in data[:32] and data.rstrip().endswith(b"IEND\xaeB`\x82")
    assert b"matplotlib" in data[:4096]  # its Software text chunk


def test_bare_command_prints_tables_and_writes_the_chart(tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "buttress.drill"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t < 30
    for label in ("no retry", "no jitter", "full jitter", "retry budget", "circuit breaker",
                  "decorrelated", "recover s"):
        assert label in r.stdout, label
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install matplotlib" in r.stderr
        return
    assert r.stderr == ""  # and no progress bar: stderr is not a terminal
    assert (tmp_path / "drill.png").read_bytes().startswith(PNG_SIGNATURE)


def test_without_matplotlib_says_how_to_install_and_still_prints(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert drill.main(["--no-aws", "--out", str(tmp_path / "x.png")]) == 0
    out, err = capsys.readouterr()
    assert "pip install matplotlib" in err
    assert "circuit breaker" in out
    assert not (tmp_path / "x.png").exists()


def test_progress_bar():
    s = io.StringIO()
    p = drill.Progress(10.0, stream=s, enabled=True)
    for _ in range(10):
        p.advance(1.0, "x")
    p.close()
    assert "100%" in s.getvalue() and "[#####" in s.getvalue()
    quiet = io.StringIO()
    drill.Progress(1.0, stream=quiet).advance(1.0, "x")  # not a tty: nothing
    assert quiet.getvalue() == ""


def port_closed(port):
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_real_is_bounded_and_stops_its_server():
    t = time.monotonic()
    res = drill.run_real(seconds=1.5, threads=8)
    took = time.monotonic() - t
    assert took < drill.REAL_BOUND
    assert res["port"] > 0 and port_closed(res["port"])
    by = {s["name"]: s for s in res["strategies"]}
    assert list(by) == ["none", "naive", "jitter", "budget", "breaker"]
    assert all(s["requests"] > 0 and s["calls"] > 0 for s in by.values())
    assert by["naive"]["amplification_outage"] > by["breaker"]["amplification_outage"]


def test_real_stops_its_server_on_error(monkeypatch):
    seen = {}

    def boom(srv, *args):
        seen["port"] = srv.server_address[1]
        raise KeyboardInterrupt

    monkeypatch.setattr(drill, "_real_one", boom)
    with pytest.raises(KeyboardInterrupt):
        drill.run_real(seconds=1.0)
    assert port_closed(seen["port"])


def test_real_cli_json():
    out = run_json("--real", "--real-seconds", "1")
    doc = json.loads(out)
    assert len(doc["real"]["strategies"]) == 5
