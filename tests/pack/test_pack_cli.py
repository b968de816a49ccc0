"""`packserve pack` / `packserve inspect` end to end: real files, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from zoo import Zoo

from packserve.bundle import read_manifest
from packserve.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def xgb_files(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    case = zoo.case("xgboost-binary")
    case.model.save_model(d / "fraud.json")
    header = ",".join(f"f{i}" for i in range(8))
    np.savetxt(d / "sample.csv", case.sample, delimiter=",", header=header, comments="")
    np.save(d / "sample.npy", case.sample)
    np.save(d / "narrow.npy", case.sample[:, :5])
    return {"model": d / "fraud.json", "csv": d / "sample.csv", "npy": d / "sample.npy",
            "narrow": d / "narrow.npy"}


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_pack_then_inspect(xgb_files, tmp_path) -> None:
    out = tmp_path / "fraud"
    r = invoke("pack", xgb_files["model"], out, "--sample", xgb_files["csv"], "--name", "fraud",
               "--version", "2.1.0")
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.stdout and "bundle written" in r.stdout
    m = read_manifest(out)
    assert (m.name, m.version, m.feature_names[:2]) == ("fraud", "2.1.0", ["f0", "f1"])
    r = invoke("inspect", out)
    assert r.exit_code == 0
    for word in ("fraud 2.1.0", "verified", "ai.onnx.ml=3", "PASSED", "f0"):
        assert word in r.stdout
    r = invoke("inspect", out, "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == json.loads((out / "packserve.json").read_text())


def test_existing_output_needs_force(xgb_files, tmp_path) -> None:
    out = tmp_path / "b"
    assert invoke("pack", xgb_files["model"], out, "--sample", xgb_files["npy"]).exit_code == 0
    r = invoke("pack", xgb_files["model"], out, "--sample", xgb_files["npy"])
    assert r.exit_code == 4 and "already exists" in r.stderr and "--force" in r.stderr
    r = invoke("pack", xgb_files["model"], out, "--sample", xgb_files["npy"], "--force")
    assert r.exit_code == 0


def test_wrong_width_sample(xgb_files, tmp_path) -> None:
    r = invoke("pack", xgb_files["model"], tmp_path / "b", "--sample", xgb_files["narrow"])
    assert r.exit_code == 4
    assert "5 columns but the model expects 8" in r.stderr
    assert not (tmp_path / "b").exists()


def test_pickle_is_refused(tmp_path, xgb_files) -> None:
    # A pickle naming os.system: the scanner refuses it (exit 1) before anything is unpickled.
    src = tmp_path / "model.pkl"
    src.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x01\x85R.")
    r = invoke("pack", src, tmp_path / "b", "--sample", xgb_files["npy"])
    assert r.exit_code == 1
    assert "refusing to load" in r.stderr and "os.system" in r.stderr
    assert "Traceback" not in r.output


def test_parity_failure_exit_code_and_override(tmp_path) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 4)) * 1000.0 + 1e7  # float32 rounding flips LightGBM's splits
    y = (((x[:, 0] - 1e7) + (x[:, 1] - 1e7)) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x[:600], y[:600]), num_boost_round=20)
    booster.save_model(str(tmp_path / "big.txt"))
    np.save(tmp_path / "s.npy", x[600:])
    out = tmp_path / "b"
    r = invoke("pack", tmp_path / "big.txt", out, "--sample", tmp_path / "s.npy")
    assert r.exit_code == 4 and "parity failed" in r.stderr and "no bundle written" in r.stderr
    assert not out.exists()
    r = invoke("pack", tmp_path / "big.txt", out, "--sample", tmp_path / "s.npy",
               "--allow-parity-failure")
    assert r.exit_code == 0 and "FAILED" in r.stdout
    assert read_manifest(out).parity.passed is False


def test_inspect_tampered_and_missing(xgb_files, tmp_path) -> None:
    out = tmp_path / "b"
    assert invoke("pack", xgb_files["model"], out, "--sample", xgb_files["npy"]).exit_code == 0
    data = bytearray((out / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "model.onnx").write_bytes(bytes(data))
    r = invoke("inspect", out)
    assert r.exit_code == 5 and "sha256" in r.stderr and "FAILED" in r.stdout
    r = invoke("inspect", tmp_path / "nothing")
    assert r.exit_code == 5 and "not a packserve bundle" in r.stderr


def test_real_subprocess(xgb_files, tmp_path) -> None:
    """The installed entry point, in a fresh interpreter."""
    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "packserve", "pack", str(xgb_files["model"]), str(out),
           "--sample", str(xgb_files["csv"])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "model.onnx").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 4 and "already exists" in again.stderr


def test_no_example_rows_keeps_sample_rows_out_of_the_bundle(xgb_files, tmp_path) -> None:
    out = tmp_path / "private"
    r = invoke("pack", xgb_files["model"], out, "--sample", xgb_files["csv"], "--no-example-rows")
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.examples == [] and m.parity.passed and m.parity.rows > 0
    text = (out / "packserve.json").read_text()
    first = np.loadtxt(xgb_files["csv"], delimiter=",", skiprows=1)[0]
    assert repr(float(first[0])) not in text
