"""Named N-D inputs -> validated feeds, for tensor bundles (``manifest.signature == "tensor"``).

One :class:`InputChecker` per input tensor, compiled once per loaded model, is the single
place that knows what an input accepts: its rank, its fixed axes, its dtype (integers must be
integers, booleans booleans), finite floats, and the integer range the manifest records
(token ids below the vocabulary size). The Python API (:func:`tensors_to_feeds`), the JSON
routes and V2 all call it, so a bad input gets the same message everywhere, e.g.
``input 'tokens', instance 3: axis 1 has 17 values, expected 16``.

Checks are vectorised: nested JSON lists are flattened level by level with C-level passes
(``set(map(type, ...))``, ``chain``), numpy arrays are checked with one reduction per
property; only an input that *fails* is walked element by element to say where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from packserve.bundle import FLOAT_DTYPES, INTEGER_DTYPES, Manifest, TensorSpec
from packserve.errors import InputError

Feeds = dict[str, np.ndarray]

_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint8": (0, 255),
}
_FLOAT_MAX = {"float16": float(np.finfo(np.float16).max), "float32": float(np.finfo(np.float32).max)}
_JSON_TYPE = {
    str: "a string", bool: "a boolean", type(None): "null", list: "an array", dict: "an object",
    int: "an integer", float: "a decimal number",
}
_ALLOWED: dict[str, frozenset[type]] = {
    "float": frozenset({int, float}),
    "int": frozenset({int}),
    "bool": frozenset({bool}),
}


def _json_type(value: object) -> str:
    return _JSON_TYPE.get(type(value), "an unsupported value")


def short(name: object, limit: int = 40) -> str:
    text = str(name)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + "]"


def kind_of(dtype: str) -> str:
    if dtype in FLOAT_DTYPES:
        return "float"
    if dtype in INTEGER_DTYPES:
        return "int"
    if dtype == "bool":
        return "bool"
    raise ValueError(f"a tensor input cannot have dtype {dtype!r}")


class InputChecker:
    """Validates one input tensor (batch axis first) and converts it to the artifact's dtype."""

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.label = f"input {short(spec.name)}"
        self.rank = len(spec.shape)
        self.kind = kind_of(spec.dtype)
        self.dtype = np.dtype(spec.dtype)
        self.allowed = _ALLOWED[self.kind]
        self.fixed: dict[int, int] = {
            i: d for i, d in enumerate(spec.shape) if i > 0 and d is not None
        }
        lo, hi = _INT_BOUNDS.get(spec.dtype, (0, 0))
        self.range_given = spec.value_range is not None
        if spec.value_range is not None:
            lo, hi = max(lo, math.ceil(spec.value_range[0])), min(hi, math.floor(spec.value_range[1]))
        self.lo, self.hi = lo, hi
        self.float_max = _FLOAT_MAX.get(spec.dtype)

    # --- messages -------------------------------------------------------------------------

    def where(self, instance: int | None) -> str:
        return self.label if instance is None else f"{self.label}, instance {instance}"

    def fail(self, what: str, instance: int | None = None) -> InputError:
        where = self.where(instance)
        return InputError(f"{where}: {what}", where=where)

    def _axis_message(self, axis: int, got: int, want: int, *, agreed: bool = False) -> str:
        msg = f"axis {axis} has {got} values, expected {want}"
        if agreed:
            msg += " (a variable axis must have one length across a request: instance 0 has " \
                   f"{want})"
        return msg

    def _range_text(self) -> str:
        if self.range_given:
            return f"must be within [{self.lo}, {self.hi}] (the range this model accepts)"
        return f"must fit {self.spec.dtype}"

    # --- numpy arrays ---------------------------------------------------------------------

    def from_array(self, value: Any) -> np.ndarray:
        """Check an array-like holding a whole batch (``value.shape[0]`` instances)."""
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            if isinstance(value, list):
                return self.from_nested(value)
            raise self.fail("must be a rectangular numeric array") from None
        if arr.dtype == object and isinstance(value, list):
            return self.from_nested(value)
        if arr.ndim != self.rank:
            hint = " (add the batch axis, e.g. x[None])" if arr.ndim == self.rank - 1 else ""
            raise self.fail(
                f"expected a {self.rank}-D array {shape_text(self.spec.shape)}, got "
                f"{arr.ndim}-D{hint}"
            )
        if arr.shape[0] == 0:
            raise self.fail("no instances given (batch axis is 0)")
        for axis, want in self.fixed.items():
            if arr.shape[axis] != want:
                raise self.fail(self._axis_message(axis, int(arr.shape[axis]), want))
        return self.convert(arr)

    def convert(self, arr: np.ndarray, *, first_instance: int = 0) -> np.ndarray:
        """Dtype, finiteness and range checks on a correctly shaped array."""
        k = arr.dtype.kind
        if self.kind == "float":
            if k not in "fiu":
                raise self.fail(self._wrong_kind(k), None)
            if k == "f":
                self._check_finite(arr, first_instance)
            if self.float_max is not None and arr.size:
                with np.errstate(invalid="ignore"):
                    big = np.abs(arr) > self.float_max
                if big.any():
                    self._raise_at(big, f"value overflows {self.spec.dtype}", first_instance)
            out = arr.astype(self.dtype, copy=False)
        elif self.kind == "int":
            if k == "f":
                self._check_finite(arr, first_instance)
                frac = arr != np.round(arr)
                if frac.any():
                    self._raise_at(frac, "must be a whole number", first_instance)
            elif k not in "iu":
                raise self.fail(self._wrong_kind(k), None)
            if arr.size:
                bad = (arr < self.lo) | (arr > self.hi)
                if bad.any():
                    self._raise_at(bad, self._range_text(), first_instance)
            out = arr.astype(self.dtype, copy=False)
        else:
            if k in "iu":
                bad = (arr != 0) & (arr != 1)
                if bad.any():
                    self._raise_at(bad, "must be a boolean (or 0 / 1)", first_instance)
            elif k != "b":
                raise self.fail(self._wrong_kind(k), None)
            out = arr.astype(np.bool_, copy=False)
        return np.ascontiguousarray(out)

    def _wrong_kind(self, k: str) -> str:
        got = {"b": "booleans", "f": "decimal numbers", "i": "integers", "u": "integers",
               "U": "strings", "S": "bytes", "O": "mixed values"}.get(k, f"dtype kind {k!r}")
        want = {"float": "numbers", "int": "integers", "bool": "booleans"}[self.kind]
        return f"takes {want} ({self.spec.dtype}), got {got}"

    def _check_finite(self, arr: np.ndarray, first_instance: int) -> None:
        # The one NaN policy for tensor inputs (the tabular engineer may relax it per input).
        finite = np.isfinite(arr)
        if not finite.all():
            self._raise_at(~finite, "NaN or infinite value", first_instance)

    def _raise_at(self, mask: np.ndarray, what: str, first_instance: int) -> None:
        idx = tuple(int(i) for i in np.argwhere(mask)[0])
        pos = f" at position {list(idx[1:])}" if len(idx) > 1 else ""
        raise self.fail(f"{what}{pos}", first_instance + idx[0])

    # --- nested JSON lists ----------------------------------------------------------------

    def from_nested(self, batch: list[Any], *, single: bool = False) -> np.ndarray:
        """``batch``: one nested list per instance (parsed JSON). Returns the checked array.

        ``single``: the request holds one instance, so messages name no instance number.
        """
        if not batch:
            raise self.fail("no instances given")
        try:
            return self._from_nested(batch)
        except InputError as exc:
            if single and exc.where is not None and exc.where.startswith(f"{self.label}, instance"):
                what = exc.message[len(exc.where) + 2 :]
                raise self.fail(what) from None
            raise

    def _from_nested(self, batch: list[Any]) -> np.ndarray:
        dims = [len(batch)]
        flat: list[Any] = batch
        for axis in range(1, self.rank):
            if set(map(type, flat)) != {list}:
                self._locate(batch)
            widths = set(map(len, flat))
            want = self.fixed.get(axis)
            if len(widths) != 1 or (want is not None and widths != {want}):
                self._locate(batch)
            dims.append(widths.pop())
            flat = list(chain.from_iterable(flat))
        if not set(map(type, flat)) <= self.allowed:
            self._locate(batch)
        if self.kind == "int" and flat and (min(flat) < self.lo or max(flat) > self.hi):
            arr = np.asarray(flat, dtype=object).reshape(dims)
            self._raise_at((arr < self.lo) | (arr > self.hi), self._range_text(), 0)
        wide = np.float64 if self.kind == "float" else self.dtype
        try:
            arr = np.asarray(flat, dtype=wide)
        except OverflowError:  # an integer literal beyond a double
            big = np.asarray([abs(v) > 1e308 for v in flat]).reshape(dims)
            self._raise_at(big, f"value overflows {self.spec.dtype}", 0)
        return self.convert(arr.reshape(dims))

    def _locate(self, batch: list[Any]) -> None:
        """Slow path: name the first instance and axis where the nested lists go wrong."""
        ref = _first_path_lengths(batch[0], self.rank - 1)
        for i, inst in enumerate(batch):
            msg = self._walk(inst, 1, ref)
            if msg is not None:
                raise self.fail(msg, i)
        raise AssertionError("unreachable")  # pragma: no cover

    def _walk(self, value: Any, axis: int, ref: list[int]) -> str | None:
        if axis == self.rank:
            if type(value) in self.allowed:
                return None
            if type(value) is list:
                return f"has more axes than the model's {self.rank} {shape_text(self.spec.shape)}"
            need = {"float": "a number", "int": "an integer", "bool": "a boolean"}[self.kind]
            return f"values must be {need} ({self.spec.dtype}), got {_json_type(value)}"
        if type(value) is not list:
            return (f"axis {axis} must be an array (shape {shape_text(self.spec.shape)}), "
                    f"got {_json_type(value)}")
        want = self.fixed.get(axis)
        if want is not None and len(value) != want:
            return self._axis_message(axis, len(value), want)
        if want is None and axis - 1 < len(ref) and len(value) != ref[axis - 1]:
            return self._axis_message(axis, len(value), ref[axis - 1], agreed=True)
        for v in value:
            msg = self._walk(v, axis + 1, ref)
            if msg is not None:
                return msg
        return None


