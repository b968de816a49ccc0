"""Samples as people save them (issue #19): CSV with gaps, NA, an index, booleans; parquet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from packserve.errors import SampleError
from packserve.pack import samples


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.csv"
    p.write_text(text)
    return p


def test_to_csv_with_missing_cells_and_index_reads_as_nan(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [np.nan, 2.0, 0.5]})
    p = tmp_path / "s.csv"
    df.to_csv(p)  # index=True: a nameless first column 0, 1, 2
    s = samples.load_sample_file(p)
    assert s.header == ["a", "b"]
    assert np.array_equal(s.table, df.to_numpy(), equal_nan=True)


@pytest.mark.parametrize("token", ["", "NA", "nan", "NaN", "NULL", "null", "None", "N/A", " NA "])
def test_missing_tokens(tmp_path, token: str) -> None:
    s = samples.load_sample_file(_csv(tmp_path, f"a,b\n1,{token}\n2,3\n"))
    assert np.isnan(s.table[0, 1]) and s.table[1].tolist() == [2.0, 3.0]


def test_mixed_dtypes_bools_text_and_text_gaps(tmp_path) -> None:
    s = samples.load_sample_file(
        _csv(tmp_path, "flag,city,n\nTrue,paris,1\nfalse,,\nTRUE,oslo,2\n")
    )
    assert s.string_columns == (1,)
    assert s.table[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert s.table[:, 1].tolist() == ["paris", None, "oslo"]
    assert np.isnan(s.table[1, 2])


def test_nameless_column_that_is_not_an_index_is_refused(tmp_path) -> None:
    with pytest.raises(SampleError, match="header column 1 has no name"):
        samples.load_sample_file(_csv(tmp_path, ",b\n0.5,1\n1.5,2\n"))


def test_not_utf8_is_a_sample_error(tmp_path) -> None:
    p = tmp_path / "s.csv"
    p.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(SampleError, match="not UTF-8"):
        samples.load_sample_file(p)


def test_parquet_with_missing_values_and_text(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({
        "x": [1.0, None, 2.5], "k": pd.array([1, None, 3], dtype="Int64"),
        "ok": [True, False, True], "city": ["a", None, "b"],
    })
    p = tmp_path / "s.parquet"
    df.to_parquet(p)
    s = samples.load_sample_file(p)
    assert s.header == ["x", "k", "ok", "city"] and s.string_columns == (3,)
    assert np.isnan(s.table[1, 0]) and np.isnan(s.table[1, 1]) and s.table[2, 2] == 1.0
    assert s.table[:, 3].tolist() == ["a", None, "b"]


def test_unusable_parquet_is_a_sample_error(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(SampleError, match="junk.parquet' as parquet: ArrowInvalid"):
        samples.load_sample_file(junk)  # (paths are named as given: issue #21)
    dates = tmp_path / "d.parquet"
    pd.DataFrame({"when": pd.to_datetime(["2024-01-01"]), "x": [1.0]}).to_parquet(dates)
    with pytest.raises(SampleError, match="column 'when' holds datetime64"):
        samples.load_sample_file(dates)


def test_infinity_in_a_sample_is_refused_naming_the_feature() -> None:
    from packserve.pack.signature import sample_table

    with pytest.raises(SampleError, match="row 1, feature 'b' is infinite"):
        sample_table(np.array([[1.0, 2.0], [3.0, np.inf]]), feature_names=["a", "b"])


def test_cli_text_in_a_numeric_model_sample_is_a_clear_exit_4(tmp_path) -> None:
    """A stray word in a numeric CSV column: refused naming column and row, not a traceback."""
    pd = pytest.importorskip("pandas")
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    model = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(df, (df.a > 0).astype(int))
    model.save_model(tmp_path / "m.json")
    df.iloc[:20].assign(c=lambda d: d.c.astype(object).where(d.index != 3, "oops")).to_csv(
        tmp_path / "bad.csv", index=False
    )
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "pack", str(tmp_path / "m.json"),
         str(tmp_path / "out"), "--sample", str(tmp_path / "bad.csv")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "column 'c' holds text ('oops' in row 3)" in proc.stderr
