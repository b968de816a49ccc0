"""OpenAPI request/response models for tensor bundles (named N-D inputs and outputs).

Exact per input: one nested array level per axis with ``minItems``/``maxItems`` for every
fixed axis, the element type (``number``, ``integer`` with the recorded ``minimum`` /
``maximum`` for token ids, ``boolean``) and the dtype in the description. The request
bodies are what :class:`~packserve.serve.payloads.tensor.TensorRequestDecoder` accepts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from packserve.bundle import FLOAT_DTYPES, INTEGER_DTYPES, NAMED_OUTPUT_TASKS, Manifest, TensorSpec
from packserve.runtime.tensors import InputChecker, shape_text

_STRICT = ConfigDict(extra="forbid")


def _element(spec: TensorSpec, *, is_input: bool) -> Any:
    if spec.dtype in FLOAT_DTYPES:
        return float
    if spec.dtype in INTEGER_DTYPES:
        if is_input:
            c = InputChecker(spec)
            return Annotated[int, Field(ge=c.lo, le=c.hi)]
        return int
    if spec.dtype == "bool":
        return bool
    return str


def nested_type(spec: TensorSpec, *, is_input: bool) -> Any:
    """One instance of ``spec`` (the batch axis dropped) as nested, size-bounded lists."""
    t: Any = _element(spec, is_input=is_input)
    for axis in range(len(spec.shape) - 1, 0, -1):
        size = spec.shape[axis]
        name = spec.axes.get(axis)
        desc = f"axis {axis}" + (f" ({name})" if name else "")
        if size is None:
            desc += ": variable length" + (" (one length across a batch request)" if is_input else "")
            t = Annotated[list[t], Field(description=desc)]
        else:
            t = Annotated[list[t], Field(min_length=size, max_length=size, description=desc)]
    return t


def _describe(spec: TensorSpec) -> str:
    text = f"{spec.dtype}, shape {shape_text(spec.shape)} (N: the batch axis, absent here; ?: variable)"
    if spec.value_range is not None:
        text += f"; values within [{spec.value_range[0]:g}, {spec.value_range[1]:g}]"
    return text


def named_model(prefix: str, suffix: str, specs: list[TensorSpec], *, is_input: bool) -> type[BaseModel]:
    fields = {
        f"t{i}": (nested_type(s, is_input=is_input), Field(alias=s.name, description=_describe(s)))
        for i, s in enumerate(specs)
    }
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{prefix}_{suffix}", __config__=_STRICT,
        __doc__=f"{'inputs' if is_input else 'outputs'} by name (all required)", **fields,
    )


def tensor_schemas(manifest: Manifest, prefix: str, max_batch: int,
                   classifier_items: dict[str, Any] | None) -> dict[str, type[BaseModel]]:
    """Request/response models for a tensor bundle; ``classifier_items`` (label/probability
    fields) for a classifier, ``None`` for regression / ``task='tensor'``."""
    specs = manifest.inputs
    inputs_model = named_model(prefix, "Inputs", specs, is_input=True)
    inputs_type: Any = inputs_model
    doc = "the inputs by name"
    if len(specs) == 1:
        inputs_type = inputs_model | nested_type(specs[0], is_input=True)
        doc += f", or the bare array of the single input {specs[0].name!r}"
    example = manifest.examples[0] if manifest.examples else None
    extra = {"examples": [{"inputs": example}]} if example is not None else {}
    request = create_model(
        f"{prefix}_PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra=extra),  # type: ignore[typeddict-item]
        __doc__=f"one instance for model {manifest.name!r} (no batch axis)",
        inputs=(inputs_type, Field(description=doc)),
    )
    batch_extra = {"examples": [{"instances": [{"inputs": example}]}]} if example is not None else {}
    batch_request = create_model(
        f"{prefix}_BatchRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra=batch_extra),  # type: ignore[typeddict-item]
        instances=(list[request], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )
    if classifier_items is not None:
        item_fields = classifier_items
    elif manifest.task in NAMED_OUTPUT_TASKS:
        outputs = named_model(prefix, "Outputs", manifest.outputs.tensors, is_input=False)
        item_fields = {"outputs": (outputs, Field(description="every output by name, one instance"))}
    else:
        item_fields = {"prediction": (float | list[float], Field(description="predicted value(s)"))}
    item = create_model(f"{prefix}_BatchItem", __config__=_STRICT, **item_fields)
    response = create_model(
        f"{prefix}_PredictResponse", __config__=_STRICT, **item_fields, model_version=(str, ...)
    )
    batch_response = create_model(
        f"{prefix}_BatchResponse", __config__=_STRICT,
        predictions=(list[item], ...),  # type: ignore[valid-type]
        batch_size=(int, Field(ge=1)), model_version=(str, ...),
    )
    return {"request": request, "batch_request": batch_request, "response": response,
            "batch_response": batch_response}


__all__ = ["nested_type", "tensor_schemas"]
