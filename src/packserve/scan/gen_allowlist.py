"""Regenerate ``data/<library>.txt`` from the installed libraries (a developer tool).

    python -m packserve.scan.gen_allowlist            # all libraries that are installed
    python -m packserve.scan.gen_allowlist numpy torch

Two sources, merged per library:

1. *Introspection*: the classes a library's pickles may name (numpy scalar/dtype/random types,
   every class scikit-learn defines outside tests/datasets/externals, the XGBoost/LightGBM/
   CatBoost model classes, torch's ``_rebuild_*`` helpers, storages, dtypes, layouts).
2. *Observation*: tiny real objects are pickled (never unpickled) and their streams walked with
   the scanner's own opcode walker; every global they name is recorded.

Anything the policy knows to be dangerous, dotted names and private helpers that run nested
loaders are filtered out. The output is sorted, one ``module name`` per line, so a review is a
diff.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from packserve.scan.observe import Pair, classes_in, observed, observed_torch_save
from packserve.scan.policy import DANGEROUS_NAMES, dangerous_reason, normalize

DATA = Path(__file__).with_name("data")

# Helpers that would run a nested loader or call an arbitrary function: never allowlisted.
EXCLUDE_NAMES = {
    "_load_from_bytes",
    "_rebuild_from_type",
    "_rebuild_from_type_v2",
    "_rebuild_wrapper_subclass",
    "_rebuild_xla_tensor",
    "_rebuild_mps_tensor",
}
# Reviewed exceptions inside modules the policy treats as dangerous: these are identity
# functions that TorchScript's pickler names (torch/jit/_pickle.py returns its argument).
REVIEWED_IN_DANGEROUS_MODULES = {
    ("torch.jit._pickle", "build_intlist"),
    ("torch.jit._pickle", "build_tensorlist"),
    ("torch.jit._pickle", "build_doublelist"),
    ("torch.jit._pickle", "build_boollist"),
    ("torch.jit._pickle", "build_tensor_from_id"),
    ("torch.jit._pickle", "restore_type_tag"),
}
SKLEARN_SKIP = (
    "tests",
    "externals",
    "datasets",
    "_build_utils",
    "__check_build",
    "_testing",
    "experimental",
    "conftest",
    "_show_versions",
    "_min_dependencies",
)


def gen_numpy() -> set[Pair]:
    import numpy as np

    pairs: set[Pair] = {("numpy", "dtype"), ("numpy", "ndarray")}
    for core in ("numpy.core", "numpy._core"):
        pairs |= {
            (f"{core}.multiarray", "_reconstruct"),
            (f"{core}.multiarray", "scalar"),
            (f"{core}.numeric", "_frombuffer"),
            (f"{core}.multiarray", "dtype"),
            (f"{core}.multiarray", "ndarray"),
        }
    for name in dir(np):
        obj = getattr(np, name, None)
        if isinstance(obj, type) and issubclass(obj, np.generic):
            pairs.add(("numpy", name))
        if isinstance(obj, np.ufunc):
            pairs.add(("numpy", name))
    pairs |= classes_in(importlib.import_module("numpy.dtypes"))
    pairs |= {("numpy.dtypes", n) for n in dir(np.dtypes) if n.endswith("DType")}
    pairs |= {
        ("numpy.random._pickle", n)
        for n in dir(importlib.import_module("numpy.random._pickle"))
        if n.startswith("__") and n.endswith("_ctor")
    }
    rng = np.random.default_rng(0)
    pairs |= observed(
        np.arange(3.0),
        np.array(["a", "bc"]),
        np.array([1, "x"], dtype=object),
        np.float32(1.5),
        np.int64(3),
        np.dtype([("a", "<f4"), ("b", "O")]),
        np.random.RandomState(0),
        rng,
        np.ma.masked_array([1, 2], mask=[False, True]),
        np.datetime64("2024-01-01"),
        np.array([True]),
        np.zeros((2, 2), order="F"),
    )
    for bg in ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"):
        pairs |= observed(np.random.Generator(getattr(np.random, bg)(0)))
    return pairs


def _sklearn_modules() -> Iterable[Any]:
    import sklearn

    for info in pkgutil.walk_packages(sklearn.__path__, "sklearn."):
        if any(part in SKLEARN_SKIP for part in info.name.split(".")):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield importlib.import_module(info.name)
        except Exception:  # noqa: S112 - optional submodules may not import; skip them
            continue


def gen_sklearn() -> set[Pair]:
    from sklearn.utils import all_estimators

    pairs: set[Pair] = set()
    for _, cls in all_estimators():
        pairs.add((cls.__module__, cls.__qualname__))
    for mod in _sklearn_modules():
        pairs |= classes_in(mod)
    # Score functions that estimators keep as parameters (SelectKBest(score_func=...)).
    fs = importlib.import_module("sklearn.feature_selection")
    for name in (
        "f_classif",
        "f_regression",
        "chi2",
        "r_regression",
        "mutual_info_classif",
        "mutual_info_regression",
        "f_oneway",
    ):
        fn = getattr(fs, name, None)
        if fn is not None:
            pairs.add((fn.__module__, fn.__qualname__))
    pairs |= _observe_sklearn()
    return pairs


def _observe_sklearn() -> set[Pair]:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeRegressor

    rs = np.random.RandomState(0)
    X, y = rs.rand(40, 4), rs.randint(0, 2, 40)
    models: list[Any] = [
        RandomForestClassifier(n_estimators=3, random_state=rs).fit(X, y),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
        GradientBoostingClassifier(n_estimators=3).fit(X, y),
        HistGradientBoostingClassifier(max_iter=3).fit(X, y),
        KNeighborsClassifier(n_neighbors=3).fit(X, y),
        SVC(probability=True).fit(X, y),
        DecisionTreeRegressor().fit(X, X[:, 0]),
        ColumnTransformer([("oh", OneHotEncoder(), [0])]).fit(rs.randint(0, 3, (20, 1))),
    ]
    return observed(*models)


def gen_xgboost() -> set[Pair]:
    import numpy as np
    import xgboost
    from xgboost import sklearn as xsk

    pairs = classes_in(xsk, xsk.XGBModel) | {("xgboost.core", "Booster")}
    X, y = np.random.RandomState(0).rand(30, 3), np.arange(30) % 2
    pairs |= observed(
        xgboost.XGBClassifier(n_estimators=2).fit(X, y), xgboost.XGBRegressor(n_estimators=2).fit(X, X[:, 0])
    )
    return pairs


def gen_lightgbm() -> set[Pair]:
    import lightgbm
    import numpy as np
    from lightgbm import sklearn as lsk

    pairs = classes_in(lsk, lsk.LGBMModel) | {("lightgbm.basic", "Booster")}
    X, y = np.random.RandomState(0).rand(60, 3), np.arange(60) % 2
    kw: dict[str, Any] = {"n_estimators": 2, "verbose": -1, "min_child_samples": 2}
    pairs |= observed(lightgbm.LGBMClassifier(**kw).fit(X, y), lightgbm.LGBMRegressor(**kw).fit(X, X[:, 0]))
    return pairs


def gen_catboost() -> set[Pair]:
    import catboost
    import numpy as np

    pairs = {
        (c.__module__, c.__qualname__)
        for c in (
            catboost.CatBoost,
            catboost.CatBoostClassifier,
            catboost.CatBoostRegressor,
            catboost.CatBoostRanker,
        )
    }
    X, y = np.random.RandomState(0).rand(30, 3), np.arange(30) % 2
    kw: dict[str, Any] = {"iterations": 2, "verbose": False, "allow_writing_files": False}
    pairs |= observed(catboost.CatBoostClassifier(**kw).fit(X, y))
    return pairs


def gen_torch() -> set[Pair]:
    import torch
    import torch._utils as tu

    pairs: set[Pair] = {("torch._utils", n) for n in dir(tu) if n.startswith("_rebuild_")}
    pairs |= {("torch", n) for n in dir(torch) if n.endswith("Storage")}
    pairs |= {("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage")}
    for n in dir(torch):
        v = getattr(torch, n, None)
        if isinstance(v, (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)):
            pairs.add(("torch", n))
    pairs |= {
        ("torch", "Size"),
        ("torch", "device"),
        ("torch", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
        ("torch._tensor", "Tensor"),
    }
    jp = importlib.import_module("torch.jit._pickle")
    pairs |= {
        ("torch.jit._pickle", n)
        for n, f in vars(jp).items()
        if inspect.isfunction(f) and ("torch.jit._pickle", n) in REVIEWED_IN_DANGEROUS_MODULES
    }
    lin = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    sd = lin.state_dict()
    sd["half"] = torch.zeros(2, dtype=torch.float16)
    sd["bf16"] = torch.zeros(2, dtype=torch.bfloat16)
    sd["int"] = torch.arange(3)
    sd["bool"] = torch.ones(2, dtype=torch.bool)
    pairs |= observed_torch_save(
        sd, {"param": torch.nn.Parameter(torch.ones(2))}, {"size": torch.Size([2, 3]), "dtype": torch.float32}
    )
    return pairs


# Builtins that compute on plain data and neither import, open, evaluate nor reach attributes
# (reviewed; getattr/eval/open/__import__/type/... stay out and are judged by the policy).
HARMLESS_BUILTINS = [
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "callable",
    "chr",
    "divmod",
    "enumerate",
    "filter",
    "format",
    "hash",
    "hex",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "map",
    "max",
    "min",
    "next",
    "oct",
    "ord",
    "pow",
    "repr",
    "reversed",
    "round",
    "sorted",
    "sum",
    "zip",
]


def gen_stdlib() -> set[Pair]:
    """Harmless stdlib names plain-data pickles may carry: the ABCs of ``collections.abc``
    (as classes, never instantiable), ``__future__`` feature objects, harmless builtins."""
    import __future__

    import builtins
    import collections.abc

    pairs: set[Pair] = {("builtins", n) for n in HARMLESS_BUILTINS if hasattr(builtins, n)}
    for name, obj in vars(collections.abc).items():
        if isinstance(obj, type) and not name.startswith("_"):
            pairs |= {("collections.abc", name), ("_collections_abc", name)}
    pairs |= {("__future__", n) for n in __future__.all_feature_names}
    pairs.add(("__future__", "_Feature"))
    pairs |= observed(__future__.annotations, collections.abc.Iterable, len)
    return pairs


GENERATORS: dict[str, Callable[[], set[Pair]]] = {
    "stdlib": gen_stdlib,
    "numpy": gen_numpy,
    "sklearn": gen_sklearn,
    "xgboost": gen_xgboost,
    "lightgbm": gen_lightgbm,
    "catboost": gen_catboost,
    "torch": gen_torch,
}


def clean(pairs: set[Pair]) -> list[Pair]:
    """Drop dotted names, dangerous names and nested-loader helpers."""
    out = []
    for module, name in pairs:
        if "." in name or name in EXCLUDE_NAMES or not name.isidentifier():
            continue
        if normalize(module, name) in DANGEROUS_NAMES:
            continue
        if (module, name) in REVIEWED_IN_DANGEROUS_MODULES:
            out.append((module, name))
            continue
        if dangerous_reason(module, name) is not None and module != "builtins":
            continue
        out.append((module, name))
    return sorted(set(out))


def main(argv: list[str]) -> int:
    names = argv or list(GENERATORS)
    for lib in names:
        try:
            pairs = GENERATORS[lib]()
        except ImportError as exc:
            print(f"skip {lib}: {exc}", file=sys.stderr)
            continue
        rows = clean(pairs)
        header = (
            f"# Generated by `python -m packserve.scan.gen_allowlist {lib}` from the installed "
            f"{lib}; do not edit by hand.\n"
        )
        text = header + "".join(f"{m} {n}\n" for m, n in rows)
        (DATA / f"{lib}.txt").write_text(text, encoding="utf-8")
        print(f"{lib}: {len(rows)} names")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
