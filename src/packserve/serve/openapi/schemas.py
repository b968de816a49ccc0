"""Per-model request/response schemas and the OpenAPI paths of the prediction routes.

The prediction routes are raw ASGI endpoints (see :mod:`packserve.serve.predict`), so their
documentation is generated here from each bundle's manifest: exact feature count and names,
per-feature types (strings for ColumnTransformer columns), class labels with their JSON type,
and an example row: the first of ``manifest.examples`` (a real row of the pack sample) or,
with ``example_rows=False`` (``serve --no-example-rows``), a placeholder row (0 / "") so
that no user data reaches the document. The Pydantic models are built for the
schema only; requests are validated by :class:`~packserve.serve.payloads.validation.RequestDecoder`,
which accepts exactly what these schemas describe.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from packserve.bundle import NAMED_OUTPUT_TASKS, Manifest
from packserve.errors import ModelNotFoundError
from packserve.serve.openapi.images import image_operation, image_schemas
from packserve.serve.openapi.tensor import named_model, tensor_schemas
from packserve.serve.registry import ModelHandle, ModelRegistry

REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a stable code, a readable message, and where the problem is."""

    error: str = Field(description="stable machine-readable code, e.g. invalid_input")
    message: str
    where: str | None = Field(default=None, description='e.g. "instance 3, feature \'income\'"')


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "model"


def _py_type(dtype: str, missing: bool = False) -> Any:
    """The JSON type of one feature: ``number | null`` only where the model accepts a
    missing value (measured at pack time, ``allow_missing``)."""
    if dtype == "string":
        return str
    return float | None if missing else float


def schema_prefix(handle: ModelHandle) -> str:
    return f"{_ident(handle.name)}_{_ident(handle.version)}"


def _item_fields(manifest: Manifest, prefix: str) -> dict[str, Any]:
    """The fields of one prediction: label + probabilities, or a value."""
    strict = ConfigDict(extra="forbid")
    if manifest.task in NAMED_OUTPUT_TASKS:
        outputs = named_model(prefix, "Outputs", manifest.outputs.tensors, is_input=False)
        return {"outputs": (outputs, Field(description="every output by name, one row"))}
    if manifest.is_classifier:
        classes = list(manifest.outputs.classes or [])
        label: Any = Literal[tuple(classes)] if classes else str  # type: ignore[valid-type]
        probs = create_model(  # type: ignore[call-overload]
            f"{prefix}_Probabilities",
            __config__=strict,
            __doc__="probability per class label (labels as JSON object keys)",
            **{f"c{i}": (float, Field(alias=str(c), ge=0.0, le=1.0)) for i, c in enumerate(classes)},
        )
        item_fields: dict[str, Any] = {
            "prediction": (label, Field(description="predicted label (keeps its type)")),
            "probability": (float, Field(ge=0.0, le=1.0, description="probability of that label")),
            "probabilities": (probs, ...),
        }
    else:
        item_fields = {"prediction": (float, Field(description="predicted value"))}
    return item_fields


def example_row(manifest: Manifest, *, real: bool = True) -> Any:
    """The request example: the manifest's first example row or, when real rows must stay out
    or the bundle has none, a placeholder (the server's warm-up row: 0.0 per number, "" per
    string), so "Try it out" always starts from a valid request."""
    if real and manifest.examples:
        return manifest.examples[0]
    if manifest.is_tensor or not manifest.features:  # no placeholder for N-D tensors
        return None
    return ["" if f.dtype == "string" else 0.0 for f in manifest.features]


