"""Every framework, classifier and regressor: the bundle predicts what the native model does.

Parity is checked on *all* held-out rows (the pack sample is only the first of them):
labels identical, max |Δprobability| <= 1e-5, regression max |Δ| <= 1e-5 x mean |native|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from zoo import SAMPLE_ROWS, ZOO_KEYS, Zoo, native_predictions

import packserve
from packserve.bundle import read_manifest

PROBA_TOL = 1e-5
REG_REL_TOL = 1e-5


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_held_out_parity(zoo: Zoo, key: str) -> None:
    case = zoo.case(key)
    path = zoo.bundle(key)
    pred = packserve.load(path).predict(case.x_test)
    want = native_predictions(case, case.x_test)
    assert len(case.x_test) > SAMPLE_ROWS  # rows the pack-time check never saw
    if case.kind == "classifier":
        assert pred.labels is not None and pred.probabilities is not None
        assert pred.labels.tolist() == want["labels"].tolist()
        assert np.abs(pred.probabilities - want["probabilities"]).max() <= PROBA_TOL
    else:
        assert pred.values is not None
        tol = REG_REL_TOL * float(np.mean(np.abs(want["values"])))
        assert np.abs(pred.values - want["values"]).max() <= tol


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_manifest_records_parity_opsets_and_no_zipmap(zoo: Zoo, key: str) -> None:
    path = zoo.bundle(key)
    m = read_manifest(path)
    assert m.parity.passed and m.parity.rows == SAMPLE_ROWS
    if m.is_classifier:
        assert m.parity.label_agreement == 1.0
        assert m.parity.max_abs_diff_probability is not None
        assert m.parity.max_abs_diff_probability <= PROBA_TOL
    else:
        assert m.parity.max_abs_diff_value is not None
        assert m.parity.max_abs_diff_value <= m.parity.tolerance
    graph = onnx.load(str(path / m.artifact))
    assert "ZipMap" not in {n.op_type for n in graph.graph.node}
    assert all(o.type.HasField("tensor_type") for o in graph.graph.output)
    declared = {d.domain or "": d.version for d in graph.opset_import}
    assert m.opsets == declared and m.opsets
    assert m.export["zipmap"] is False
    target = m.export["target_opset"]
    if isinstance(target, dict):  # pinned by packserve: the artifact never exceeds the pin
        assert all(v <= target[d] for d, v in declared.items())


def test_catboost_probabilities_are_a_plain_tensor(zoo: Zoo) -> None:
    m = read_manifest(zoo.bundle("catboost-multiclass"))
    assert m.outputs.probability_output == "probabilities"
    assert m.outputs.classes == [0, 1, 2]
    assert any("ZipMap removed" in n for n in m.notes)
    raw = packserve.load(zoo.bundle("catboost-multiclass"))._run_raw(  # type: ignore[attr-defined]
        {"features": zoo.case("catboost-multiclass").x_test[:3].astype(np.float32)}
    )
    assert raw["probabilities"].shape == (3, 3)


def test_catboost_string_classes(tmp_path) -> None:
    from catboost import CatBoostClassifier
    from zoo import _data

    xtr, xte, ytr, _ = _data("multiclass")
    names = np.array(["low", "mid", "high"])
    model = CatBoostClassifier(iterations=20, verbose=0, thread_count=1).fit(xtr, names[ytr])
    res = packserve.pack(model, tmp_path / "cb", sample=xte[:50])
    assert res.manifest.outputs.classes == ["high", "low", "mid"]
    pred = packserve.load(res.path).predict(xte)
    assert pred.labels.tolist() == model.predict(xte).reshape(-1).tolist()


@pytest.mark.parametrize("key", ["catboost-binary", "lightgbm-booster-multiclass", "sklearn-hgb-binary"])
def test_tampered_artifact_is_refused(zoo: Zoo, key: str, tmp_path) -> None:
    import shutil

    from packserve.errors import IntegrityError

    bad = tmp_path / "bad"
    shutil.copytree(zoo.bundle(key), bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0x01
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        packserve.load(bad)


def test_pack_announces_its_phases(zoo: Zoo, tmp_path) -> None:
    from packserve.pack.progress import reporting

    seen: list[str] = []
    case = zoo.case("xgboost-binary")
    with reporting(seen.append):
        packserve.pack(case.model, tmp_path / "b", sample=case.sample)
    assert seen == ["converting", "checking parity", "checking missing values", "writing bundle"]
