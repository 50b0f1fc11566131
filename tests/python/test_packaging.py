"""`pip wheel .` gives a wheel holding the extension, the stubs and py.typed."""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None or
                    importlib.util.find_spec("wheel") is None,
                    reason="needs setuptools and wheel")
def test_pip_wheel_builds_a_complete_wheel(tmp_path):
    # Build from a copy so that the source tree gets no build/ or egg-info.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("*.so", "*.egg-info", "__pycache__")
    for d in ("core", "bindings/python", "python/buttress"):
        shutil.copytree(os.path.join(ROOT, d), src / d, ignore=ignore)
    for f in ("setup.py", "pyproject.toml", "MANIFEST.in"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = glob.glob(os.path.join(str(tmp_path), "buttress-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert any(n.startswith("buttress/_core") and n.endswith(".so") for n in names), names
    for n in ("buttress/__init__.py", "buttress/_aio.py", "buttress/_core.pyi",
              "buttress/py.typed"):
        assert n in names, names
