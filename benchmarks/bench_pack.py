"""Pack time and parity, measured in one run (issue #2). Not a test: prints two tables.

    python benchmarks/bench_pack.py [--repeats 5] [--skip-zoo]

1. The chapter's model (XGBClassifier, 100 trees, depth 6, on make_classification(5000, 15
   features, 10 informative, random_state=42)): ``packserve.pack`` time, split by phase,
   against a baseline measured in the same run — the bare export the chapter does
   (register the converter, ``convert_sklearn``, serialise, write the file), which checks
   nothing. The ratio is the price of the parity check, hashing and atomic write.
2. Parity per framework, classifier and regressor, on 1000 held-out rows the pack-time
   check never saw (it uses 200 others): label agreement, max |Δprobability|, and for
   regression max |Δ| against the tolerance 1e-5 x mean |native prediction|.

The host's 2 cores are shared: absolute times are noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning)


def chapter_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=5000, n_features=15, n_informative=10, random_state=42)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=42)
    return xtr, xte, ytr, yte


def bare_export(model: Any, n_features: int, path: Path) -> None:
    """What the chapter does: register, convert, write. No check of any kind."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from xgboost import XGBClassifier

    update_registered_converter(
        XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
        convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    onx = convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, n_features]))],
        target_opset={"": 17, "ai.onnx.ml": 3}, options={id(model): {"zipmap": False}},
    )
    path.write_bytes(onx.SerializeToString())


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_chapter(root: Path, repeats: int) -> None:
    from xgboost import XGBClassifier

    import packserve
    from packserve.pack.progress import reporting

    xtr, xte, ytr, _ = chapter_data()
    t0 = time.perf_counter()
    model = XGBClassifier(
        n_estimators=100, max_depth=6, learning_rate=0.1, random_state=42, n_jobs=1,
        eval_metric="logloss",
    ).fit(xtr, ytr)
    fit_s = time.perf_counter() - t0
    sample = xte[:200]

    # warm both paths once (imports, converter registration)
    bare_export(model, 15, root / "warm.onnx")
    packserve.pack(model, root / "warm", sample=sample, force=True)

    bare = timed(lambda: bare_export(model, 15, root / "bare.onnx"), repeats)
    phases: list[dict[str, float]] = []

    def one_pack() -> None:
        marks: list[tuple[str, float]] = [("sample + native predictions", time.perf_counter())]
        with reporting(lambda msg: marks.append((msg, time.perf_counter()))):
            packserve.pack(model, root / "fraud", sample=sample, name="fraud", force=True)
        marks.append(("end", time.perf_counter()))
        phases.append({marks[i][0]: marks[i + 1][1] - marks[i][1] for i in range(len(marks) - 1)})

    full = timed(one_pack, repeats)
    m = packserve.read_manifest(root / "fraud")
    pred = packserve.load(root / "fraud").predict(xte)
    held_labels = float(np.mean(pred.labels == model.predict(xte)))
    held_dp = float(np.abs(pred.probabilities - model.predict_proba(xte)).max())

    med_bare, med_full = statistics.median(bare), statistics.median(full)
    print("\n== chapter model: XGBClassifier(n_estimators=100, max_depth=6), 15 features ==")
    print(f"fit (for scale)                       {fit_s * 1000:8.1f} ms")
    print(f"baseline: bare export (no checks)     {med_bare * 1000:8.1f} ms  (median of {repeats})")
    print(f"packserve.pack (200-row parity check) {med_full * 1000:8.1f} ms  (median of {repeats})")
    print(f"ratio pack / bare export              {med_full / med_bare:8.2f} x")
    for phase in phases[0]:
        med = statistics.median(p.get(phase, 0.0) for p in phases)
        print(f"  phase {phase:<30}{med * 1000:8.1f} ms")
    print(f"artifact {m.files['model.onnx'].size / 1024:.1f} KiB, opsets {m.opsets}")
    print(f"pack-time parity: {m.parity.rows} rows, labels {m.parity.label_agreement:.2%}, "
          f"max |Δp| {m.parity.max_abs_diff_probability:.3g}")
    print(f"held-out parity:  {len(xte)} rows, labels {held_labels:.2%}, max |Δp| {held_dp:.3g}")


