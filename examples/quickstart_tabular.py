"""Pack a scikit-learn pipeline with numeric *and* string columns, then load and predict.

    python examples/quickstart_tabular.py [OUT_DIR]

Shows what a bundle's inputs look like for a ColumnTransformer model: one feature per
DataFrame column, strings where the column holds categories.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import packserve


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "income": rng.normal(50_000, 15_000, n),
            "age": rng.integers(18, 80, n).astype(float),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    y = np.where((frame["income"] > 52_000) | (frame["region"] == "east"), "approve", "review")
    model = Pipeline(
        [
            ("prep", ColumnTransformer([
                ("num", StandardScaler(), ["income", "age"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
            ])),
            ("clf", RandomForestClassifier(n_estimators=30, random_state=0)),
        ]
    ).fit(frame, y)

    result = packserve.pack(model, out_dir / "credit", sample=frame.iloc[:200], name="credit", force=True)
    keep = {"rows", "label_agreement", "max_abs_diff_probability", "passed"}
    print("parity:", result.parity.model_dump(include=keep))
    print("inputs:", [(t.name, t.dtype, t.shape) for t in result.manifest.inputs])

    predictor = packserve.load(result.path)
    rows = [{"income": 61_000.0, "age": 34.0, "region": "east"},
            {"income": 31_000.0, "age": 51.0, "region": "north"}]
    pred = predictor.predict(rows)
    for row, label, probs in zip(rows, pred.labels, pred.probabilities, strict=True):
        shown = {str(c): round(float(p), 3) + 0.0 for c, p in zip(pred.classes or [], probs, strict=True)}
        print(row, "->", label, shown)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
