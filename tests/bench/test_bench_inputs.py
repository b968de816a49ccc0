"""Inputs from a signature: varied, typed like the signature, categories from the examples."""

from __future__ import annotations

import json

import pytest

from packserve.bench.inputs import (
    Feature,
    RowGenerator,
    Signature,
    apply_v2_dtypes,
    build_bodies,
    parse_model_metadata,
)
from packserve.errors import ConfigError

SIG = Signature(
    "toy",
    [Feature("amount", "float32"), Feature("count", "int64"), Feature("country", "string"),
     Feature("flag", "bool")],
    [[12.5, 3, "FR", True], [80.0, 1, "DE", False], [3.2, 7, "FR", True]],
)


def test_rows_are_varied_typed_and_realistic() -> None:
    gen = RowGenerator(SIG, seed=1)
    rows = [gen.row() for _ in range(300)]
    assert len({json.dumps(r) for r in rows}) > 250  # not one fixed body
    for amount, count, country, flag in rows:
        assert isinstance(amount, float) and -60 < amount < 160
        assert isinstance(count, int) and not isinstance(count, bool)
        assert country in {"FR", "DE"}  # only categories the model has seen
        assert isinstance(flag, bool)
    again = RowGenerator(SIG, seed=1)
    assert [again.row() for _ in range(3)] == rows[:3]  # reproducible


def test_without_examples_and_bodies() -> None:
    sig = Signature(None, [Feature("a"), Feature("s", "string")])
    rows = [RowGenerator(sig).row() for _ in range(5)]
    assert all(isinstance(r[0], float) and isinstance(r[1], str) for r in rows)
    single = build_bodies(SIG, count=4)
    assert len(single) == 4 and list(json.loads(single[0])) == ["features"]
    batch = json.loads(build_bodies(SIG, batch_size=3, count=1)[0])
    assert [list(i) for i in batch["instances"]] == [["features"]] * 3
    with pytest.raises(ConfigError):
        build_bodies(SIG, batch_size=0)


def test_parse_server_metadata_shapes() -> None:
    packserve_like = {"default_model": "fraud", "models": [
        {"name": "fraud", "features": ["f0", "f1"], "task": "binary"}]}
    sig = parse_model_metadata(packserve_like, None)
    assert [f.name for f in sig.features] == ["f0", "f1"] and not sig.dtypes_known
    assert apply_v2_dtypes(sig, {"inputs": [{"name": "input", "datatype": "FP32",
                                            "shape": [-1, 2]}]})
    assert sig.dtypes_known and {f.dtype for f in sig.features} == {"float32"}

    rich = [{"name": "a", "signature": {"features": [{"name": "x", "dtype": "string"}],
                                        "examples": [["u"], ["v"]]}},
            {"name": "b", "features": [{"name": "y", "dtype": "int64"}]}]
    a = parse_model_metadata(rich, "a")
    assert a.features == [Feature("x", "string")] and a.examples == [["u"], ["v"]]
    assert parse_model_metadata(rich, "b").features == [Feature("y", "int64")]
    with pytest.raises(ConfigError, match="no model 'c'"):
        parse_model_metadata(rich, "c")
    with pytest.raises(ConfigError, match="--bundle"):
        parse_model_metadata({"models": [{"name": "z"}]}, None)

    per_column = Signature("m", [Feature("age"), Feature("city")], dtypes_known=False)
    assert apply_v2_dtypes(per_column, {"inputs": [{"name": "age", "datatype": "FP64"},
                                                   {"name": "city", "datatype": "BYTES"}]})
    assert [f.dtype for f in per_column.features] == ["float64", "string"]


def test_signature_from_bundle(iris_string_bundle) -> None:  # type: ignore[no-untyped-def]
    sig = Signature.from_bundle(iris_string_bundle)
    assert sig.model == "iris" and [f.name for f in sig.features][0] == "sepal_length"
    assert sig.examples and len(sig.examples[0]) == 4