def zoo() -> dict[str, tuple[Callable[[], Any], str]]:
    from catboost import CatBoostClassifier, CatBoostRegressor
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from xgboost import XGBClassifier, XGBRegressor

    trees = {"n_estimators": 100, "max_depth": 6, "random_state": 42, "n_jobs": 1}
    cb = {"iterations": 100, "depth": 6, "random_seed": 42, "verbose": 0, "thread_count": 1}
    return {
        "sklearn LogisticRegression (+scaler)": (
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), "clf"),
        "sklearn RandomForestClassifier": (lambda: RandomForestClassifier(**trees), "clf"),
        "sklearn HistGradientBoostingClassifier": (
            lambda: HistGradientBoostingClassifier(max_iter=100, random_state=42), "clf"),
        "sklearn SVC(probability=True)": (
            lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)), "clf"),
        "XGBClassifier": (lambda: XGBClassifier(**trees), "clf"),
        "LGBMClassifier": (lambda: LGBMClassifier(**trees, verbose=-1), "clf"),
        "CatBoostClassifier": (lambda: CatBoostClassifier(**cb), "clf"),
        "sklearn Ridge (+scaler)": (lambda: make_pipeline(StandardScaler(), Ridge()), "reg"),
        "sklearn RandomForestRegressor": (lambda: RandomForestRegressor(**trees), "reg"),
        "sklearn HistGradientBoostingRegressor": (
            lambda: HistGradientBoostingRegressor(max_iter=100, random_state=42), "reg"),
        "XGBRegressor": (lambda: XGBRegressor(**trees), "reg"),
        "LGBMRegressor": (lambda: LGBMRegressor(**trees, verbose=-1), "reg"),
        "CatBoostRegressor": (lambda: CatBoostRegressor(**cb), "reg"),
    }


def bench_zoo(root: Path) -> None:
    from sklearn.datasets import make_regression

    import packserve

    xtr, xte, ytr, _ = chapter_data()
    xr, yr = make_regression(n_samples=5000, n_features=15, noise=10.0, random_state=42)
    yr = yr + 500.0
    rtr, rte, rytr = xr[:4000], xr[4000:], yr[:4000]
    print("\n== parity on 1000 held-out rows (pack-time check used 200 other rows) ==")
    print(f"{'model':<40}{'pack ms':>8}  {'labels':>8}  {'max|Δp|':>9}  "
          f"{'max|Δy|':>9}  {'tol(y)':>9}  precision")
    for name, (make, kind) in zoo().items():
        xa, xb, ya = (xtr, xte, ytr) if kind == "clf" else (rtr, rte, rytr)
        model = make().fit(xa, ya)
        sample, held = xb[:200], xb[200:]
        t0 = time.perf_counter()
        res = packserve.pack(model, root / "zoo", sample=sample, force=True)
        ms = (time.perf_counter() - t0) * 1000
        pred = packserve.load(res.path).predict(held)
        prec = res.manifest.export.get("input_precision", "?")
        if kind == "clf":
            agree = float(np.mean(pred.labels == model.predict(held)))
            dp = float(np.abs(pred.probabilities - model.predict_proba(held)).max())
            print(f"{name:<40}{ms:8.0f}  {agree:8.2%}  {dp:9.2g}  {'':>9}  {'':>9}  {prec}")
        else:
            want = np.asarray(model.predict(held), dtype=np.float64)
            dy = float(np.abs(pred.values - want).max())
            tol = 1e-5 * float(np.mean(np.abs(want)))
            print(f"{name:<40}{ms:8.0f}  {'':>8}  {'':>9}  {dy:9.2g}  {tol:9.2g}  {prec}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-zoo", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_chapter(Path(tmp), args.repeats)
        if not args.skip_zoo:
            bench_zoo(Path(tmp))


if __name__ == "__main__":
    main()