def model_schemas(
    manifest: Manifest, prefix: str, max_batch: int, *, example_rows: bool = True
) -> dict[str, type[BaseModel]]:
    """Request/response Pydantic models for one model version."""
    item_fields = _item_fields(manifest, prefix)
    if manifest.is_tensor:
        if not example_rows:  # its examples are real input tensors: leave them out
            manifest = manifest.model_copy(update={"examples": []})
        return tensor_schemas(manifest, prefix, max_batch,
                              item_fields if manifest.is_classifier else None)
    names = manifest.feature_names
    n = len(names)
    listing = ", ".join(names[:20]) + (", ..." if n > 20 else "")
    strict = ConfigDict(extra="forbid")
    described = Field(description=f"the {n} features in manifest order: {listing}")
    kinds = {_py_type(f.dtype, f.allow_missing) for f in manifest.features}
    if len(kinds) == 1 and str not in kinds:  # one numeric type: a plain array
        array: Any = Annotated[list[kinds.pop()], Field(min_length=n, max_length=n), described]  # type: ignore[misc]
    else:
        types = tuple(_py_type(f.dtype, f.allow_missing) for f in manifest.features)
        array = Annotated[tuple[types], described]  # type: ignore[valid-type]
    gaps = "; null = missing, where the feature's type allows it" if manifest.missing_values != "none" else ""
    by_name = create_model(  # type: ignore[call-overload]
        f"{prefix}_Features",
        __config__=strict,
        __doc__=f"the {n} features by name (all required{gaps})",
        **{f"f{i}": (_py_type(f.dtype, f.allow_missing), Field(alias=f.name))
           for i, f in enumerate(manifest.features)},
    )
    example = example_row(manifest, real=example_rows)
    extra = {"examples": [{"features": example}]} if example is not None else {}
    request = create_model(
        f"{prefix}_PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra=extra),  # type: ignore[typeddict-item]
        __doc__=f"one instance for model {manifest.name!r}",
        features=(
            array | by_name,
            Field(description="features in manifest order (array) or by name (object)"),
        ),
    )
    batch_extra = {"examples": [{"instances": [{"features": example}]}]} if example is not None else {}
    batch_request = create_model(
        f"{prefix}_BatchRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra=batch_extra),  # type: ignore[typeddict-item]
        instances=(list[request], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )
    item = create_model(f"{prefix}_BatchItem", __config__=strict, **item_fields)
    response = create_model(
        f"{prefix}_PredictResponse", __config__=strict, **item_fields, model_version=(str, ...)
    )
    batch_response = create_model(
        f"{prefix}_BatchResponse",
        __config__=strict,
        predictions=(list[item], ...),  # type: ignore[valid-type]
        batch_size=(int, Field(ge=1)),
        model_version=(str, ...),
    )
    return {
        "request": request,
        "batch_request": batch_request,
        "response": response,
        "batch_response": batch_response,
    }


_ERRORS = {
    "400": "malformed JSON",
    "401": "missing or wrong API key",
    "404": "unknown model or version",
    "405": "method not allowed",
    "413": "body too large",
    "415": "body is not application/json",
    "422": "invalid input: the body names the problem and where",
    "503": "model not ready, or the server is shutting down",
}


def _operation(
    summary: str, tag: str, req: str, resp: str, example: Any, secured: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": {"$ref": REF.format(model=req)}}
    if example is not None:
        body["example"] = example
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": {
            "200": {
                "description": "prediction",
                "content": {"application/json": {"schema": {"$ref": REF.format(model=resp)}}},
            },
            **{
                code: {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
                }
                for code, text in _ERRORS.items()
                if secured or code != "401"
            },
        },
    }
    if secured:
        op["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return op


def prediction_openapi(
    registry: ModelRegistry, *, secured: bool, example_rows: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) for every served model version; ``example_rows=False``
    puts placeholder rows, not the bundles' real example rows, in the document."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [(ErrorBody, "validation")]
    per_handle: dict[int, dict[str, str]] = {}
    paths: dict[str, Any] = {}
    handles = [h for h in registry.handles() if h.manifest is not None]
    used: set[str] = set()
    for h in handles:
        assert h.manifest is not None
        prefix = base = schema_prefix(h)
        n = 1
        while prefix in used:  # "1.0" and "1-0" sanitise alike: keep component names unique
            n += 1
            prefix = f"{base}_{n}"
        used.add(prefix)
        built = model_schemas(h.manifest, prefix, registry.max_batch, example_rows=example_rows)
        if h.manifest.preprocess is not None:  # image bundles (#17): the image forms too
            built.update(image_schemas(h.manifest, prefix, registry.max_batch))
        models.extend((m, "validation") for m in built.values())
        per_handle[id(h)] = {k: m.__name__ for k, m in built.items()}

    def add(base: str, h: ModelHandle, what: str) -> None:
        assert h.manifest is not None
        names = per_handle[id(h)]
        ex = example_row(h.manifest, real=example_rows)
        key = "inputs" if h.manifest.is_tensor else "features"
        tag = f"model {h.name}"
        single = _operation(
            f"Predict one instance ({what})", tag, names["request"], names["response"],
            None if ex is None else {key: ex}, secured,
        )
        batch = _operation(
            f"Predict a batch of 1..{registry.max_batch} instances ({what})", tag,
            names["batch_request"], names["batch_response"],
            None if ex is None else {"instances": [{key: ex}]}, secured,
        )
        if h.manifest.preprocess is not None:
            single = image_operation(single, names, batch=False)
            batch = image_operation(batch, names, batch=True)
        paths[f"{base}/predict"] = {"post": single}
        paths[f"{base}/predict/batch"] = {"post": batch}

    try:
        default = registry.get(registry.default_name())
    except ModelNotFoundError:
        default = None
    if default is not None and id(default) in per_handle:
        add("", default, f"default model {default.name!r}, version {default.version}")
    for name in registry.names():
        newest = registry.get(name)
        if id(newest) in per_handle:
            add(f"/models/{name}", newest, f"model {name!r}, newest version {newest.version}")
        for h in registry.versions(name):
            if id(h) in per_handle:
                add(f"/models/{name}/versions/{h.version}", h, f"model {name!r}, version {h.version}")
    _, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return paths, schemas


SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}

__all__ = [
    "SECURITY_SCHEMES", "ErrorBody", "example_row", "model_schemas", "prediction_openapi", "schema_prefix",
]
