"""torch models over N-D tensors (issue #16): any rank, several named inputs and outputs.

The sample says the signature: an array/tensor (one input), a tuple (positional inputs, named
after ``forward``'s parameters) or a mapping ``name -> array`` (keyword inputs). Each input
records its dtype and shape with the batch axis first; other axes are fixed unless declared
in ``dynamic_axes={"tokens": {1: "seq"}}`` (exported as ``torch.export.Dim``). Integer inputs
that feed an ``nn.Embedding`` record ``[0, num_embeddings - 1]`` as their range (or the
caller's ``value_ranges``), so a server refuses an out-of-range token id instead of
crashing inside the model.

Fidelity probes respect each input's kind: floats are jittered, refitted, negated and
scaled; integers are resampled within the range seen in the sample; booleans stay boolean;
variable axes get another length. Every exception the user's model raises becomes a
:class:`PackError` naming the probe. Deep float nets accumulate in another order in ONNX
Runtime than in torch, so the fidelity and parity tolerance here is
``DEEP_ATOL + DEEP_RTOL x max|eager output|``, recorded in the manifest.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from packserve.bundle import TensorSpec
from packserve.errors import ConfigError, PackError, SampleError
from packserve.pack.families.torch.export import require_torch

DEEP_ATOL = 1e-4
DEEP_RTOL = 1e-4
PROBE_BUDGET_BYTES = 32 << 20  # most bytes of input per probe (large images get fewer rows)
MAX_SAMPLE_ROWS = 256
_DTYPES = {"float32", "float64", "float16", "int64", "int32", "uint8", "bool"}

Arrays = dict[str, np.ndarray]


@dataclass
class TensorSample:
    """The sample as the model is called with it."""

    names: list[str]  # the inputs in call (= manifest) order
    arrays: Arrays
    by_keyword: bool
    specs: list[TensorSpec] = field(default_factory=list)


@dataclass(frozen=True)
class TensorProbe:
    name: str
    x: Arrays
    why: str

    @property
    def rows(self) -> int:
        return int(next(iter(self.x.values())).shape[0])


def _numpy(value: Any, name: str) -> np.ndarray:
    torch = require_torch()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise SampleError(f"sample input {name!r} is not a rectangular array") from exc
    if arr.dtype.kind not in "biuf":
        raise SampleError(f"sample input {name!r} must be numeric or boolean, got {arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise SampleError(f"sample input {name!r} needs a batch axis with at least one instance")
    return arr


def forward_names(model: Any) -> list[str]:
    """``forward``'s positional parameter names (what the inputs are called)."""
    fwd = getattr(model, "forward", model)
    try:
        params = inspect.signature(fwd).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


def is_tensor_sample(sample: Any, task: str | None) -> bool:
    """Whether ``sample`` needs the tensor signature (anything but one 2-D float table)."""
    torch = require_torch()
    if task == "tensor" or isinstance(sample, Mapping | tuple):
        return True
    if isinstance(sample, torch.Tensor):
        return sample.ndim != 2 or not sample.is_floating_point()
    if isinstance(sample, np.ndarray):
        return sample.ndim != 2 or sample.dtype.kind not in "f"
    return False


def read_sample(model: Any, sample: Any, *, float_dtype: Any, input_names: list[str] | None,
                dynamic_axes: Mapping[str, Any] | None) -> TensorSample:
    params = forward_names(model)
    if isinstance(sample, Mapping):
        names = [str(k) for k in sample]
        unknown = [n for n in names if params and n not in params]
        if unknown:
            raise SampleError(f"sample input(s) {unknown} are not parameters of forward({params})")
        names = [n for n in params if n in names] if params else names
        raw = {n: sample[n] for n in names}
        by_keyword = True
    else:
        parts = list(sample) if isinstance(sample, tuple) else [sample]
        names = list(input_names) if input_names else params[: len(parts)]
        if len(names) < len(parts):
            names += [f"input_{i}" for i in range(len(names), len(parts))]
        if len(set(names)) != len(names):
            raise SampleError(f"input names must be unique, got {names}")
        raw = dict(zip(names, parts, strict=True))
        by_keyword = False
    arrays: Arrays = {}
    for n, v in raw.items():
        arr = _numpy(v, n)
        if arr.dtype.kind == "f":
            arr = arr.astype(float_dtype)
            if not np.isfinite(arr).all():
                raise SampleError(f"sample input {n!r} contains NaN or infinite values")
        elif arr.dtype.name not in _DTYPES:
            arr = arr.astype(np.int64)
        arrays[n] = np.ascontiguousarray(arr)
    sizes = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise SampleError(f"sample inputs disagree on the number of instances: {sizes}")
    ts = TensorSample(names=names, arrays=arrays, by_keyword=by_keyword)
    ts.specs = _specs(ts, dynamic_axes or {})
    return ts


