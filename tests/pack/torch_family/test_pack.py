"""Packing torch.nn.Module models (issue #3): eval mode, fidelity, control flow, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import packserve  # noqa: E402
from packserve.errors import ConfigError, PackError, ParityError  # noqa: E402
from torch_family.models import (  # noqa: E402
    AlwaysDropout,
    BatchNormNet,
    CondBranch,
    FraudDetector,
    NormBranch,
    Regressor,
    SoftmaxNet,
    SumBranch,
    seeded,
)

BATCHES = (1, 7, 64)


def eager(model, x: np.ndarray) -> np.ndarray:
    """Reference: the eval-mode model (mode restored afterwards)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.tensor(x, dtype=torch.float32)).numpy()
    finally:
        model.train(was)


def rows(n: int, seed: int = 3, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 15)) * scale


# --- the chapter's FraudDetector, packed from training mode --------------------------------


@pytest.mark.parametrize("bundle", ["fraud_onnx_bundle", "fraud_ts_bundle"])
def test_training_mode_model_packs_eval_behaviour(bundle, fraud_torch, request) -> None:
    path = request.getfixturevalue(bundle)
    assert fraud_torch.training, "the caller's training mode must be restored"
    assert all(m.training for m in fraud_torch.modules())
    pred = packserve.load(path)
    for n in BATCHES:
        x = rows(n, seed=n)
        got = pred.predict(x)
        ref = eager(fraud_torch, x).reshape(-1)
        assert got.probabilities.shape == (n, 2)
        assert np.max(np.abs(got.probabilities[:, 1] - ref)) <= 1e-6
        assert got.labels.tolist() == (ref >= 0.5).astype(int).tolist()
    # deterministic: dropout is not active in the bundle
    x = rows(64)
    np.testing.assert_array_equal(pred.predict(x).probabilities, pred.predict(x).probabilities)
    m = pred.manifest
    assert m.framework == "torch" and m.task == "binary"
    assert m.outputs.postprocess == "sigmoid_probability" and m.outputs.classes == [0, 1]
    assert m.export["was_training"] is True and m.export["exported_in_mode"] == "eval"
    assert any("training mode" in n for n in m.notes)


def test_manifest_records_fidelity_per_probe(fraud_onnx_bundle: Path, fraud_ts_bundle: Path) -> None:
    for path, fmt, method in ((fraud_onnx_bundle, "onnx", "dynamo"),
                              (fraud_ts_bundle, "torchscript", "trace")):
        m = packserve.read_manifest(path)
        assert m.format == fmt and m.export["method"] == method
        fidelity = [c for c in m.parity.checks if c["check"] == "fidelity"]
        assert {1, 7, 64} <= {c["rows"] for c in fidelity}
        assert {"negated", "scaled_x10", "wide_uniform"} <= {c["probe"] for c in fidelity}
        assert all(c["passed"] and c["max_abs_diff"] <= c["tolerance"] for c in fidelity)
        assert m.export["fidelity"]["passed"] and m.parity.passed
        det = [c for c in m.parity.checks if c["check"] == "determinism"]
        assert det and det[0]["max_abs_diff"] == 0.0
    onnx_m = packserve.read_manifest(fraud_onnx_bundle)
    # ONNX is compared both as exported (optimizer off) and as served (optimizer on)
    assert {c["runtime"] for c in onnx_m.parity.checks if c["check"] == "fidelity"} == {
        "onnxruntime(optimization=disable)", "onnxruntime(optimization=all)"}
    graph = [c for c in onnx_m.parity.checks if c["check"] == "no_training_nodes"][0]
    assert graph["passed"] and "Dropout" not in graph["ops"]
    ts_m = packserve.read_manifest(fraud_ts_bundle)
    assert "deprecated" in ts_m.export["deprecation"]


def test_onnx_bundle_is_one_self_contained_file(fraud_onnx_bundle: Path) -> None:
    m = packserve.read_manifest(fraud_onnx_bundle)
    assert set(m.files) == {"model.onnx"}
    assert m.export["external_data"] is False
    # no host paths leaked through node metadata (stack traces)
    assert b"stack_trace" not in (fraud_onnx_bundle / "model.onnx").read_bytes()


