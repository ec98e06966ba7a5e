"""The package works when installed as a wheel outside the checkout (the Docker image and `pip install` users)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel and installed (without dependencies: they are the venv's) into a bare folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ into the tree it builds
    src = tmp / "src"
    top_level = {".git", ".venv", "data", "outputs", "build", "notebooks", "tests"}
    shutil.copytree(ROOT, src, symlinks=True, ignore=lambda d, names: [
        n for n in names if (Path(d) == ROOT and n in top_level) or n == "__pycache__" or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("theremin-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp / "site"),
                    str(wheel)], check=True, cwd=tmp)
    return tmp


def _run(installed: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed / "site"), "THEREMIN_DATA": str(installed / "data")}
    env.pop("THEREMIN_ROOT", None)
    work = installed / "elsewhere"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)


def test_wheel_carries_the_configs_and_the_codec_defaults(installed):
    code = ("import theremin, theremin.config as p; from theremin.codec.midichar import MidiChar;"
            "print(theremin.__file__); print(p.conf_dir()); c = MidiChar(); print(len(c.encode_file.__name__))")
    r = _run(installed, "-c", code)
    assert r.returncode == 0, r.stderr
    pkg_file, conf, _ = r.stdout.splitlines()
    site = str(installed / "site")
    assert pkg_file.startswith(site), f"imported the checkout, not the wheel: {pkg_file}"
    assert conf.startswith(site) and (Path(conf) / "train.yaml").is_file()


@pytest.mark.parametrize("module", ["theremin.apps.train", "theremin.apps.prep", "theremin.apps.generate"])
def test_hydra_apps_compose_from_the_wheel(installed, module):
    r = _run(installed, "-m", module, "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "paths:" in r.stdout
