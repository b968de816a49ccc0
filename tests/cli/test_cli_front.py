"""The front door of the CLI as a new user meets it: bare command, --version, paths in errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import packserve


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packserve", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ})


def test_bare_command_prints_help_and_succeeds(tmp_path: Path) -> None:
    for args in ((), ("demo",), ("deploy",)):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        assert "Usage:" in r.stdout and "Commands" in r.stdout


def test_version_flag(tmp_path: Path) -> None:
    r = run("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"packserve {packserve.__version__}"
    assert "--version" in run("--help", cwd=tmp_path).stdout


def test_errors_name_paths_as_given(tmp_path: Path) -> None:
    r = run("serve", "does/not/exist", cwd=tmp_path)
    assert r.returncode == 2 and "model path 'does/not/exist' does not exist" in r.stderr
    r = run("inspect", "does/not/exist", cwd=tmp_path)
    assert r.returncode == 5 and "'does/not/exist'" in r.stderr
    (tmp_path / "bundles" / "m").mkdir(parents=True)
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "rows.csv").write_text("1,2\n")
    r = run("pack", "model.json", "bundles/m", "--sample", "rows.csv", cwd=tmp_path)
    assert r.returncode == 4 and "output directory 'bundles/m' already exists" in r.stderr
    r = run("pack", "no/such/model.json", "bundles/n", "--sample", "rows.csv", cwd=tmp_path)
    assert r.returncode == 4 and "model file 'no/such/model.json' does not exist" in r.stderr
    for out in (r.stderr,):
        assert "Traceback" not in out
