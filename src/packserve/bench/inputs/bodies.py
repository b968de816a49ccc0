"""Request bodies generated from a model's signature.

Sending one fixed body benchmarks a cache, not a model: tree models take different paths for
different rows and parsers cost more for some numbers than others. Rows here resample the
signature's example rows and jitter numeric features by a quarter of each column's spread
(integers stay integers, strings and booleans are drawn from the values seen in the
examples, so a categorical encoder never sees an unknown category). Without examples, floats
are standard normal and strings are short tokens. Bodies are pre-encoded once, so generating
them costs nothing while the clock runs.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packserve.bench.client import Target
from packserve.bench.inputs import tensors as tensor_inputs
from packserve.bench.inputs.tensors import TensorInput
from packserve.errors import ConfigError

NUMERIC = ("float32", "float64", "int64", "int32")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str = "float32"


@dataclass
class Signature:
    """What a request for one model must contain, and where it came from."""

    model: str | None
    features: list[Feature]
    examples: list[list[Any]] = field(default_factory=list)
    source: str = ""
    dtypes_known: bool = True
    # tensor models (issue #16): named N-D inputs instead of features
    tensors: list[TensorInput] = field(default_factory=list)
    # image bundles (issue #17): (height, width) the preprocessing produces; None = not one
    image_size: tuple[int, int] | None = None

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path) -> Signature:
        from packserve.bundle import read_manifest

        m = read_manifest(bundle_dir)
        if m.preprocess is not None:
            size = m.preprocess.output_size
            return cls(m.name, [], [], source=f"bundle {m.name!r} (image input"
                       + (f" {size[1]}x{size[0]})" if size else ")"),
                       tensors=tensor_inputs.from_manifest(m), image_size=size)
        if m.is_tensor:
            return cls(m.name, [], [], source=f"bundle {m.name!r} (tensor inputs)",
                       tensors=tensor_inputs.from_manifest(m))
        feats = [Feature(f.name, f.dtype) for f in m.features]
        return cls(m.name, feats, [list(r) for r in m.examples], source=f"bundle {m.name!r}")

    def to_dict(self) -> dict[str, Any]:
        if self.tensors:
            return {"model": self.model, "source": self.source,
                    "tensors": [t.to_dict() for t in self.tensors],
                    **({"image_size": list(self.image_size)} if self.image_size else {})}
        return {"model": self.model, "source": self.source,
                "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
                "examples": self.examples}


def parse_model_metadata(payload: Any, model: str | None) -> Signature:
    """Find one model's signature in a server's ``GET /models`` (or ``/models/{name}``) reply.

    Accepts ``[...]``, ``{"models": [...]}`` / ``{"data": [...]}``, a single model object, and
    features given as ``[{"name", "dtype"}]`` or plain names, at the top level or under
    ``signature`` / ``manifest``.
    """
    entries: list[Any]
    if isinstance(payload, list):
        entries = payload
    elif isinstance(payload, dict) and isinstance(payload.get("models"), list):
        entries = payload["models"]
    elif isinstance(payload, dict) and isinstance(payload.get("data"), list):
        entries = payload["data"]
    elif isinstance(payload, dict):
        entries = [payload]
    else:
        raise ConfigError("the server's model metadata is not a JSON object or list")
    entries = [e for e in entries if isinstance(e, dict)]
    if model is not None:
        named = [e for e in entries if e.get("name") == model]
        if not named:
            names = ", ".join(str(e.get("name")) for e in entries) or "none"
            raise ConfigError(f"the server has no model {model!r} (it lists: {names})")
        entries = named
    for entry in entries:
        sig = _entry_signature(entry)
        if sig is not None:
            return sig
    raise ConfigError(
        "the server's model metadata does not include a signature (feature names and dtypes); "
        "pass --bundle to read it from the bundle instead"
    )


def _entry_signature(entry: dict[str, Any]) -> Signature | None:
    for holder in (entry, entry.get("signature"), entry.get("manifest")):
        if not isinstance(holder, dict):
            continue
        raw = holder.get("features")
        if not isinstance(raw, list) or not raw:
            continue
        feats: list[Feature] = []
        known = True
        for f in raw:
            if isinstance(f, str):
                feats.append(Feature(f))
                known = False
            elif isinstance(f, dict) and isinstance(f.get("name"), str):
                known = known and "dtype" in f
                feats.append(Feature(f["name"], str(f.get("dtype", "float32"))))
        examples = holder.get("examples") or entry.get("examples") or []
        rows = [list(r) for r in examples if isinstance(r, list) and len(r) == len(feats)]
        name = entry.get("name")
        return Signature(name if isinstance(name, str) else None, feats, rows,
                         source=f"server metadata for {name!r}", dtypes_known=known)
    return None


_V2_DTYPES = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32",
              "BYTES": "string", "BOOL": "bool"}


def apply_v2_dtypes(sig: Signature, v2_metadata: Any) -> bool:
    """Fill feature dtypes from Open Inference Protocol model metadata (``inputs``).

    One input tensor: every feature has its dtype. One tensor per feature with the feature's
    name: each its own. Anything else is ambiguous and left alone. Returns True if applied.
    """
    inputs = v2_metadata.get("inputs") if isinstance(v2_metadata, dict) else None
    if not isinstance(inputs, list) or not inputs:
        return False
    types = {str(t.get("name")): _V2_DTYPES.get(str(t.get("datatype"))) for t in inputs
             if isinstance(t, dict)}
    if len(inputs) == 1:
        dtype = next(iter(types.values()))
        if dtype is None:
            return False
        sig.features = [Feature(f.name, dtype) for f in sig.features]
    elif all(types.get(f.name) for f in sig.features):
        sig.features = [Feature(f.name, types[f.name] or "float32") for f in sig.features]
    else:
        return False
    sig.dtypes_known = True
    return True


class RowGenerator:
    """Draws realistic, varied rows for a signature (seeded: runs are reproducible)."""

    def __init__(self, signature: Signature, *, seed: int = 0, jitter: float = 0.25) -> None:
        self.sig = signature
        self.rng = random.Random(seed)
        self.jitter = jitter
        self._spread: list[float] = []
        self._choices: list[list[Any]] = []
        for j, f in enumerate(signature.features):
            col = [r[j] for r in signature.examples if r[j] is not None]
            nums = [float(v) for v in col if isinstance(v, int | float) and not isinstance(v, bool)]
            spread = statistics.pstdev(nums) if len(nums) > 1 else 0.0
            if spread == 0.0 and nums:
                spread = abs(nums[0]) or 1.0
            self._spread.append(spread or 1.0)
            self._choices.append(sorted(set(col), key=str) if f.dtype not in NUMERIC else [])

    def row(self) -> list[Any]:
        rng, sig = self.rng, self.sig
        base = rng.choice(sig.examples) if sig.examples else None
        out: list[Any] = []
        for j, f in enumerate(sig.features):
            seen = base[j] if base is not None else None
            out.append(self._value(j, f.dtype, seen, rng))
        return out

    def _value(self, j: int, dtype: str, seen: Any, rng: random.Random) -> Any:
        if dtype in ("float32", "float64"):
            if isinstance(seen, int | float) and not isinstance(seen, bool):
                return round(float(seen) + rng.gauss(0.0, self.jitter * self._spread[j]), 5)
            return round(rng.gauss(0.0, 1.0), 5)
        if dtype in ("int64", "int32"):
            if isinstance(seen, int | float) and not isinstance(seen, bool):
                return round(seen + rng.gauss(0.0, self.jitter * self._spread[j]))
            return rng.randint(0, 10)
        if dtype == "bool":
            return bool(rng.choice(self._choices[j])) if self._choices[j] else rng.random() < 0.5
        if self._choices[j]:
            return rng.choice(self._choices[j])
        return f"v{rng.randint(0, 9)}"


def resolve_signature(url: str, *, model: str | None = None,
                      bundle: str | Path | None = None) -> Signature:
    """The model's signature from a bundle manifest, else from the server's metadata."""
    if bundle is not None:
        from_bundle = Signature.from_bundle(bundle)
        if model is not None:
            from_bundle.model = model
        return from_bundle
    import httpx

    base = Target.parse(url).base_url
    tried: list[str] = []
    sig: Signature | None = None
    for path in (["/models"] + ([f"/models/{model}"] if model else [])):
        try:
            r = httpx.get(base + path, timeout=10.0)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {base}: {type(exc).__name__}") from None
        tried.append(f"GET {path} -> {r.status_code}")
        if r.status_code != 200:
            continue
        try:
            sig = parse_model_metadata(r.json(), model)
            break
        except ConfigError:
            name = model or _default_model(r)  # a tensor model lists no features: ask V2
            if name is not None:
                sig = _v2_tensor_signature(base, name)
                if sig is not None:
                    return sig
            if path != "/models" or model is None:
                raise
        except ValueError:
            continue
    if sig is None:
        raise ConfigError("could not read the model's signature from the server "
                          f"({'; '.join(tried)}); pass --bundle")
    if not sig.dtypes_known and sig.model:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = httpx.get(f"{base}/v2/models/{sig.model}", timeout=10.0)
            if r.status_code == 200 and apply_v2_dtypes(sig, r.json()):
                sig.source += f" + dtypes from /v2/models/{sig.model}"
    if not sig.examples:
        sig.source += " (no example rows: synthetic values; --bundle gives realistic rows)"
    return sig


def _default_model(response: Any) -> str | None:
    try:
        name = response.json().get("default_model")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _v2_tensor_signature(base: str, model: str) -> Signature | None:
    """A tensor model's inputs from its V2 metadata (``/models`` lists no features for it)."""
    import httpx

    try:
        r = httpx.get(f"{base}/v2/models/{model}", timeout=10.0)
        meta = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    found = tensor_inputs.from_v2_metadata(meta)
    if not found:
        return None
    if tensor_inputs.v2_takes_images(meta):
        size = tensor_inputs.image_hw(found)
        what = f"image input {size[1]}x{size[0]}" if size else "image input"
        return Signature(model, [], [], source=f"/v2/models/{model} ({what})", tensors=found,
                         image_size=size)
    return Signature(model, [], [], source=f"/v2/models/{model} (tensor inputs; variable axes "
                     "at length 1, integers 0/1: --bundle gives the real shapes and ranges)",
                     tensors=found)


def build_bodies(signature: Signature, *, batch_size: int = 1, count: int = 256,
                 seed: int = 0) -> list[bytes]:
    """``count`` distinct JSON bodies: ``{"features"}`` or ``{"instances": [...]}``
    (tensor models: ``{"inputs": {...}}`` or ``{"instances": [{"inputs": ...}]}``)."""
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if signature.tensors:
        import numpy as np

        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            insts = tensor_inputs.json_instances(signature.tensors, rng, batch_size)
            body: Any = insts[0] if batch_size == 1 else {"instances": insts}
            out.append(json.dumps(body, separators=(",", ":")).encode())
        return out
    if not signature.features:
        raise ConfigError("the model's signature has no features")
    gen = RowGenerator(signature, seed=seed)
    bodies: list[bytes] = []
    for _ in range(count):
        if batch_size == 1:
            obj: Any = {"features": gen.row()}
        else:
            obj = {"instances": [{"features": gen.row()} for _ in range(batch_size)]}
        bodies.append(json.dumps(obj, separators=(",", ":")).encode())
    return bodies


__all__ = [
    "Feature",
    "RowGenerator",
    "Signature",
    "apply_v2_dtypes",
    "build_bodies",
    "parse_model_metadata",
    "resolve_signature",
]
