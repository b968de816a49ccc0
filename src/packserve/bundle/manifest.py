"""The manifest (``packserve.json``): what a bundle's artifact is and how to feed and read it.

The manifest says everything needed to feed and interpret the artifact without the training
code: the input signature (which feature goes into which tensor), how raw outputs become
predictions, and the sha256 of every file so that a loader can refuse a tampered bundle
*before* parsing it (:mod:`packserve.bundle.io` writes and checks those). Pydantic models
only; no file I/O here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 2
#: what this packserve reads; a tabular bundle is still written as 1 (older readers keep
#: reading it), a tensor bundle as 2 (an older reader then says "unsupported schema_version"
#: instead of tripping over unknown fields).
READABLE_SCHEMA_VERSIONS = (1, 2)
MANIFEST_NAME = "packserve.json"

Task = Literal["binary", "multiclass", "regression", "tensor", "labels", "cluster", "transform"]
#: tasks whose predictions are named raw outputs (``OutputSpec.tensors``), served as they are:
#: N-D tensor models, and scikit-learn classifiers without probabilities (labels + decision
#: scores), clusterers (cluster id + distances) and standalone transformers
NAMED_OUTPUT_TASKS = frozenset({"tensor", "labels", "cluster", "transform"})
Dtype = Literal[
    "float32", "float64", "float16", "int64", "int32", "uint8", "string", "bool"
]
Signature = Literal["table", "tensor"]
Label = int | str | float | bool
INTEGER_DTYPES = frozenset({"int64", "int32", "uint8"})
FLOAT_DTYPES = frozenset({"float32", "float64", "float16"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class FeatureSpec(_Model):
    """One named input feature as the user sees it.

    ``allow_missing``: the model takes a missing value (``null`` / NaN) for this feature —
    measured at pack time (native and artifact agree on rows without it), never assumed.
    """

    name: str
    dtype: Dtype = "float32"
    # Written only when true, so a bundle without missing values reads in older packserve.
    allow_missing: bool = Field(default=False, exclude_if=lambda v: not v)


class TensorSpec(_Model):
    """One named artifact tensor (an input, or in ``OutputSpec.tensors`` an output).

    ``shape`` has the batch axis first; ``None`` marks a variable axis: always the batch
    axis, and any axis declared dynamic (``axes`` names them, e.g. ``{"0": "batch", "1":
    "seq"}``). Every other axis must match exactly.

    A *table* bundle's inputs are filled from named features: usually one tensor
    ``[None, n_features]`` (``features`` lists them in order), a ColumnTransformer pipeline
    one ``[None, 1]`` tensor per column. A *tensor* bundle's inputs are given directly by
    the caller, by name, and ``features`` is empty.

    ``value_range`` (inclusive ``[lo, hi]``, integer inputs) is the range the model accepts,
    e.g. token ids ``[0, vocab_size - 1]``: requests outside it are refused (an
    out-of-range id is an ``IndexError`` inside an embedding, not a prediction).
    ``sample_shape`` is one shape the pack sample had (batch axis included): what warm-up,
    benchmarks and examples use for the variable axes.
    """

    name: str
    dtype: Dtype
    shape: list[int | None]
    features: list[str] = Field(default_factory=list)
    axes: dict[int, str] = Field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    sample_shape: list[int] | None = None

    @field_validator("shape")
    @classmethod
    def _sizes(cls, v: list[int | None]) -> list[int | None]:
        if any(d is not None and d < 0 for d in v):
            raise ValueError("tensor sizes must be >= 0 (None marks a variable axis)")
        return v

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def instance_shape(self) -> list[int | None]:
        """The shape of one instance (the batch axis dropped)."""
        return self.shape[1:]

    def example_shape(self, batch: int = 1) -> tuple[int, ...]:
        """A concrete shape for ``batch`` instances: variable axes as in the pack sample."""
        seen = self.sample_shape or []
        dims = [batch]
        for i, d in enumerate(self.shape[1:], start=1):
            dims.append(d if d is not None else (seen[i] if i < len(seen) else 1))
        return tuple(dims)


class OutputSpec(_Model):
    """How raw outputs turn into predictions.

    ``postprocess``:
      * ``probabilities``: ``probability_output`` already holds class probabilities (n, k);
      * ``softmax``: it holds logits (n, k);
      * ``sigmoid_logit`` / ``sigmoid_probability``: it holds one column (n,) or (n, 1) with
        the positive-class logit / probability; probabilities become ``[1-p, p]``;
      * ``identity``: regression, ``value_output`` holds values.
      * ``none``: ``task='tensor'``, every output in ``tensors`` is served by name, as is.
    ``label_output`` names a tensor of predicted labels when the converter emits one (needed
    for models such as SVC whose label is not the argmax of its probabilities).
    """

    task: Task
    postprocess: Literal[
        "probabilities", "softmax", "sigmoid_logit", "sigmoid_probability", "identity", "none"
    ]
    label_output: str | None = None
    probability_output: str | None = None
    value_output: str | None = None
    classes: list[Label] | None = None
    threshold: float = 0.5
    names: list[str] = Field(default_factory=list, description="all raw output tensor names")
    tensors: list[TensorSpec] = Field(
        default_factory=list,
        description="every raw output (name, dtype, shape with the batch axis first); "
        "task='tensor' serves them as they are",
    )


Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


class ImagePreprocess(_Model):
    """How an encoded image becomes the model's input tensor (issue #17), recorded so that the
    server runs exactly the pipeline the model was trained with instead of a re-typed copy.

    decode -> ``mode`` (RGB / L) -> ``resize`` (an int: the shorter side, aspect kept, as
    torchvision's ``Resize(n)``; ``[h, w]``: exact) with ``interpolation`` -> ``crop`` (center,
    ``[h, w]``, zero-padded when larger, as torchvision) -> ``scale`` (/255 to [0, 1]) ->
    ``mean``/``std`` -> ``layout`` -> ``dtype``. ``max_bytes``/``max_pixels`` bound what a
    request may send (checked before the full decode).
    """

    input: str
    mode: Literal["RGB", "L"] = "RGB"
    resize: int | tuple[int, int] | None = None
    interpolation: Interpolation = "bilinear"
    antialias: bool = True
    crop: tuple[int, int] | None = None
    scale: bool = True
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> ImagePreprocess:
        channels = self.channels
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and len(v) not in (1, channels):
                raise ValueError(f"{name} needs 1 or {channels} values for mode {self.mode}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if self.dtype == "uint8" and (self.scale or self.mean or self.std):
            raise ValueError("dtype uint8 takes raw pixels: scale=False and no mean/std")
        if not self.antialias and self.interpolation != "nearest":
            raise ValueError("antialias=False is not implemented (Pillow always antialiases)")
        if self.output_size is None:
            raise ValueError("give crop=[h, w] or an exact resize=[h, w]: a batch needs one size")
        return self

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image."""
        if self.crop is not None:
            return self.crop
        return self.resize if isinstance(self.resize, tuple) else None

    def instance_shape(self) -> list[int]:
        h, w = self.output_size or (0, 0)
        c = self.channels
        return [c, h, w] if self.layout == "NCHW" else [h, w, c]