def test_onnx_graph_has_dynamic_batch(fraud_onnx_bundle: Path) -> None:
    import onnx

    model = onnx.load(str(fraud_onnx_bundle / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 15


def test_mixed_module_modes_are_restored(torch_sample: np.ndarray, tmp_path: Path) -> None:
    model = seeded(FraudDetector)
    model.train()
    model.net[2].eval()  # caller deliberately mixed modes
    before = [m.training for m in model.modules()]
    packserve.pack(model, tmp_path / "b", sample=torch_sample, format="torchscript")
    assert [m.training for m in model.modules()] == before


def test_modes_restored_even_when_pack_fails(torch_sample: np.ndarray, tmp_path: Path) -> None:
    model = seeded(SumBranch)
    model.train()
    with pytest.raises(PackError):
        packserve.pack(model, tmp_path / "b", sample=torch_sample, format="onnx", task="regression")
    assert all(m.training for m in model.modules())


def test_batchnorm_dropout_model_from_training_mode(torch_sample: np.ndarray, tmp_path: Path) -> None:
    model = seeded(BatchNormNet)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(5):
            model(torch.tensor(torch_sample * 3 + 1, dtype=torch.float32))
    res = packserve.pack(model, tmp_path / "bn", sample=torch_sample, format="torchscript",
                         task="multiclass", output="logits", classes=["a", "b", "c"])
    assert model.training
    x = rows(7, seed=11)
    got = packserve.load(res.path).predict(x)
    logits = eager(model, x)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.max(np.abs(got.probabilities - ref)) <= 1e-6
    assert got.labels.tolist() == np.array(["a", "b", "c"])[ref.argmax(1)].tolist()
    assert res.manifest.outputs.postprocess == "softmax"


# --- data-dependent control flow -------------------------------------------------------------


def test_trace_of_branching_model_is_refused_with_advice(torch_sample: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ParityError) as exc:
        packserve.pack(seeded(SumBranch, 1), tmp_path / "b", sample=torch_sample,
                       format="torchscript", method="trace", task="regression")
    assert "method='script'" in exc.value.message
    assert "negated" in exc.value.message
    assert not (tmp_path / "b").exists()
    assert not any(tmp_path.iterdir()), "staging directory left behind"


def test_auto_falls_back_to_script_and_is_faithful(branch_ts_bundle: Path) -> None:
    m = packserve.read_manifest(branch_ts_bundle)
    assert m.export["method"] == "script" and m.export["requested_method"] == "auto"
    assert "fell back to script" in m.export["fallback"][0]
    assert any("TracerWarning" in n or "unfaithful" in n for n in m.notes)
    assert m.export["tracer_warnings"], "the trace's TracerWarning must be recorded"
    model = seeded(SumBranch, 1).eval()
    pred = packserve.load(branch_ts_bundle)
    for x in (np.abs(rows(7)), -np.abs(rows(7)), rows(1), rows(64)):
        got = pred.predict(x).values
        np.testing.assert_allclose(got, eager(model, x).reshape(-1), atol=1e-5)


def test_norm_branch_auto_scripts(torch_sample: np.ndarray, tmp_path: Path) -> None:
    res = packserve.pack(seeded(NormBranch), tmp_path / "n", sample=torch_sample,
                         format="torchscript", task="multiclass", output="logits")
    assert res.manifest.export["method"] == "script"
    pred = packserve.load(res.path)
    model = seeded(NormBranch).eval()
    for x in (rows(1, scale=0.01), rows(64, scale=5.0)):
        logits = eager(model, x)
        ref = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(pred.predict(x).probabilities, ref / ref.sum(1, keepdims=True),
                                   atol=1e-6)


@pytest.mark.parametrize("cls", [SumBranch, NormBranch])
def test_onnx_refuses_data_dependent_branch(cls, torch_sample: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(PackError) as exc:
        packserve.pack(seeded(cls), tmp_path / "o", sample=torch_sample, task="regression")
    assert "method='script'" in exc.value.message
    assert not (tmp_path / "o").exists()


def test_onnx_exports_torch_cond_branch_faithfully(torch_sample: np.ndarray, tmp_path: Path) -> None:
    """The same control flow written with torch.cond becomes an ONNX `If`: both branches."""
    model = seeded(CondBranch, 1)
    res = packserve.pack(model, tmp_path / "c", sample=torch_sample, task="regression")
    graph = [c for c in res.manifest.parity.checks if c["check"] == "no_training_nodes"][0]
    assert "If" in graph["ops"]
    pred = packserve.load(res.path)
    for x in (np.abs(rows(7)), -np.abs(rows(7)), rows(1), rows(64)):
        np.testing.assert_allclose(pred.predict(x).values, eager(model, x).reshape(-1), atol=1e-5)


def test_nondeterministic_model_is_refused(torch_sample: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(PackError, match="not deterministic"):
        packserve.pack(seeded(AlwaysDropout), tmp_path / "d", sample=torch_sample,
                       format="torchscript", task="binary", output="probability")
    assert not (tmp_path / "d").exists()


# --- output semantics -----------------------------------------------------------------------


def test_softmax_model_is_inferred_multiclass(torch_sample: np.ndarray, tmp_path: Path) -> None:
    res = packserve.pack(seeded(SoftmaxNet), tmp_path / "s", sample=torch_sample,
                         format="torchscript")
    assert res.manifest.task == "multiclass"
    assert res.manifest.outputs.postprocess == "probabilities"
    assert res.manifest.outputs.classes == [0, 1, 2]


def test_regression_values(torch_sample: np.ndarray, tmp_path: Path) -> None:
    model = seeded(Regressor)
    res = packserve.pack(model, tmp_path / "r", sample=torch_sample, format="torchscript",
                         task="regression", method="script")
    assert res.manifest.export["method"] == "script"
    x = rows(7)
    got = packserve.load(res.path).predict(x)
    np.testing.assert_allclose(got.values, eager(model, x).reshape(-1), atol=1e-6)
    assert [r.keys() for r in got.to_records()][0] == {"prediction"}


def test_threshold_is_recorded_and_used(torch_sample: np.ndarray, tmp_path: Path) -> None:
    model = seeded(FraudDetector)
    res = packserve.pack(model, tmp_path / "t", sample=torch_sample, format="torchscript",
                         threshold=0.49)
    assert res.manifest.outputs.threshold == 0.49
    x = rows(64)
    p = eager(model, x).reshape(-1)
    got = packserve.load(res.path).predict(x)
    assert got.labels.tolist() == (p >= 0.49).astype(int).tolist()


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (Regressor, {}, "cannot tell what the model's output means"),
        (Regressor, {"task": "binary"}, "output='probability' or output='logits'"),
        (Regressor, {"task": "binary", "output": "probability"}, "look like logits"),
        (FraudDetector, {"output": "logits"}, "contradicts"),
        (SoftmaxNet, {"task": "binary"}, "1 or 2 output columns"),
        (FraudDetector, {"classes": ["only-one"]}, "needs 2 distinct labels"),
        (FraudDetector, {"task": "regression", "output": "logits"}, "apply to classifiers"),
        (FraudDetector, {"format": "savedmodel"}, "format must be"),
        (FraudDetector, {"method": "trace"}, "applies to format='torchscript'"),
        (FraudDetector, {"format": "torchscript", "method": "compile"}, "method must be"),
        (FraudDetector, {"threshold": 1.5}, "threshold must be"),
    ],
)
def test_ambiguous_or_wrong_options_ask_clearly(cls, kwargs, match, torch_sample, tmp_path) -> None:
    with pytest.raises(ConfigError, match=match):
        packserve.pack(seeded(cls), tmp_path / "x", sample=torch_sample, **kwargs)
    assert not (tmp_path / "x").exists()


def test_wrong_sample_width_is_a_sample_error(tmp_path: Path) -> None:
    from packserve.errors import SampleError

    with pytest.raises(SampleError, match="failed on the sample"):
        packserve.pack(seeded(FraudDetector), tmp_path / "w", sample=np.zeros((3, 4)))


def test_tensor_sample_and_feature_names(tmp_path: Path) -> None:
    names = [f"x{i}" for i in range(15)]
    res = packserve.pack(seeded(FraudDetector), tmp_path / "f", sample=torch.randn(20, 15),
                         feature_names=names, format="torchscript")
    assert res.manifest.feature_names == names
    got = packserve.load(res.path).predict([dict(zip(names, range(15), strict=True))])
    assert got.labels.shape == (1,)
    json.dumps(res.manifest.model_dump())  # manifest stays JSON-clean


def test_tracer_warnings_are_captured_not_printed(torch_sample, tmp_path, capfd) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        res = packserve.pack(seeded(SumBranch, 2), tmp_path / "w", sample=torch_sample,
                             format="torchscript", task="regression")
    out, err = capfd.readouterr()
    assert "TracerWarning" not in err + out and "Converting a tensor" not in err + out
    assert not [w for w in escaped if w.category.__name__ == "TracerWarning"]
    assert any("Converting a tensor to a Python boolean" in w
               for w in res.manifest.export["tracer_warnings"])


def test_readonly_feeds_are_accepted(fraud_ts_bundle) -> None:
    pred = packserve.load(fraud_ts_bundle, intra_op_threads=0)
    feeds = pred.to_feeds(rows(3))
    for v in feeds.values():
        v.setflags(write=False)
    assert len(pred.run(feeds)) == 3


def test_torchscript_archive_carries_no_sample_rows_or_host_paths(fraud_ts_bundle) -> None:
    import zipfile

    art = fraud_ts_bundle / "model.pt"
    names = zipfile.ZipFile(art).namelist()
    assert not [n for n in names if n.endswith((".debug_pkl", "traced_inputs.pkl"))]
    blob = b"".join(zipfile.ZipFile(art).read(n) for n in names)
    assert b"site-packages" not in blob and b"/tests/pack/" not in blob
    assert packserve.read_manifest(fraud_ts_bundle).export["archive_members_dropped"] > 0


def test_probes_the_eager_model_rejects_are_skipped_and_named(torch_sample, tmp_path) -> None:
    from packserve.pack.families.torch.fidelity import eager_on_probes, make_probes

    class RangeChecked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(15, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x.abs() > 8.0).any()):
                raise ValueError("feature out of range")
            return self.lin(x)

    model = RangeChecked().eval()
    out, skipped = eager_on_probes(model, make_probes(torch_sample), np.float32)
    assert "sample" in out and "batch_1" in out
    assert any(s.startswith("scaled_x10") for s in skipped)
    assert not any(s.startswith("sample") for s in skipped)


def test_existing_output_is_refused_without_force(fraud_onnx_bundle) -> None:
    from packserve.errors import OutputExistsError

    before = (fraud_onnx_bundle / "packserve.json").read_bytes()
    with pytest.raises(OutputExistsError):
        packserve.pack(seeded(FraudDetector), fraud_onnx_bundle, sample=rows(5))
    assert (fraud_onnx_bundle / "packserve.json").read_bytes() == before


def test_onnx_fidelity_failure_refuses_with_advice(fraud_onnx_bundle, fraud_torch, torch_sample,
                                                   tmp_path) -> None:
    """A tolerance below the measured ONNX-vs-eager |Δ| must refuse, naming the probes."""
    worst = packserve.read_manifest(fraud_onnx_bundle).export["fidelity"]["max_abs_diff"]
    assert 0 < worst <= 1e-6
    with pytest.raises(ParityError) as exc:
        packserve.pack(fraud_torch, tmp_path / "o", sample=torch_sample,
                       fidelity_atol=worst / 2, fidelity_rtol=0.0)
    assert "ONNX export is not faithful" in exc.value.message and "max |Δ|" in exc.value.message
    assert not (tmp_path / "o").exists() and fraud_torch.training


def test_allow_parity_failure_records_the_unfaithful_trace(torch_sample, tmp_path) -> None:
    res = packserve.pack(seeded(SumBranch, 1), tmp_path / "u", sample=torch_sample,
                         format="torchscript", method="trace", task="regression",
                         allow_parity_failure=True)
    m = res.manifest
    assert m.parity.passed is False and m.export["fidelity"]["passed"] is False
    assert any(n.startswith("FIDELITY FAILED") for n in m.notes)
    assert [c for c in m.parity.checks if c["check"] == "fidelity" and not c["passed"]]


def test_float64_model_gets_float64_input(torch_sample, tmp_path) -> None:
    model = seeded(Regressor).double()
    res = packserve.pack(model, tmp_path / "d", sample=torch_sample, format="torchscript",
                         task="regression")
    assert res.manifest.inputs[0].dtype == "float64"
    assert res.manifest.export["input_precision"] == "float64"
    x = rows(7)
    with torch.no_grad():
        ref = model.eval()(torch.tensor(x)).numpy().reshape(-1)
    np.testing.assert_array_equal(packserve.load(res.path).predict(x).values, ref)