def _first_path_lengths(value: Any, depth: int) -> list[int]:
    out: list[int] = []
    for _ in range(depth):
        if type(value) is not list:
            break
        out.append(len(value))
        if not value:
            break
        value = value[0]
    return out


class TensorInputs:
    """Every input of a tensor bundle: ``__call__(inputs) -> Feeds`` (the Python API)."""

    def __init__(self, manifest: Manifest) -> None:
        self.checkers = [InputChecker(s) for s in manifest.inputs]
        self.by_name = {c.name: c for c in self.checkers}
        self.names = [c.name for c in self.checkers]

    def __call__(self, inputs: Any) -> Feeds:
        named = self._named(inputs)
        feeds = {c.name: c.from_array(named[c.name]) for c in self.checkers}
        same_batch(feeds)
        return feeds

    def _named(self, inputs: Any) -> Mapping[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in self.by_name]
            if unknown:
                raise InputError(f"unknown input {short(unknown[0])}; the model takes {self.names}",
                                 where="inputs")
            missing = [n for n in self.names if n not in inputs]
            if missing:
                raise InputError(f"missing input(s) {missing}", where="inputs")
            return inputs
        if isinstance(inputs, list) and inputs and all(isinstance(r, Mapping) for r in inputs):
            return self._records(inputs)
        if isinstance(inputs, tuple) and len(self.names) > 1:
            if len(inputs) != len(self.names):
                raise InputError(
                    f"the model takes {len(self.names)} inputs {self.names}, got {len(inputs)}",
                    where="inputs",
                )
            return dict(zip(self.names, inputs, strict=True))
        if len(self.names) == 1:
            return {self.names[0]: inputs}
        raise InputError(
            f"the model takes {len(self.names)} inputs {self.names}: pass a mapping "
            "{name: array} or a tuple in that order",
            where="inputs",
        )

    def _records(self, records: list[Mapping[str, Any]]) -> dict[str, Any]:
        """A list of per-instance mappings ``{input name: value}`` -> one batch per input."""
        for i, r in enumerate(records):
            if r.keys() != self.by_name.keys():
                unknown = [k for k in r if k not in self.by_name]
                what = (f"unknown input {short(unknown[0])}" if unknown else
                        f"missing input(s) {[n for n in self.names if n not in r]}")
                raise InputError(f"instance {i}: {what}", where=f"instance {i}")
        return {n: [_as_nested(r[n]) for r in records] for n in self.names}


