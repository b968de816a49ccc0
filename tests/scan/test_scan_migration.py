"""Safe migration: `packserve pack model.pkl|.joblib OUT --sample ...` scans, loads restricted, packs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from scan_payloads import Evil
from typer.testing import CliRunner

import packserve
from packserve.cli import app

runner = CliRunner()


@pytest.mark.parametrize("fmt", ["pickle", "joblib-zlib"])
def test_pack_a_pickled_pipeline(tmp_path: Path, legit_models, xy, fmt: str) -> None:  # type: ignore[no-untyped-def]
    import joblib

    x, _ = xy
    model = legit_models["pipeline"]
    src = tmp_path / ("model.pkl" if fmt == "pickle" else "model.joblib")
    if fmt == "pickle":
        src.write_bytes(pickle.dumps(model, protocol=5))
    else:
        joblib.dump(model, src, compress=("zlib", 3))
    np.save(tmp_path / "sample.npy", x[:20])
    out = tmp_path / "bundle"
    r = runner.invoke(app, ["pack", str(src), str(out), "--sample", str(tmp_path / "sample.npy")])
    assert r.exit_code == 0, r.output
    pred = packserve.load(out).predict(x[:10])
    np.testing.assert_allclose(pred.probabilities, model.predict_proba(x[:10]), atol=1e-5)


def test_pack_refuses_a_malicious_joblib_without_running_it(tmp_path: Path, xy) -> None:  # type: ignore[no-untyped-def]
    import joblib

    x, _ = xy
    src = tmp_path / "model.joblib"
    joblib.dump({"model": Evil()}, src, compress=3)
    np.save(tmp_path / "sample.npy", x[:5])
    r = runner.invoke(app, ["pack", str(src), str(tmp_path / "b"), "--sample", str(tmp_path / "sample.npy")])
    assert r.exit_code == 1
    assert "refusing to load" in r.stderr
    assert not (tmp_path / "b").exists()