class FileEntry(_Model):
    sha256: str
    size: int


class ParityReport(_Model):
    """What was measured at pack time, comparing the artifact with the native model."""

    rows: int
    label_agreement: float | None = None
    max_abs_diff_probability: float | None = None
    max_abs_diff_value: float | None = None
    tolerance: float
    tolerance_basis: str = ""
    passed: bool
    notes: list[str] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)


class Manifest(_Model):
    schema_version: int = 1  # 2 for tensor bundles (set by the validator below)
    name: str
    version: str = "1.0.0"
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    format: Literal["onnx", "torchscript"] = "onnx"
    artifact: str = "model.onnx"
    task: Task
    signature: Signature = "table"
    features: list[FeatureSpec] = Field(default_factory=list)
    inputs: list[TensorSpec]
    outputs: OutputSpec
    framework: str
    framework_version: str
    model_type: str
    converters: dict[str, str] = Field(default_factory=dict)
    opsets: dict[str, int] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    parity: ParityReport
    # table: rows of feature values; tensor: {input name: one instance as nested lists}
    # (only when small enough to show in the OpenAPI document)
    examples: list[Any] = Field(default_factory=list)
    export: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    #: image bundles (#17): the preprocessing every encoded image goes through
    preprocess: ImagePreprocess | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(
                f"unsupported bundle schema_version {v} (this packserve reads "
                f"{' and '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.signature == "tensor":
            if self.features or any(t.features for t in self.inputs):
                raise ValueError("a tensor bundle's inputs take no named features")
            if self.schema_version < 2:
                self.schema_version = 2
        elif not self.features:
            raise ValueError("a table bundle lists its features")
        elif self.schema_version < 2 and (
            self.task in NAMED_OUTPUT_TASKS or any(f.allow_missing for f in self.features)
        ):  # what an older reader would misread (it refuses schema 2 with a clear message)
            self.schema_version = 2
        if self.preprocess is not None:
            self._check_image_input(self.preprocess)
        if self.task in NAMED_OUTPUT_TASKS and not self.outputs.tensors:
            raise ValueError(f"task={self.task!r} needs outputs.tensors")
        return self

    def _check_image_input(self, pre: ImagePreprocess) -> None:
        if self.signature != "tensor" or len(self.inputs) != 1 or self.inputs[0].name != pre.input:
            raise ValueError("preprocess needs a tensor bundle whose single input it names")
        shape = self.inputs[0].shape[1:]
        want = pre.instance_shape()
        if len(shape) != 3 or any(d is not None and d != w for d, w in zip(shape, want, strict=True)):
            raise ValueError(f"preprocess makes instances {want}, the input takes {shape}")

    @property
    def is_tensor(self) -> bool:
        """Inputs are named N-D tensors given directly (not rows of named features)."""
        return self.signature == "tensor"

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def missing_values(self) -> Literal["all", "some", "none"]:
        """Whether the model accepts missing values: for every numeric feature, some, none."""
        numeric = [f for f in self.features if f.dtype != "string"]
        allowed = sum(f.allow_missing for f in numeric)
        return "none" if not allowed else "all" if allowed == len(numeric) else "some"

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass")


__all__ = [
    "FLOAT_DTYPES",
    "INTEGER_DTYPES",
    "MANIFEST_NAME",
    "NAMED_OUTPUT_TASKS",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "Dtype",
    "FeatureSpec",
    "FileEntry",
    "ImagePreprocess",
    "Label",
    "Manifest",
    "OutputSpec",
    "ParityReport",
    "Signature",
    "Task",
    "TensorSpec",
]
