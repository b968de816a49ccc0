"""What decoding and encoding V2 requests need from a manifest, computed once per manifest.

Also the request types both sides share (:class:`InferRequest`, :class:`RequestedOutput`), so
:mod:`~packserve.serve.v2.decode` and :mod:`~packserve.serve.v2.codec` depend on this module
and not on each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from packserve.bundle import Manifest, TensorSpec
from packserve.runtime.inputs import Feeds
from packserve.runtime.tensors import InputChecker
from packserve.serve.v2.metadata import (
    FROM_MANIFEST,
    TensorMeta,
    image_input,
    output_metadata,
    v2_shape,
)

__all__ = ["InferRequest", "Plan", "RequestedOutput", "plan_for"]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    """A validated inference request: ready-to-run feeds and what to send back."""

    feeds: Feeds
    rows: int
    outputs: list[RequestedOutput]
    id: str | None = None
    timeout_s: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: image bundles: the encoded images of the BYTES input (``feeds`` is then empty until
    #: they are decoded, off the event loop)
    images: list[bytes] | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What parsing and encoding need from a manifest, computed once per manifest."""

    inputs: dict[str, tuple[TensorSpec, str, tuple[int, ...]]]  # name -> (spec, datatype, shape)
    order: tuple[str, ...]
    # name -> per-column "may be missing" (NaN / null), for inputs filled from features
    missing: dict[str, np.ndarray]
    # tensor bundles: each input's value checks (integer ranges, booleans, float overflow),
    # the same code as /predict and the Python API
    checkers: dict[str, InputChecker]
    outputs: dict[str, TensorMeta]
    all_outputs: dict[bool, tuple[RequestedOutput, ...]]
    image: str | None = None  # image bundles: the name of the BYTES input of encoded images


_PLANS: dict[int, tuple[Manifest, Plan]] = {}


def plan_for(manifest: Manifest) -> Plan:
    """The manifest's parsing/encoding plan, computed once per manifest object."""
    hit = _PLANS.get(id(manifest))
    if hit is not None and hit[0] is manifest:
        return hit[1]
    outs = {t.name: t for t in output_metadata(manifest)}
    plan = Plan(
        inputs={s.name: (s, FROM_MANIFEST[s.dtype], v2_shape(s)) for s in manifest.inputs},
        order=tuple(s.name for s in manifest.inputs),
        missing=_missing_masks(manifest),
        checkers={s.name: InputChecker(s) for s in manifest.inputs} if manifest.is_tensor else {},
        outputs=outs,
        all_outputs={b: tuple(RequestedOutput(n, b) for n in outs) for b in (False, True)},
        image=image_input(manifest),
    )
    if len(_PLANS) >= 256:  # loaded manifests are few; never let hot reloads grow this
        _PLANS.clear()
    _PLANS[id(manifest)] = (manifest, plan)
    return plan


def _missing_masks(manifest: Manifest) -> dict[str, np.ndarray]:
    allowed = {f.name for f in manifest.features if f.allow_missing}
    return {s.name: np.array([f in allowed for f in s.features]) for s in manifest.inputs
            if s.features}
