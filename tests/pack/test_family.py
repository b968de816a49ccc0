"""The packer protocol itself: a family implements only its part; the common flow does the rest.

The family here is what a newcomer writes: a linear model (weights in numpy) exported to a
real ONNX graph (MatMul + Add) — opened by the real runtime, compared, written, loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import packserve
from packserve.bundle import OutputSpec, TensorSpec, read_manifest
from packserve.errors import PackError, ParityError
from packserve.pack import flow
from packserve.pack.families import REGISTRY, SUPPORTED, family_for, registration_for
from packserve.pack.family import (
    Attempt,
    Export,
    ExportJob,
    Family,
    converter_errors,
    write_onnx,
)
from packserve.pack.parity import NativeOutput
from packserve.pack.signature import SampleTable


@dataclass
class Linear:
    w: np.ndarray  # (k,)
    b: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.w + self.b


class LinearFamily(Family):
    title = "linear"
    options = frozenset({"bias_error"})

    def __init__(self, *, export_bias_errors: Sequence[float] = (0.0,), crash: bool = False):
        self.bias_errors = list(export_bias_errors)
        self.crash = crash
        self.exported: list[str] = []

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        if not isinstance(model, Linear):
            raise PackError("not a Linear")

    def native(self, model: Any, sample: SampleTable) -> NativeOutput:
        return NativeOutput(values=model.predict(sample.table))

    def attempts(self, model: Any, options: Mapping[str, Any]) -> Sequence[Attempt]:
        return [Attempt(f"try{i}", f"attempt {i}" if i else "") for i in range(len(self.bias_errors))]

    def export(self, job: ExportJob) -> Export:
        from onnx import TensorProto, helper, numpy_helper

        self.exported.append(job.attempt.name)
        k = len(job.sample.features)
        err = self.bias_errors[int(job.attempt.name[3:])]
        w = numpy_helper.from_array(job.model.w.astype(np.float32).reshape(k, 1), "w")
        b = numpy_helper.from_array(np.array([job.model.b + err], np.float32), "b")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["input", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["value"])],
            "linear",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, k])],
            [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])],
            initializer=[w, b],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        with converter_errors("the linear exporter failed"):
            if self.crash:
                raise RuntimeError("exporter exploded")
        opsets = write_onnx(job.staging, proto)
        return Export(
            artifact="model.onnx",
            inputs=[TensorSpec(name="input", dtype="float32", shape=[None, k],
                               features=job.sample.names)],
            outputs=OutputSpec(task="regression", postprocess="identity", value_output="value",
                               names=["value"]),
            framework="numpy", framework_version=np.__version__, model_type="test.Linear",
            opsets=opsets,
            notes=[f"retry after: {job.previous.message[:20]}"] if job.previous else [],
        )


@pytest.fixture(scope="module")
def linear() -> tuple[Linear, np.ndarray]:
    rng = np.random.default_rng(0)
    return Linear(w=rng.normal(size=4), b=3.0), rng.normal(size=(30, 4))


def _run(family: Family, model: Any, out: Any, x: np.ndarray, **kw: Any) -> Any:
    common: dict[str, Any] = {"name": "lin", "version": "1.0.0", "feature_names": None,
                              "force": False, "allow_parity_failure": False, "options": {}}
    common.update(kw)
    return flow.run(family, model, out, sample=x, **common)


def test_a_family_that_implements_only_its_part_writes_a_served_bundle(linear, tmp_path) -> None:
    model, x = linear
    res = _run(LinearFamily(), model, tmp_path / "b", x)
    m = read_manifest(res.path)
    assert m.parity.passed and m.parity.rows == 30 and m.opsets == {"": 17}
    assert m.features[0].name == "f0" and len(m.examples) == 5
    pred = packserve.load(res.path).predict(x)
    assert pred.values is not None
    np.testing.assert_allclose(pred.values.reshape(-1), model.predict(x), rtol=1e-5, atol=1e-5)


def test_a_failed_attempt_moves_on_to_the_next_and_the_manifest_says_why(linear, tmp_path) -> None:
    model, x = linear
    fam = LinearFamily(export_bias_errors=(0.5, 0.0))
    res = _run(fam, model, tmp_path / "b", x)
    assert fam.exported == ["try0", "try1"]
    assert res.manifest.notes == ["retry after: parity failed on 30 "]


def test_every_attempt_failing_names_each_result_and_leaves_nothing(linear, tmp_path) -> None:
    model, x = linear
    with pytest.raises(ParityError) as info:
        _run(LinearFamily(export_bias_errors=(0.5, 0.25)), model, tmp_path / "b", x)
    assert "; retried with attempt 1: parity failed" in info.value.message
    assert not list(tmp_path.iterdir())  # no bundle, no staging directory


def test_allow_parity_failure_applies_to_the_last_attempt_only(linear, tmp_path) -> None:
    model, x = linear
    fam = LinearFamily(export_bias_errors=(0.5, 0.25))
    res = _run(fam, model, tmp_path / "b", x, allow_parity_failure=True)
    assert fam.exported == ["try0", "try1"] and not res.parity.passed
    assert any("WRITTEN DESPITE PARITY FAILURE" in n for n in res.manifest.notes)


def test_converter_crash_is_a_named_pack_error_and_staging_is_removed(linear, tmp_path) -> None:
    model, x = linear
    with pytest.raises(PackError, match="the linear exporter failed: RuntimeError: exporter exploded"):
        _run(LinearFamily(crash=True), model, tmp_path / "b", x)
    assert not list(tmp_path.iterdir())


def test_unknown_option_is_refused_before_any_work(linear, tmp_path) -> None:
    model, x = linear
    fam = LinearFamily()
    with pytest.raises(PackError, match=r"unknown option\(s\) for linear: \['depth'\]"):
        _run(fam, model, tmp_path / "b", x, options={"depth": 3})
    assert fam.exported == []


def test_registry_matches_by_module_name_in_the_class_hierarchy() -> None:
    import lightgbm
    import xgboost
    from sklearn.linear_model import LinearRegression

    assert registration_for(xgboost.Booster()).module == "booster"
    assert registration_for(xgboost.XGBRegressor()).module == "sklearn"
    assert registration_for(lightgbm.LGBMRegressor()).module == "sklearn"
    assert registration_for(LinearRegression()).module == "sklearn"
    assert isinstance(family_for(LinearRegression()), Family)
    assert [r.module for r in REGISTRY] == [
        "onnx", "torch", "keras", "savedmodel", "catboost", "booster", "sklearn"]
    from packserve.pack.families.savedmodel import SavedModelDir

    assert registration_for(SavedModelDir("sm")).module == "savedmodel"
    assert all(r.supports in SUPPORTED for r in REGISTRY)
