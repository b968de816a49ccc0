"""Request bodies -> validated feeds for tensor bundles (named N-D inputs).

The envelopes mirror the tabular ones, with ``inputs`` in place of ``features``:

* ``/predict``: ``{"inputs": {"tokens": [...], "mask": [...]}}`` — one instance, each input a
  nested JSON array *without* the batch axis; a single-input model also takes the bare array,
  ``{"inputs": [[...], ...]}``.
* ``/predict/batch``: ``{"instances": [{"inputs": ...}, ...]}``; a variable axis (e.g. a
  sequence length) must have one length across the instances of one request.

Each input is checked by its :class:`~packserve.runtime.tensors.InputChecker` (the same
code as the Python API), which flattens the nested lists level by level with C-level passes
and walks element by element only to name the instance and axis of a failure:
``input 'tokens', instance 3: axis 1 has 17 values, expected 16``.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from packserve.bundle import Manifest
from packserve.errors import InputError
from packserve.runtime.inputs import Feeds
from packserve.runtime.tensors import InputChecker, same_batch, short

_JSON_TYPE = {str: "a string", bool: "a boolean", type(None): "null", list: "an array",
              dict: "an object", int: "a number", float: "a number"}


def _json_type(value: object) -> str:
    return _JSON_TYPE.get(type(value), "an unsupported value")


def batch_instances(obj: Any, max_batch: int) -> list[Any]:
    """The ``instances`` list of a ``/predict/batch`` body, its envelope checked (both decoders)."""
    if type(obj) is not dict or "instances" not in obj:
        raise InputError('body must be a JSON object {"instances": [...]}', where="body")
    if len(obj) != 1:
        extra = [k for k in obj if k != "instances"]
        raise InputError(f"unexpected key {short(extra[0])} in body", where="body")
    instances = obj["instances"]
    if type(instances) is not list:
        raise InputError(f"'instances' must be an array, got {_json_type(instances)}", where="instances")
    if not 1 <= len(instances) <= max_batch:
        raise InputError(f"a batch needs 1 to {max_batch} instances, got {len(instances)}",
                         where="instances")
    return instances


class TensorRequestDecoder:
    """Compiled once per model; the same interface as the tabular ``RequestDecoder``."""

    def __init__(self, manifest: Manifest, *, max_batch: int) -> None:
        self.manifest = manifest
        self.max_batch = max_batch
        self.checkers = [InputChecker(s) for s in manifest.inputs]
        self.names = [c.name for c in self.checkers]
        self.name_set = frozenset(self.names)
        self.sole = self.checkers[0] if len(self.checkers) == 1 else None

    # --- envelopes ------------------------------------------------------------------------

    def decode_single(self, obj: Any) -> Feeds:
        if type(obj) is not dict or "inputs" not in obj:
            raise InputError('body must be a JSON object {"inputs": ...}', where="body")
        if len(obj) != 1:
            extra = [k for k in obj if k != "inputs"]
            raise InputError(f"unexpected key {short(extra[0])} in body", where="body")
        value = obj["inputs"]
        sole = self.sole
        if sole is not None and type(value) is not dict:
            return {sole.name: sole.from_nested([value], single=True)}
        named = self._named(value, None)
        return {c.name: c.from_nested([named[c.name]], single=True) for c in self.checkers}

    def decode_batch(self, obj: Any) -> Feeds:
        instances = batch_instances(obj, self.max_batch)
        if set(map(type, instances)) != {dict} or set(map(len, instances)) != {1}:
            self._bad_instance(instances)
        try:
            values = list(map(itemgetter("inputs"), instances))
        except KeyError:
            self._bad_instance(instances)
        sole = self.sole
        if sole is not None and dict not in set(map(type, values)):
            return {sole.name: sole.from_nested(values)}
        named = [self._named(v, i) for i, v in enumerate(values)]
        feeds = {c.name: c.from_nested([n[c.name] for n in named]) for c in self.checkers}
        same_batch(feeds)
        return feeds

    def _named(self, value: Any, instance: int | None) -> dict[str, Any]:
        where = "inputs" if instance is None else f"instance {instance}"
        if type(value) is not dict:
            raise InputError(
                f"'inputs' must be an object keyed by input name {self.names[:10]}"
                + (" (or, for a single-input model, the bare array)" if self.sole else "")
                + f", got {_json_type(value)}",
                where=where,
            )
        if value.keys() != self.name_set:
            unknown = [k for k in value if k not in self.name_set]
            if unknown:
                raise InputError(
                    f"unknown input {short(unknown[0])}; the model takes {self.names[:10]}",
                    where=where,
                )
            missing = [n for n in self.names if n not in value]
            raise InputError(f"missing input(s) {missing[:10]}", where=where)
        return value

    def _bad_instance(self, instances: list[Any]) -> None:
        for i, inst in enumerate(instances):
            if type(inst) is not dict:
                raise InputError(
                    f'each instance must be an object {{"inputs": ...}}, got {_json_type(inst)}',
                    where=f"instance {i}",
                )
            if "inputs" not in inst:
                raise InputError("instance has no 'inputs'", where=f"instance {i}")
            if len(inst) != 1:
                extra = [k for k in inst if k != "inputs"]
                raise InputError(f"unexpected key {short(extra[0])}", where=f"instance {i}")
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["TensorRequestDecoder"]
