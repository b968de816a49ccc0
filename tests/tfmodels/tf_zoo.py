"""Keras/TensorFlow test models (issue #18): TensorFlow is imported once per session, the five
tiny models are built once, and each is packed once from the object and once from its
``.keras`` file (all bundles under one repository directory, so one server serves them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KINDS = ("binary", "multiclass", "regressor", "conv", "two_input")


@dataclass
class Case:
    kind: str
    model: Any
    sample: Any  # what pack() gets: a 2-D table or named N-D arrays
    native: Any  # model(sample) as numpy (the parity reference)


@dataclass
class KerasZoo:
    root: Path  # a repository: <kind>-obj/1.0.0 and <kind>-file/1.0.0 bundles
    cases: dict[str, Case]
    files: dict[str, Path]  # kind -> .keras file

    def bundle(self, kind: str, source: str) -> Path:
        return self.root / f"{kind}-{source}" / "1.0.0"


def _models(keras: Any) -> dict[str, tuple[Any, Any]]:
    rng = np.random.default_rng(18)
    x = rng.normal(size=(24, 5)).astype(np.float32)
    img = rng.normal(size=(12, 8, 8, 1)).astype(np.float32)
    keras.utils.set_random_seed(18)
    L = keras.layers
    binary = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="relu"),
                               L.Dense(1, activation="sigmoid")])
    multi = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="relu"),
                              L.Dense(3, activation="softmax")])
    reg = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="relu"), L.Dense(1)])
    reg.compile(loss="mse")
    conv = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"),
                             L.MaxPooling2D(), L.Flatten(), L.Dense(3, activation="softmax")])
    num = keras.Input((5,), name="num")
    image = keras.Input((8, 8, 1), name="image")
    h = L.Flatten()(L.Conv2D(2, 3, activation="relu")(image))
    out = L.Dense(1, activation="sigmoid")(L.Concatenate()([num, h]))
    two = keras.Model([num, image], out)
    two_x = {"num": x[:12], "image": img}
    return {"binary": (binary, x), "multiclass": (multi, x), "regressor": (reg, x * 3 + 1),
            "conv": (conv, img), "two_input": (two, two_x)}


def build(root: Path, files_dir: Path) -> KerasZoo:
    import keras

    from packserve.pack import pack
    from packserve.pack.files import load_model_file

    cases: dict[str, Case] = {}
    files: dict[str, Path] = {}
    for kind, (model, sample) in _models(keras).items():
        args = [sample[n] for n in ("num", "image")] if isinstance(sample, dict) else sample
        native = np.asarray(model(args, training=False))
        cases[kind] = Case(kind, model, sample, native)
        pack(model, root / f"{kind}-obj" / "1.0.0", sample=sample, name=f"{kind}-obj")
        path = files_dir / f"{kind}.keras"
        model.save(path)
        files[kind] = path
        pack(load_model_file(path), root / f"{kind}-file" / "1.0.0", sample=sample,
             name=f"{kind}-file")
    return KerasZoo(root, cases, files)


__all__ = ["KINDS", "Case", "KerasZoo", "build"]
