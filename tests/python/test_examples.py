"""examples/python/*.py run, and type-check under mypy --strict."""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

import buttress
from conftest import ROOT

EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "python", "*.py")))
PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(buttress.__file__)))


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = PKG_DIR + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs(path):
    r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60,
                       env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip(), "an example should show what it does"


def test_examples_present():
    assert len(EXAMPLES) >= 3


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_mypy_strict_passes_on_examples_and_package(tmp_path):
    e = env()
    e["MYPYPATH"] = PKG_DIR
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                        str(tmp_path), os.path.join(ROOT, "examples", "python"),
                        os.path.join(PKG_DIR, "buttress")],
                       capture_output=True, text=True, timeout=300, env=e, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_mypy_sees_the_wrapped_signature(tmp_path):
    src = tmp_path / "typed.py"
    src.write_text(
        "import buttress\n"
        "@buttress.retry()\n"
        "def f(x: int) -> str:\n"
        "    return str(x)\n"
        "br = buttress.CircuitBreaker()\n"
        "@br\n"
        "def g(y: str) -> int:\n"
        "    return len(y)\n"
        "class C:\n"
        "    @buttress.retry()\n"
        "    def m(self, z: float) -> float:\n"
        "        return z\n"
        "a: str = f(1)\n"
        "b: int = g('x')\n"
        "c: float = C().m(1.0)\n"
        "f('wrong')\n"
        "g(3)\n"
        "C().m('no')\n")
    e = env()
    e["MYPYPATH"] = PKG_DIR
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                        str(tmp_path / "cache"), str(src)], capture_output=True, text=True,
                       timeout=300, env=e, cwd=str(tmp_path))
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, r.stdout
    assert all(f"typed.py:{n}:" in "\n".join(errors) for n in (16, 17, 18)), r.stdout