def _as_nested(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def same_batch(feeds: Feeds) -> int:
    """Every input must hold the same number of instances; returns it."""
    sizes = {k: int(v.shape[0]) for k, v in feeds.items()}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{short(k)} has {n}" for k, n in sizes.items())
        raise InputError(f"inputs disagree on the number of instances: {shown}", where="inputs")
    return next(iter(sizes.values()))


def example_feeds(manifest: Manifest, batch: int = 1) -> Feeds:
    """Valid feeds of ``batch`` instances (warm-up, timing, benchmarks): zeros, or the low
    end of an integer input's range, with variable axes as in the pack sample."""
    feeds: Feeds = {}
    for spec in manifest.inputs:
        shape = spec.example_shape(batch)
        fill = 0
        if spec.value_range is not None and spec.dtype in INTEGER_DTYPES:
            fill = max(0, math.ceil(spec.value_range[0]))
        feeds[spec.name] = np.full(shape, fill, dtype=np.dtype(spec.dtype))
    return feeds


def shape_key(feeds: Feeds) -> tuple[tuple[int, ...], ...]:
    """What must agree for two requests' feeds to be merged along the batch axis."""
    return tuple(tuple(v.shape[1:]) for v in feeds.values())


__all__ = [
    "InputChecker",
    "TensorInputs",
    "example_feeds",
    "same_batch",
    "shape_key",
    "shape_text",
]
