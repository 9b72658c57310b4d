"""The package as a user installs it: a wheel (not the editable checkout) carries the default
search spaces and ``py.typed``, and a non-editable install finds them from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy of what the package is made of, so no build/ folder lands in the checkout
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "raypost", src / "raypost", ignore=shutil.ignore_patterns("__pycache__"))
    # --no-build-isolation: build with this environment's setuptools (no download)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("raypost-*.whl")
    return path


def test_wheel_ships_default_spaces_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for method in ("dept", "im", "pcp", "finetune"):
        assert f"raypost/search_spaces/{method}.yaml" in names
    assert "raypost/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text


def test_installed_wheel_finds_the_default_spaces_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = ("import raypost.tune.space as s; from raypost.tune.space import load_space, default_space_file;"
             "p = default_space_file('dept'); sp = load_space(p, 'dept');"
             "print(p); print(sp.objectives, sp.fixed['model'])")
    # only the installed copy on the path (cwd is elsewhere, the checkout is not importable)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    path, objectives = out.stdout.splitlines()[:2]
    assert Path(path).is_relative_to(target) and Path(path).is_file()
    assert objectives == "{'eval_accuracy': 'max'} minilm"
