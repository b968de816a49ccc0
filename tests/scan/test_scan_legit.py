"""Zero false positives on real files, and the restricted loader round-trips them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from packserve.scan import ensure_safe, scan
from packserve.scan.loader import load_pickle_file


def test_every_legit_file_is_clean(legit_dir: Path) -> None:
    files = sorted(p for p in legit_dir.iterdir() if p.is_file())
    assert len(files) >= 30
    flagged = {}
    for p in files:
        report = scan(p)
        if not report.clean:
            flagged[p.name] = [f.reason for f in report.findings] + [e.reason for e in report.errors]
    assert flagged == {}


def test_directory_scan_visits_every_file(legit_dir: Path) -> None:
    report = scan(legit_dir)
    assert report.clean, report.to_dict()
    assert len(report.files) == len([p for p in legit_dir.iterdir() if p.is_file()])
    kinds = set(report.files.values())
    assert {"zip", "pickle", "npy", "torch legacy", "gzip-compressed", "not a pickle format"} <= kinds
    assert report.exit_code == 0 and report.not_pickle  # e.g. the .npy of floats, a text file


def test_ensure_safe_returns_the_report(legit_dir: Path) -> None:
    assert ensure_safe(legit_dir / "state_dict.pt").clean


@pytest.mark.parametrize(
    "name",
    [
        "rf_p2.pkl",
        "pipeline_p5.pkl",
        "xgb_p4.pkl",
        "lgb_p5.pkl",
        "rf.joblib",
        "pipeline_zlib.joblib",
        "pipeline_gzip.joblib",
        "rf_xz.joblib",
        "rf_lzma.joblib",
        "pipeline_bz2.joblib",
    ],
)
def test_restricted_loader_round_trips(legit_dir: Path, legit_models, xy, name: str) -> None:  # type: ignore[no-untyped-def]
    x, _ = xy
    model = load_pickle_file(legit_dir / name)
    original = legit_models[name.split("_")[0].split(".")[0]]
    assert type(model) is type(original)
    np.testing.assert_allclose(model.predict_proba(x), original.predict_proba(x), rtol=1e-6)


def test_restricted_loader_reads_joblib_arrays(legit_dir: Path) -> None:
    obj = load_pickle_file(legit_dir / "arrays.joblib")
    np.testing.assert_array_equal(obj["arr"], np.arange(1000.0))
    assert obj["obj"].tolist() == [1, "a"]


def test_loader_and_scanner_agree_on_every_allowlisted_global() -> None:
    """Defence in depth: find_class refuses exactly what the scanner flags."""
    from packserve.scan.loader import RefusedGlobalError, RestrictedUnpickler
    from packserve.scan.policy import allowlist, judge

    u = RestrictedUnpickler(__import__("io").BytesIO(b"."))
    for module, name in [
        ("os", "system"),
        ("builtins", "eval"),
        ("mymod", "X"),
        ("collections", "OrderedDict.fromkeys"),
    ]:
        assert judge(module, name) is not None
        with pytest.raises(RefusedGlobalError):
            u.find_class(module, name)
    for module, name in sorted(allowlist())[:50]:
        assert judge(module, name) is None


def test_pickled_numpy_and_torch_tensors_in_plain_pickles_are_clean(tmp_path: Path) -> None:
    import torch

    p = tmp_path / "x.pkl"
    p.write_bytes(
        pickle.dumps(
            {
                "a": np.float32(1),
                "b": np.random.RandomState(0),
                "c": np.random.default_rng(0),
                "d": torch.float32,
                "e": np.dtype("M8[s]"),
            },
            protocol=4,
        )
    )
    assert scan(p).clean, scan(p).to_dict()
