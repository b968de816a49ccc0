"""Bring your own ONNX (issue #16): files made outside packserve pack, serve and pass
``--expected`` parity; malformed ones, escaping external data and foreign domains are refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import packserve
from helpers.server import running_server
from packserve.cli import app
from packserve.errors import PackError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, np.ndarray]:
    """A text classifier exported by torch.onnx (outside packserve) + sample + expected."""
    from torch_family.nd_models import TextClassifier, seeded

    d = tmp_path_factory.mktemp("byo_torch")
    model = seeded(TextClassifier).eval()
    x = np.random.default_rng(0).integers(0, 100, (12, 16))
    torch.onnx.export(model, (torch.from_numpy(x),), str(d / "text.onnx"), dynamo=False,
                      input_names=["tokens"], output_names=["logits"],
                      dynamic_axes={"tokens": {0: "batch"}, "logits": {0: "batch"}})
    np.savez(d / "sample.npz", tokens=x)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    np.savez(d / "expected.npz", logits=logits)
    return d / "text.onnx", d / "sample.npz", d / "expected.npz", logits


def test_torch_onnx_file_packs_with_expected_parity_and_serves(torch_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    onnx_path, sample, expected, logits = torch_file
    res = CliRunner().invoke(app, ["pack", str(onnx_path), str(tmp_path / "b"), "--sample", str(sample),
                                   "--expected", str(expected)])
    assert res.exit_code == 0, res.output
    p = packserve.load(tmp_path / "b")
    m = p.manifest
    assert m.task == "tensor" and m.is_tensor and m.parity.passed
    assert m.export["producer"].startswith("pytorch") and m.opsets[""] >= 13
    assert m.inputs[0].name == "tokens" and m.inputs[0].dtype == "int64" and m.inputs[0].shape == [None, 16]
    x = np.load(sample)["tokens"]
    assert np.abs(p.predict(x).outputs["logits"] - logits).max() <= 1e-4
    with running_server(tmp_path / "b") as srv:
        r = httpx.post(f"{srv.url}/predict", json={"inputs": x[0].tolist()})
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["outputs"]["logits"], p.predict(x[:1]).outputs["logits"][0], atol=1e-6)
    wrong = dict(np.load(expected))
    wrong["logits"] = wrong["logits"] + 0.01
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(packserve.errors.ParityError, match="parity failed"):
        packserve.pack(str(onnx_path), tmp_path / "w", sample=sample, expected=tmp_path / "wrong.npz")
    assert not (tmp_path / "w").exists()


def test_skl2onnx_classifier_packs_with_classes(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(200, 5, random_state=0)
    x = x.astype(np.float32)
    clf = LogisticRegression().fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    (tmp_path / "lr.onnx").write_bytes(onx.SerializeToString())
    names = [o.name for o in onx.graph.output]
    np.savez(tmp_path / "exp.npz", **{names[0]: clf.predict(x[:50]), names[1]: clf.predict_proba(x[:50])})
    res = packserve.pack(str(tmp_path / "lr.onnx"), tmp_path / "b", sample={onx.graph.input[0].name: x[:50]},
                         expected=tmp_path / "exp.npz", task="binary", classes=["no", "yes"])
    pred = packserve.load(res.path).predict(x[50:60])
    assert pred.labels.tolist() == np.asarray(["no", "yes"])[clf.predict(x[50:60])].tolist()
    assert np.abs(pred.probabilities - clf.predict_proba(x[50:60])).max() <= 1e-5
    zipmapped = to_onnx(clf, x[:1], target_opset=17)
    (tmp_path / "zm.onnx").write_bytes(zipmapped.SerializeToString())
    with pytest.raises(PackError, match="zipmap"):
        packserve.pack(str(tmp_path / "zm.onnx"), tmp_path / "z", sample=x[:5])


def test_malformed_escaping_and_foreign_files_are_refused(torch_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import helper

    onnx_path, sample, _, _ = torch_file
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage that is not protobuf" * 3)
    with pytest.raises(PackError, match="not an ONNX model|fails onnx.checker"):
        packserve.pack(str(tmp_path / "junk.onnx"), tmp_path / "o1", sample=sample)

    proto = onnx.load(str(onnx_path))
    escaping = tmp_path / "ext"
    escaping.mkdir()
    onnx.save(proto, str(escaping / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    (tmp_path / "secret.bin").write_bytes((escaping / "w.bin").read_bytes())
    moved = onnx.load(str(escaping / "m.onnx"), load_external_data=False)
    for t in moved.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save(moved, str(escaping / "m.onnx"))
    with pytest.raises(PackError, match="outside the model's directory"):
        packserve.pack(str(escaping / "m.onnx"), tmp_path / "o2", sample=sample)
    assert not (tmp_path / "o2").exists()

    g = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="acme.ops")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme.ops", 1)])
    onnx.save(m, str(tmp_path / "foreign.onnx"))
    with pytest.raises(PackError, match="domain 'acme.ops'.*custom-op"):
        packserve.pack(str(tmp_path / "foreign.onnx"), tmp_path / "o3", sample=np.zeros((2, 2), np.float32))
