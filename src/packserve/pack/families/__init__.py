"""The framework families ``pack`` knows, one registry line each.

A model is matched to a family *by the module names in its class hierarchy* (and, where
one framework has two families, by class name), so no framework is imported unless the
model is one of its own; the family's module is imported only then. First match wins.

To add a family: write ``packserve/pack/families/<name>.py`` (or a package, like ``torch/``) with a
:class:`~packserve.pack.family.Family` subclass and a module-level ``FAMILY = ...Family()``,
then add its :class:`Registration` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from packserve.errors import UnsupportedModelError
from packserve.pack.family import Family


@dataclass(frozen=True)
class Registration:
    """Which models a family packs, and where it lives (imported on first use)."""

    module: str  # under packserve.pack.families
    roots: tuple[str, ...]  # top-level module names in the model's class hierarchy
    supports: str  # for "supported: ..." in refusals
    type_names: tuple[str, ...] = ()  # also require one of these class names, when given

    def matches(self, roots: set[str], type_name: str) -> bool:
        if not roots.intersection(self.roots):
            return False
        return not self.type_names or type_name in self.type_names


REGISTRY: tuple[Registration, ...] = (
    Registration("onnx", ("packserve",), "ONNX files (a path ending in .onnx)",
                 type_names=("OnnxModel",)),
    Registration("torch", ("torch",), "torch.nn.Module"),
    Registration("keras", ("keras",), "Keras 3 models (keras.Model)"),
    Registration("savedmodel", ("packserve",), "TensorFlow SavedModel directories (SavedModelDir)",
                 type_names=("SavedModelDir",)),
    Registration("catboost", ("catboost",), "CatBoostClassifier/CatBoostRegressor"),
    Registration("booster", ("xgboost", "lightgbm"), "xgboost.Booster, lightgbm.Booster",
                 type_names=("Booster",)),
    Registration("sklearn", ("sklearn", "xgboost", "lightgbm"),
                 "scikit-learn estimators and Pipelines (incl. ColumnTransformer), "
                 "XGBClassifier/XGBRegressor, LGBMClassifier/LGBMRegressor"),
)

SUPPORTED = ", ".join(r.supports for r in REGISTRY)


def registration_for(model: Any) -> Registration:
    """The first registry line that matches ``model``; refuses anything else, naming what is."""
    roots = {c.__module__.split(".", 1)[0] for c in type(model).__mro__}
    for reg in REGISTRY:
        if reg.matches(roots, type(model).__name__):
            return reg
    raise UnsupportedModelError(
        f"cannot pack a {type(model).__module__}.{type(model).__qualname__}; supported: {SUPPORTED}"
    )


def family_for(model: Any) -> Family:
    """The family that packs ``model`` (its module is imported here, not before)."""
    reg = registration_for(model)
    family: Family = importlib.import_module(f"{__name__}.{reg.module}").FAMILY
    return family


__all__ = ["REGISTRY", "SUPPORTED", "Registration", "family_for", "registration_for"]