def _specs(ts: TensorSample, dynamic_axes: Mapping[str, Any]) -> list[TensorSpec]:
    unknown = [k for k in dynamic_axes if k not in ts.arrays]
    if unknown:
        raise ConfigError(f"dynamic_axes names unknown input(s) {unknown}; inputs are {ts.names}")
    specs = []
    for n in ts.names:
        arr = ts.arrays[n]
        dyn = dynamic_axes.get(n, {})
        axes: dict[int, str] = {0: "batch"}
        if isinstance(dyn, Mapping):
            axes |= {int(a): str(v) for a, v in dyn.items()}
        else:
            axes |= {int(a): f"{n}_axis{int(a)}" for a in dyn}
        bad = [a for a in axes if not 0 <= a < arr.ndim]
        if bad:
            raise ConfigError(f"dynamic_axes[{n!r}] names axis {bad[0]}; {n!r} has {arr.ndim} axes")
        shape: list[int | None] = [None if i in axes else int(d) for i, d in enumerate(arr.shape)]
        specs.append(TensorSpec(name=n, dtype=arr.dtype.name, shape=shape,  # type: ignore[arg-type]
                                axes=axes, sample_shape=list(arr.shape)))
    return specs


# --- calling the eager model -----------------------------------------------------------


def output_names(out: Any) -> list[str]:
    torch = require_torch()
    if isinstance(out, torch.Tensor):
        return ["output"]
    if isinstance(out, tuple | list) and out and all(isinstance(t, torch.Tensor) for t in out):
        return [f"output_{i}" for i in range(len(out))]
    if isinstance(out, Mapping) and out and all(isinstance(t, torch.Tensor) for t in out.values()):
        return [str(k) for k in out]
    raise PackError(
        f"forward returned {type(out).__name__}; packserve packs models that return a tensor, "
        "a tuple of tensors or a dict of tensors"
    )


def call_model(model: Any, ts: TensorSample, x: Arrays) -> Any:
    torch = require_torch()
    tensors = {n: torch.from_numpy(np.ascontiguousarray(x[n])) for n in ts.names}
    with torch.no_grad():
        if ts.by_keyword:
            return model(**tensors)
        return model(*[tensors[n] for n in ts.names])


def flatten(out: Any) -> Arrays:
    torch = require_torch()
    names = output_names(out)
    if isinstance(out, torch.Tensor):
        parts = [out]
    elif isinstance(out, Mapping):
        parts = list(out.values())
    else:
        parts = list(out)
    return {n: t.detach().cpu().numpy() for n, t in zip(names, parts, strict=True)}


def run_eager(model: Any, ts: TensorSample, x: Arrays, what: str) -> Arrays:
    """Eager outputs by name; any exception from the user's model becomes a PackError."""
    try:
        return flatten(call_model(model, ts, x))
    except PackError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in x.items())
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise PackError(
            f"{type(model).__name__} raised {type(exc).__name__} on {what} ({shapes}): {first}"
        ) from exc


def embedding_ranges(model: Any, ts: TensorSample) -> dict[str, tuple[float, float]]:
    """``[0, num_embeddings - 1]`` for each integer input that feeds an ``nn.Embedding``.

    Found by hooking every embedding and matching the storage its indices live in with the
    inputs' (a slice such as ``x_cat[:, 2]`` shares its input's storage). Where one input
    feeds several tables, the largest bound is kept: no valid id is ever refused.
    """
    torch = require_torch()
    ints = [n for n in ts.names if ts.arrays[n].dtype.kind in "iu"]
    if not ints:
        return {}
    tensors = {n: torch.from_numpy(np.ascontiguousarray(ts.arrays[n][:2])) for n in ts.names}
    ptrs = {tensors[n].untyped_storage().data_ptr(): n for n in ints}
    found: dict[str, int] = {}

    def hook(mod: Any, args: Any) -> None:
        idx = args[0] if args else None
        if isinstance(idx, torch.Tensor):
            name = ptrs.get(idx.untyped_storage().data_ptr())
            if name is not None:
                found[name] = max(found.get(name, 0), int(mod.num_embeddings))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)]
    if not handles:
        return {}
    try:
        with torch.no_grad():
            if ts.by_keyword:
                model(**tensors)
            else:
                model(*[tensors[n] for n in ts.names])
    except Exception:
        return {}
    finally:
        for h in handles:
            h.remove()
    return {n: (0.0, float(k - 1)) for n, k in found.items()}


__all__ = [
    "DEEP_ATOL",
    "DEEP_RTOL",
    "TensorProbe",
    "TensorSample",
    "call_model",
    "embedding_ranges",
    "flatten",
    "forward_names",
    "is_tensor_sample",
    "output_names",
    "read_sample",
    "run_eager",
]
