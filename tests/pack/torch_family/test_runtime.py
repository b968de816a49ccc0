"""Loading torch bundles (issue #3): fresh process, scan-before-load, tampering, extras."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import packserve  # noqa: E402
from packserve.bundle import MANIFEST_NAME, sha256_file  # noqa: E402
from packserve.errors import (  # noqa: E402
    BundleError,
    IntegrityError,
    MissingDependencyError,
    UnsafeFileError,
)

# A pickle that would run `os.system("true")` when unpickled. Written, never loaded.
EVIL_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


@pytest.fixture
def no_jit_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make torch.jit.load fail the test if anything reaches it."""
    calls: list[str] = []

    def trap(*args, **kwargs):
        calls.append(str(args[0]) if args else "?")
        raise AssertionError("torch.jit.load must not be called for this bundle")

    monkeypatch.setattr(torch.jit, "load", trap)
    return calls


def rehash(bundle: Path) -> None:
    """What an attacker who can also rewrite the manifest would do."""
    path = bundle / MANIFEST_NAME
    m = json.loads(path.read_text())
    for name in m["files"]:
        f = bundle / name
        m["files"][name] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    path.write_text(json.dumps(m))


def test_loads_in_fresh_process_without_the_class(fraud_ts_bundle: Path, fraud_torch) -> None:
    x = np.random.default_rng(5).normal(size=(7, 15))
    code = (
        "import json, sys\n"
        "import packserve\n"
        f"p = packserve.load({str(fraud_ts_bundle)!r})\n"
        f"pred = p.predict({x.tolist()!r})\n"
        "assert 'torch_family.models' not in sys.modules\n"
        "assert not any('FraudDetector' in getattr(m, '__dict__', {}) for m in list(sys.modules.values()))\n"
        "print(json.dumps({'p': pred.probabilities[:, 1].tolist(), 'format': p.manifest.format}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["format"] == "torchscript"
    was = fraud_torch.training
    fraud_torch.eval()
    with torch.no_grad():
        ref = fraud_torch(torch.tensor(x, dtype=torch.float32)).numpy().reshape(-1)
    fraud_torch.train(was)
    assert np.max(np.abs(np.asarray(got["p"]) - ref)) <= 1e-6


def test_tampered_artifact_refused_before_jit_load(
    fraud_ts_bundle: Path, tmp_path: Path, no_jit_load: list[str]
) -> None:
    bad = tmp_path / "b"
    shutil.copytree(fraud_ts_bundle, bad)
    art = bad / "model.pt"
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        packserve.load(bad)
    assert no_jit_load == []


def test_malicious_pickle_in_archive_refused_by_scanner(
    fraud_ts_bundle: Path, tmp_path: Path, no_jit_load: list[str]
) -> None:
    """Even with a consistent manifest (re-hashed), the embedded pickle is scanned first."""
    bad = tmp_path / "b"
    shutil.copytree(fraud_ts_bundle, bad)
    art = bad / "model.pt"
    src = zipfile.ZipFile(io.BytesIO(art.read_bytes()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                body = EVIL_PICKLE
            dst.writestr(info, body)
    art.write_bytes(buf.getvalue())
    rehash(bad)
    packserve.verify_bundle(bad)  # integrity alone cannot catch this
    with pytest.raises(UnsafeFileError):
        packserve.load(bad)
    assert no_jit_load == []


def test_scanner_unavailable_fails_closed(
    fraud_ts_bundle: Path, monkeypatch: pytest.MonkeyPatch, no_jit_load: list[str]
) -> None:
    monkeypatch.setitem(sys.modules, "packserve.scan", None)
    with pytest.raises(BundleError, match="scanner"):
        packserve.load(fraud_ts_bundle)
    assert no_jit_load == []


def test_missing_torch_names_the_extra(fraud_ts_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError) as exc:
        packserve.load(fraud_ts_bundle)
    assert "packserve[torch]" in exc.value.message
    from packserve.pack.families.torch.export import require_torch

    with pytest.raises(MissingDependencyError, match=r"packserve\[torch\]"):
        require_torch()


def test_missing_onnxscript_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from packserve.pack.families.torch.export import require_onnxscript

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingDependencyError, match=r"packserve\[torch\]"):
        require_onnxscript()


def test_onnx_torch_bundle_loads_without_torch(fraud_onnx_bundle: Path, monkeypatch) -> None:
    """An ONNX bundle from a torch model is served by ONNX Runtime alone."""
    monkeypatch.setitem(sys.modules, "torch", None)
    pred = packserve.load(fraud_onnx_bundle)
    assert pred.predict(np.zeros((3, 15))).probabilities.shape == (3, 2)


def test_intra_op_threads_applied(fraud_ts_bundle: Path) -> None:
    before = torch.get_num_threads()
    try:
        packserve.load(fraud_ts_bundle, intra_op_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_batch_sizes_and_result_object(fraud_ts_bundle: Path, fraud_onnx_bundle: Path, n: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 15))
    a = packserve.load(fraud_ts_bundle, intra_op_threads=0).predict(x)
    b = packserve.load(fraud_onnx_bundle).predict(x)
    assert type(a) is type(b) and a.classes == b.classes == [0, 1]
    assert a.labels.shape == b.labels.shape == (n,)
    assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-6
    assert a.to_records()[0].keys() == b.to_records()[0].keys()


def test_bad_rows_are_input_errors(fraud_ts_bundle: Path) -> None:
    from packserve.errors import InputError

    pred = packserve.load(fraud_ts_bundle, intra_op_threads=0)
    with pytest.raises(InputError):
        pred.predict([[1.0] * 14])
    with pytest.raises(InputError):
        pred.predict([[float("nan")] * 15])


def test_external_data_files_are_hashed(torch_sample: np.ndarray, tmp_path: Path) -> None:
    from torch_family.models import Regressor, seeded

    model = seeded(Regressor)
    res = packserve.pack(model, tmp_path / "ext", sample=torch_sample, task="regression",
                         external_data=True)
    m = res.manifest
    assert m.export["external_data"] is True
    data_files = [f for f in m.files if f != "model.onnx"]
    assert data_files and all(len(m.files[f].sha256) == 64 for f in data_files)
    x = np.random.default_rng(0).normal(size=(7, 15))
    with torch.no_grad():
        ref = model.eval()(torch.tensor(x, dtype=torch.float32)).numpy().reshape(-1)
    np.testing.assert_allclose(packserve.load(res.path).predict(x).values, ref, atol=1e-5)
    # the weights file is covered by the manifest: tampering with it is refused
    (res.path / data_files[0]).write_bytes(b"\0" * m.files[data_files[0]].size)
    with pytest.raises(IntegrityError):
        packserve.load(res.path)


@pytest.mark.filterwarnings("ignore")
def test_training_nodes_detected_in_a_raw_training_export(tmp_path: Path) -> None:
    """The graph check catches what ONNX Runtime's optimizer would silently hide."""
    import onnx

    from packserve.pack.families.torch.fidelity import training_nodes
    from torch_family.models import FraudDetector, seeded

    model = seeded(FraudDetector).train()
    prog = torch.onnx.export(model, (torch.randn(4, 15),), None, dynamo=True, verbose=False)
    prog.save(str(tmp_path / "train.onnx"))
    found = training_nodes(onnx.load(str(tmp_path / "train.onnx")))
    assert len(found) == 2 and all(f.startswith("Dropout") for f in found)

    # Why the graph is inspected: ORT's optimizer drops these nodes, so with optimizations
    # on the wrong model *looks* deterministic; only the unoptimized graph shows dropout.
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(4, 15)).astype(np.float32)
    spread = {}
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        sess = ort.InferenceSession(str(tmp_path / "train.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        runs = [sess.run(None, {name: x})[0] for _ in range(3)]
        spread[level] = max(float(np.abs(r - runs[0]).max()) for r in runs)
    assert spread["ORT_DISABLE_ALL"] > 0 and spread["ORT_ENABLE_ALL"] == 0


def test_inspect_rows(fraud_ts_bundle: Path, branch_ts_bundle: Path, fraud_onnx_bundle: Path) -> None:
    from packserve.pack.families.torch.info import torch_inspect_rows

    ts = dict(torch_inspect_rows(packserve.read_manifest(fraud_ts_bundle)))
    assert "torchscript" in ts["export"] and "deprecated" in ts["deprecation"]
    assert ts["fidelity"].startswith("passed") and "TRAINING" in ts["mode"]
    br = torch_inspect_rows(packserve.read_manifest(branch_ts_bundle))
    assert any(label == "fallback" for label, _ in br)
    assert "requested method='auto'" in dict(br)["export"]
    ox = dict(torch_inspect_rows(packserve.read_manifest(fraud_onnx_bundle)))
    assert "dynamo" in ox["export"] and "deprecation" not in ox
    assert ox["graph"] == "no training-mode/random nodes"


def test_cli_inspect_shows_torch_rows(branch_ts_bundle: Path) -> None:
    from typer.testing import CliRunner

    from packserve.cli import app

    res = CliRunner().invoke(app, ["inspect", str(branch_ts_bundle)], terminal_width=200)
    assert res.exit_code == 0, res.output
    for text in ("torch.jit.script", "requested method='auto'", "deprecated", "fidelity",
                 "passed", "TRAINING mode", "TracerWarning"):
        assert text in res.output, text


@pytest.mark.timeout(120)
def test_torchscript_bundle_served_over_http(fraud_ts_bundle: Path, fraud_torch) -> None:
    """End to end: a real `packserve serve` process answers from the TorchScript bundle."""
    import httpx

    from helpers.server import running_server

    x = np.random.default_rng(9).normal(size=(3, 15))
    was = fraud_torch.training
    fraud_torch.eval()
    with torch.no_grad():
        ref = fraud_torch(torch.tensor(x, dtype=torch.float32)).numpy().reshape(-1)
    fraud_torch.train(was)
    with running_server(fraud_ts_bundle) as srv:
        for i, row in enumerate(x.tolist()):
            r = httpx.post(f"{srv.url}/predict", json={"features": row}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["probabilities"]["1"] == pytest.approx(ref[i], abs=1e-6)
        bad = httpx.post(f"{srv.url}/predict", json={"features": [1.0] * 14}, timeout=30)
        assert bad.status_code == 422 and "Traceback" not in bad.text
