"""Request bodies -> validated feeds, without a model object per instance.

The chapter's service builds one Pydantic object per instance and checks NaN per element in
Python. Here the parsed JSON (orjson: already rejects NaN/Infinity literals and lone
surrogates) is checked with C-level passes (``set(map(type, ...))``, one ``np.array``, one
``isfinite``), and only a request that *fails* is walked element by element to say exactly
where (``instance 3, feature 'income'``). Nothing a client sent is echoed back except feature
names it typed, truncated.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from packserve.bundle import Manifest
from packserve.errors import BadRequestError, InputError
from packserve.runtime.inputs import Feeds, table_to_feeds
from packserve.runtime.tensors import short
from packserve.serve.payloads.tensor import TensorRequestDecoder, batch_instances

_NUM_TYPES = frozenset({int, float})
_STR_TYPES = frozenset({str})
_F32_MAX = float(np.finfo(np.float32).max)
_INT_RANGE = {
    "int64": (-(2.0**63), 2.0**63 - 1024),
    "int32": (-(2.0**31), 2.0**31 - 1),
}
#: the bytes JSON numbers, arrays and objects are written with (all but the keys' strings)
_NUMBER_BYTES = b"-+.0123456789eE,[]{}: \t\r\n"
_INSTANCES_KEY = b'"instances"'.translate(None, _NUMBER_BYTES)
_FEATURES_KEY = b'"features"'.translate(None, _NUMBER_BYTES)
_JSON_TYPE = {
    str: "a string",
    bool: "a boolean",
    type(None): "null",
    list: "an array",
    dict: "an object",
    int: "a number",
    float: "a number",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE.get(type(value), "an unsupported value")


def parse_json(body: bytes) -> Any:
    """Parse a body with orjson; malformed JSON is 400, valid-but-forbidden values 422."""
    if not body:
        raise BadRequestError("empty body: expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        pos = int(exc.pos)
        msg = str(exc.msg)
        where = f"body, char {pos}"
        if "surrogate" in msg:
            raise InputError("string contains a lone UTF-16 surrogate", where=where) from None
        if "infinity" in msg.lower():
            raise InputError("number out of range (overflows a double)", where=where) from None
        head = body[pos : pos + 9].lstrip(b"-+")
        if head.startswith((b"NaN", b"Infinity", b"inf", b"nan")):
            raise InputError("NaN and Infinity are not valid JSON numbers", where=where) from None
        raise BadRequestError(f"malformed JSON: {msg} (char {pos})") from None


class RequestDecoder:
    """Compiled once per model: turns ``{"features": ...}`` / ``{"instances": ...}`` into feeds."""

    def __init__(self, manifest: Manifest, *, max_batch: int) -> None:
        self.manifest = manifest
        self.max_batch = max_batch
        self.names = manifest.feature_names
        self.n = len(self.names)
        self.name_set = frozenset(self.names)
        self._getter = itemgetter(*self.names)
        dtypes = [f.dtype for f in manifest.features]
        self.string_cols = [i for i, d in enumerate(dtypes) if d == "string"]
        self.numeric_cols = [i for i, d in enumerate(dtypes) if d != "string"]
        self.all_numeric = not self.string_cols
        self.f32_cols = np.array([d == "float32" for d in dtypes])
        self.int_cols = {i: d for i, d in enumerate(dtypes) if d in _INT_RANGE}
        self.bool_cols = [i for i, d in enumerate(dtypes) if d == "bool"]
        # ``null`` means "missing" (NaN) in the features the model accepts missing values for.
        self.missing_ok = np.array([f.allow_missing for f in manifest.features])
        self.num_types = _NUM_TYPES | {type(None)} if self.missing_ok.any() else _NUM_TYPES
        # One tensor holding every feature in manifest order: skip the generic splitter.
        inp = manifest.inputs
        self._direct: tuple[str, Any, bool] | None = None
        if (
            len(inp) == 1
            and inp[0].features == self.names
            and inp[0].dtype in ("float32", "float64")
            and len(inp[0].shape) == 2
        ):
            self._direct = (inp[0].name, np.dtype(inp[0].dtype), inp[0].dtype == "float32")

    # --- envelopes ------------------------------------------------------------------------

    def decode_single(self, obj: Any) -> Feeds:
        if type(obj) is not dict or "features" not in obj:
            raise InputError('body must be a JSON object {"features": [...]}', where="body")
        if len(obj) != 1:
            extra = [k for k in obj if k != "features"]
            raise InputError(f"unexpected key {short(extra[0])} in body", where="body")
        features = obj["features"]
        direct = self._direct
        if (  # fast path: one numeric tensor, a well-formed array (a few µs, no numpy reductions)
            direct is not None
            and type(features) is list
            and len(features) == self.n
            and set(map(type, features)) <= _NUM_TYPES
            and (not direct[2] or (max(features) <= _F32_MAX and min(features) >= -_F32_MAX))
        ):
            return {direct[0]: np.array([features], dtype=direct[1])}
        return self._rows_to_feeds([features], single=True)

    def decode_batch(self, obj: Any, body: bytes | None = None) -> Feeds:
        """``body``: the raw bytes ``obj`` was parsed from, for the vectorised accept check
        (:meth:`_plain_numbers`); without it, or when that check declines, the precise path."""
        instances = batch_instances(obj, self.max_batch)
        if set(map(type, instances)) != {dict} or set(map(len, instances)) != {1}:
            self._bad_instance(instances)
        try:
            rows = list(map(itemgetter("features"), instances))
        except KeyError:
            self._bad_instance(instances)
        if body is not None and self._direct is not None:
            feeds = self._plain_numbers(rows, body)
            if feeds is not None:
                return feeds
        return self._rows_to_feeds(rows, single=False)

    def _plain_numbers(self, rows: list[Any], body: bytes) -> Feeds | None:
        """Accept a batch of well-formed number rows with one ``np.array`` and one range check;
        ``None``: anything else, which the precise path then accepts or locates.

        The per-value type check is one C pass over the body instead: with every character a
        JSON number, array or object can be made of deleted (``_NUMBER_BYTES``), what is left
        must be exactly the keys (``instances``, then ``features`` once per row), so there is
        no other string and no ``true``/``false``/``null``: every value is a number (orjson
        refused NaN/Infinity). ``np.array`` refuses ragged or non-number nesting, the shape
        check the rest; beyond float32 (or NaN) declines. Same array as the precise path.
        """
        if body.translate(None, _NUMBER_BYTES) != _INSTANCES_KEY + _FEATURES_KEY * len(rows):
            return None
        try:
            table = np.array(rows, dtype=np.float64)
        except (ValueError, TypeError):
            return None
        if table.shape != (len(rows), self.n):
            return None
        assert self._direct is not None
        name, dtype, f32 = self._direct
        if f32 and not np.abs(table).max() <= _F32_MAX:  # NaN compares False: declines too
            return None
        return {name: table.astype(dtype)}

    def _bad_instance(self, instances: list[Any]) -> None:
        for i, inst in enumerate(instances):
            if type(inst) is not dict or "features" not in inst:
                raise InputError(
                    f'each instance must be an object {{"features": ...}}, got {_json_type(inst)}'
                    if type(inst) is not dict
                    else "instance has no 'features'",
                    where=f"instance {i}",
                )
            if len(inst) != 1:
                extra = [k for k in inst if k != "features"]
                raise InputError(f"unexpected key {short(extra[0])}", where=f"instance {i}")
        raise AssertionError("unreachable")  # pragma: no cover

    # --- rows -----------------------------------------------------------------------------

    @staticmethod
    def _where(i: int, single: bool, feature: str | None = None) -> str:
        head = "features" if single else f"instance {i}"
        if feature is None:
            return head
        return f"feature {short(feature)}" if single else f"{head}, feature {short(feature)}"

    def _rows_to_feeds(self, rows: list[Any], *, single: bool) -> Feeds:
        kinds = set(map(type, rows))
        if kinds == {list}:
            if set(map(len, rows)) != {self.n}:
                for i, r in enumerate(rows):
                    if len(r) != self.n:
                        raise InputError(
                            f"expected {self.n} features, got {len(r)}", where=self._where(i, single)
                        )
        elif kinds == {dict}:
            rows = [self._by_name(r, i, single) for i, r in enumerate(rows)]
        else:
            for i, r in enumerate(rows):
                if type(r) not in (list, dict):
                    raise InputError(
                        f"'features' must be an array of {self.n} values or an object keyed by "
                        f"feature name, got {_json_type(r)}",
                        where=self._where(i, single),
                    )
            rows = [self._by_name(r, i, single) if type(r) is dict else r for i, r in enumerate(rows)]
            if set(map(len, rows)) != {self.n}:
                for i, r in enumerate(rows):
                    if len(r) != self.n:
                        raise InputError(
                            f"expected {self.n} features, got {len(r)}", where=self._where(i, single)
                        )
        table = self._numeric_table(rows, single) if self.all_numeric else self._mixed_table(rows, single)
        if self._direct is not None:
            name, dtype, f32 = self._direct
            if f32:
                self._check_f32(table, single)
            return {name: table.astype(dtype)}
        self._check_numeric_ranges(table, single)
        return table_to_feeds(table, self.manifest)

    def _by_name(self, row: dict[str, Any], i: int, single: bool) -> Any:
        if row.keys() != self.name_set:
            unknown = [k for k in row if k not in self.name_set]
            if unknown:
                raise InputError(f"unknown feature {short(unknown[0])}", where=self._where(i, single))
            missing = [n for n in self.names if n not in row]
            raise InputError(
                f"missing feature {short(missing[0])}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                where=self._where(i, single),
            )
        return self._getter(row) if self.n > 1 else (row[self.names[0]],)

    def _numeric_table(self, rows: list[Any], single: bool) -> np.ndarray:
        # Widths were checked; one flat list is cheaper to type-check and convert than nested rows.
        flat = list(chain.from_iterable(rows))
        types = set(map(type, flat))
        if not types <= self.num_types:
            self._locate_type_error(rows, single)
        table = np.array(flat, dtype=np.float64).reshape(len(rows), self.n)
        if type(None) in types:
            self._check_missing(table, single)
        return table

    def _check_missing(self, num: np.ndarray, single: bool) -> None:
        """``null`` only where the model accepts missing values (then it is passed as NaN)."""
        self._first_bad(
            np.isnan(num) & ~self.missing_ok, single,
            "must be a number, got null (this model does not accept missing values here)",
        )

    def _mixed_table(self, rows: list[Any], single: bool) -> np.ndarray:
        columns = list(zip(*rows, strict=True))
        for j in self.numeric_cols:
            allowed = _NUM_TYPES | {type(None)} if self.missing_ok[j] else _NUM_TYPES
            if not set(map(type, columns[j])) <= allowed:
                self._locate_type_error(rows, single)
        for j in self.string_cols:
            if not set(map(type, columns[j])) <= _STR_TYPES:
                self._locate_type_error(rows, single)
        table = np.empty((len(rows), self.n), dtype=object)
        for j, col in enumerate(columns):
            table[:, j] = col
        return table

    def _locate_type_error(self, rows: list[Any], single: bool) -> None:
        string = set(self.string_cols)
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                want_str = j in string
                ok = type(v) is str if want_str else type(v) in _NUM_TYPES or (
                    v is None and bool(self.missing_ok[j]))
                if not ok:
                    need = "a string" if want_str else "a number"
                    why = (" (this model does not accept missing values here)"
                           if v is None and not want_str else "")
                    raise InputError(
                        f"must be {need}, got {_json_type(v)}{why}",
                        where=self._where(i, single, self.names[j]),
                    )
        raise AssertionError("unreachable")  # pragma: no cover

    def _first_bad(self, mask: np.ndarray, single: bool, what: str) -> None:
        if mask.any():
            r, c = np.argwhere(mask)[0]
            raise InputError(what, where=self._where(int(r), single, self.names[int(c)]))

    def _check_f32(self, table: np.ndarray, single: bool) -> None:
        if np.fmax.reduce(np.abs(table), axis=None, initial=0.0) > _F32_MAX:  # NaN: missing
            self._first_bad(np.abs(table) > _F32_MAX, single, "value overflows float32")

    def _check_numeric_ranges(self, table: np.ndarray, single: bool) -> None:
        """Dtype range checks the generic splitter would report without an instance index."""
        if self.all_numeric:
            num = table
        else:
            num = np.zeros(table.shape)
            num[:, self.numeric_cols] = table[:, self.numeric_cols].astype(np.float64)
        if self.f32_cols.any():
            over = np.zeros(num.shape, dtype=bool)
            over[:, self.f32_cols] = np.abs(num[:, self.f32_cols]) > _F32_MAX
            self._first_bad(over, single, "value overflows float32")
        for j, dtype in self.int_cols.items():
            lo, hi = _INT_RANGE[dtype]
            col = num[:, j]
            mask = np.zeros(num.shape, dtype=bool)
            mask[:, j] = (col != np.round(col)) | (col < lo) | (col > hi)
            self._first_bad(mask, single, f"must be a whole number within {dtype}")
        for j in self.bool_cols:
            mask = np.zeros(num.shape, dtype=bool)
            mask[:, j] = (num[:, j] != 0) & (num[:, j] != 1)
            self._first_bad(mask, single, "must be 0 or 1")


def decoder_for(manifest: Manifest, *, max_batch: int) -> RequestDecoder | TensorRequestDecoder:
    """The request decoder a bundle needs: rows of named features, or named N-D tensors."""
    if manifest.is_tensor:
        return TensorRequestDecoder(manifest, max_batch=max_batch)
    return RequestDecoder(manifest, max_batch=max_batch)


__all__ = ["RequestDecoder", "decoder_for", "parse_json"]
