"""The OpenAPI description of an image bundle's prediction paths (#17).

Besides the preprocessed tensor (the tensor bundle's JSON body, for clients that preprocess
themselves), every prediction path of an image bundle takes what
:mod:`~packserve.serve.payloads.images` accepts: a raw ``image/jpeg|png|webp|gif`` body,
``multipart/form-data`` with one or several files (several = a batch), and JSON
``{"image": "<base64>"}`` / ``{"instances": [{"image": ...}]}``. The answers: top-k labels
(``?top_k=``), with the model's own output tensor on ``?raw=true``; several images, or a
``/batch`` path, answer the batch shape. The statuses name what each refusal means for an
image.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from packserve.bundle import Manifest

IMAGE_MEDIA = ("image/jpeg", "image/png", "image/webp", "image/gif")
_STRICT = ConfigDict(extra="forbid")
_BINARY = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}

#: what each status means for an image request (the document's descriptions)
IMAGE_ERRORS = {
    "400": "malformed JSON or multipart body (no boundary, no closing boundary, no file part)",
    "413": "body over --max-body-bytes, or an image over the bundle's max_bytes / max_pixels "
           "(refused from the header, before decoding)",
    "415": "not an image media type, or an image that is not JPEG, PNG, WebP or GIF",
    "422": "an image that cannot be decoded (empty, truncated, corrupt, animated), bad base64, "
           "more images than the batch limit, top_k < 1, raw not a boolean, or an invalid tensor",
}

QUERY_PARAMETERS: list[dict[str, Any]] = [
    {"name": "top_k", "in": "query", "required": False,
     "description": "how many labels to return per image, most probable first (clipped to the "
                    "number of classes)",
     "schema": {"type": "integer", "minimum": 1, "default": 5}},
    {"name": "raw", "in": "query", "required": False,
     "description": "also return the model's own output tensor (e.g. logits) as `outputs`",
     "schema": {"type": "boolean", "default": False}},
]


def image_schemas(manifest: Manifest, prefix: str, max_batch: int) -> dict[str, type[BaseModel]]:
    """Request/response models of the image forms, for one model version."""
    b64 = Field(description="the encoded image (JPEG, PNG, WebP, GIF) as base64, or a "
                            "data: URL (data:image/png;base64,...)")
    single = create_model(  # type: ignore[call-overload]
        f"{prefix}_ImageRequest", __config__=_STRICT,
        __doc__=f"one encoded image for model {manifest.name!r}", image=(str, b64),
    )
    batch = create_model(  # type: ignore[call-overload]
        f"{prefix}_ImageBatchRequest", __config__=_STRICT,
        __doc__=f"1..{max_batch} encoded images (a batch)",
        instances=(list[single], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )
    out: dict[str, type[BaseModel]] = {"image_request": single, "image_batch_request": batch}
    if not manifest.is_classifier:  # regressors / raw tensors answer their usual outputs
        return out
    classes = list(manifest.outputs.classes or [])
    label: Any = Literal[tuple(classes)] if classes else str  # type: ignore[valid-type]
    scored = create_model(  # type: ignore[call-overload]
        f"{prefix}_LabelProbability", __config__=_STRICT,
        label=(label, ...), probability=(float, Field(ge=0.0, le=1.0)),
    )
    fields: dict[str, Any] = {
        "prediction": (label, Field(description="the most probable label")),
        "probability": (float, Field(ge=0.0, le=1.0, description="its probability")),
        "top_k": (list[scored], Field(min_length=1, description="the top_k labels, most probable first")),  # type: ignore[valid-type]
        "outputs": (dict[str, Any] | None, Field(
            default=None, description="?raw=true only: the model's output tensor(s) by name, "
                                      "this image's row (e.g. logits)")),
    }
    item = create_model(f"{prefix}_ImageBatchItem", __config__=_STRICT, **fields)  # type: ignore[call-overload]
    response = create_model(  # type: ignore[call-overload]
        f"{prefix}_ImagePredictResponse", __config__=_STRICT, **fields, model_version=(str, ...),
    )
    batch_response = create_model(  # type: ignore[call-overload]
        f"{prefix}_ImageBatchResponse", __config__=_STRICT,
        predictions=(list[item], ...), batch_size=(int, Field(ge=1)),  # type: ignore[valid-type]
        model_version=(str, ...),
    )
    return {**out, "image_response": response, "image_batch_response": batch_response}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def image_operation(op: dict[str, Any], names: dict[str, str], *, batch: bool) -> dict[str, Any]:
    """``op`` (the tensor bundle's operation) with the image forms, parameters and statuses."""
    tensor_req = names["batch_request" if batch else "request"]
    json_body: dict[str, Any] = {"schema": {"anyOf": [
        _ref(names["image_request"]), _ref(names["image_batch_request"]), _ref(tensor_req),
    ]}}
    content: dict[str, Any] = {"application/json": json_body}
    content.update({media: {"schema": dict(_BINARY)} for media in IMAGE_MEDIA})
    content["multipart/form-data"] = {
        "schema": {
            "type": "object",
            "description": "every file part is an image, in order (several = a batch); other "
                           "fields are ignored",
            "properties": {"file": dict(_BINARY)},
            "additionalProperties": dict(_BINARY),
        },
    }
    op["requestBody"] = {"required": True, "content": content}
    op["parameters"] = [*op.get("parameters", []), *QUERY_PARAMETERS]
    responses: dict[str, Any] = op["responses"]
    if "image_response" in names:
        tensor_resp = names["batch_response" if batch else "response"]
        shapes = [_ref(names["image_batch_response"]), _ref(tensor_resp)]
        if not batch:
            shapes.insert(0, _ref(names["image_response"]))
        responses["200"] = {
            "description": "top-k labels per image (the batch shape for several images or a "
                           "/batch path); the tensor answer for a tensor body",
            "content": {"application/json": {"schema": {"anyOf": shapes}}},
        }
    elif not batch:  # not a classifier: several images answer the batch shape
        responses["200"] = {
            "description": "prediction (the batch shape for several images)",
            "content": {"application/json": {"schema": {"anyOf": [
                _ref(names["response"]), _ref(names["batch_response"])]}}},
        }
    for code, text in IMAGE_ERRORS.items():
        if code in responses:
            responses[code] = {**responses[code], "description": text}
    return op


__all__ = ["IMAGE_ERRORS", "IMAGE_MEDIA", "QUERY_PARAMETERS", "image_operation", "image_schemas"]
