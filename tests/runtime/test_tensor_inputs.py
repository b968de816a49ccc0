"""Tensor bundles in the runtime (issue #16): named N-D inputs, integer ranges, named outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import packserve
from helpers.tensor_bundles import VOCAB, expected_logits, expected_two_input
from packserve.bundle import read_manifest
from packserve.errors import BundleError, InputError


@pytest.fixture(scope="module")
def two(two_input_bundle: Path):  # type: ignore[no-untyped-def]
    return packserve.load(two_input_bundle)


def _inputs(n: int = 3, seq: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, VOCAB, (n, seq)),
            "image": rng.normal(size=(n, 3, 4, 4)).astype(np.float32)}


def test_manifest_round_trip_and_schema_version(two_input_bundle: Path, chapter_bundle: Path,
                                                iris_string_bundle: Path) -> None:
    m = read_manifest(two_input_bundle)
    assert m.is_tensor and m.task == "tensor" and m.schema_version == 2
    assert m.input("tokens").value_range == (0, VOCAB - 1)
    assert m.input("tokens").axes == {0: "batch", 1: "seq"}
    assert m.input("image").example_shape(2) == (2, 3, 4, 4)
    assert m.input("tokens").example_shape(2) == (2, 6)  # the variable axis as in the sample
    table = read_manifest(iris_string_bundle)
    assert table.signature == "table" and table.schema_version == 1  # old readers still read it
    assert "allow_missing" not in (iris_string_bundle / "packserve.json").read_text()
    # XGBoost takes missing values (#19): an older reader would drop that, so it says 2
    gaps = read_manifest(chapter_bundle)
    assert gaps.missing_values == "all" and gaps.schema_version == 2


def test_future_schema_version_is_refused(two_input_bundle: Path, tmp_path: Path) -> None:
    raw = json.loads((two_input_bundle / "packserve.json").read_text())
    raw["schema_version"] = 3
    (tmp_path / "packserve.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 3"):
        read_manifest(tmp_path)


def test_named_outputs_match_numpy_reference(two) -> None:  # type: ignore[no-untyped-def]
    x = _inputs()
    pred = two.predict(x)
    ref = expected_two_input(x["tokens"], x["image"])
    assert set(pred.outputs) == {"emb", "pooled"}
    for k in ref:
        assert np.abs(pred.outputs[k] - ref[k]).max() < 1e-5
    assert len(pred) == 3
    part = pred.slice(1, 3)
    assert part.outputs["emb"].shape == (2, 4)
    rec = pred.to_records()
    assert rec[0]["outputs"]["pooled"] == pytest.approx(ref["pooled"][0].tolist(), abs=1e-5)


def test_input_forms_agree(two) -> None:  # type: ignore[no-untyped-def]
    x = _inputs()
    ref = two.predict(x).outputs["emb"]
    as_tuple = two.predict((x["tokens"], x["image"])).outputs["emb"]
    records = [{"tokens": x["tokens"][i].tolist(), "image": x["image"][i].tolist()} for i in range(3)]
    as_records = two.predict(records).outputs["emb"]
    as_lists = two.predict({k: v.tolist() for k, v in x.items()}).outputs["emb"]
    for got in (as_tuple, as_records, as_lists):
        assert np.array_equal(got, ref)


def test_variable_axis_accepts_other_lengths(two) -> None:  # type: ignore[no-untyped-def]
    x = _inputs(seq=11)
    ref = expected_two_input(x["tokens"], x["image"])["emb"]
    assert np.abs(two.predict(x).outputs["emb"] - ref).max() < 1e-5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: {**x, "image": x["image"][..., :3]}, "input 'image': axis 3 has 3 values, expected 4"),
        (lambda x: {**x, "image": x["image"][0]}, "expected a 4-D array .* got 3-D \\(add the batch axis"),
        (lambda x: {**x, "tokens": x["tokens"] + VOCAB},
         r"input 'tokens', instance 0: must be within \[0, 49\]"),
        (lambda x: {**x, "tokens": x["tokens"] * 0.5 + 0.25}, "must be a whole number at position"),
        (lambda x: {**x, "tokens": x["tokens"] > 3}, "takes integers .* got booleans"),
        (lambda x: {**x, "image": np.where(x["image"] > 1, np.nan, x["image"])}, "NaN or infinite"),
        (lambda x: {**x, "image": x["image"].astype(np.float64) * 1e39}, "overflows float32"),
        (lambda x: {**x, "image": x["image"][:2]}, "disagree on the number of instances"),
        (lambda x: {"tokens": x["tokens"]}, r"missing input\(s\) \['image'\]"),
        (lambda x: {**x, "extra": 1}, "unknown input 'extra'"),
        (lambda x: x["tokens"], "takes 2 inputs"),
    ],
)
def test_bad_inputs_name_input_instance_and_axis(two, change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=message):
        two.predict(change(_inputs()))


def test_out_of_range_token_names_its_instance(two) -> None:  # type: ignore[no-untyped-def]
    x = _inputs(n=5)
    x["tokens"][3, 2] = VOCAB
    with pytest.raises(InputError, match=r"instance 3: must be within \[0, 49\].* at position \[2\]"):
        two.predict(x)


def test_nested_lists_locate_the_instance_and_axis(two) -> None:  # type: ignore[no-untyped-def]
    x = _inputs(n=5)
    records = [{"tokens": x["tokens"][i].tolist(), "image": x["image"][i].tolist()} for i in range(5)]
    records[3]["tokens"] = records[3]["tokens"] + [1]
    with pytest.raises(InputError, match="input 'tokens', instance 3: axis 1 has 6 values, expected 5"):
        two.predict(records)
    records[3]["tokens"] = records[3]["tokens"][:5]
    records[2]["image"][1][2] = records[2]["image"][1][2][:3]
    with pytest.raises(InputError, match="input 'image', instance 2: axis 3 has 3 values, expected 4"):
        two.predict(records)


def test_classifier_with_tensor_input(image_clf_bundle: Path) -> None:
    p = packserve.load(image_clf_bundle)
    img = np.random.default_rng(1).normal(size=(6, 3, 4, 4)).astype(np.float32)
    pred = p.predict(img)
    logits = expected_logits(img)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(pred.probabilities - probs).max() < 1e-5
    assert pred.labels.tolist() == np.asarray(["cat", "dog", "eel"])[probs.argmax(axis=1)].tolist()


def test_warmup_and_example_feeds(two) -> None:  # type: ignore[no-untyped-def]
    assert len(two.warmup()) == 1
    feeds = two.example_feeds(4)
    assert feeds["tokens"].shape == (4, 6) and feeds["tokens"].dtype == np.int64
    assert feeds["image"].shape == (4, 3, 4, 4) and feeds["image"].dtype == np.float32
