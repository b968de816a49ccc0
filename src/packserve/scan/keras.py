"""Keras model files, without TensorFlow or Keras: judge what loading the model config would run.

A Keras model is weights plus a JSON config that names the classes and functions to rebuild it.
Loading runs code in three ways, each a finding here:

- a ``Lambda`` layer carries marshalled Python bytecode (or a lambda's source) that runs;
- a custom object (a module outside Keras, or a ``package>Name`` registered name) makes the
  loader import and call that module's code;
- a function named by module and name (Keras 3 ``"class_name": "function"``) is imported and
  called: judged by the same policy as a pickle's globals.

``.keras`` files are zips (``config.json``, ``metadata.json``, ``model.weights.h5``): the config
is read by :mod:`.zipscan`; the weights are raw arrays that never run code. Legacy ``.h5`` files
keep the config in the HDF5 attribute ``model_config``: it is read with h5py when installed
(not a core dependency); without it the file could not be scanned. Legacy configs name only a
``class_name``: one outside :data:`KERAS_CLASSES` is a custom object.
"""

from __future__ import annotations

import json
import lzma
import zipfile
import zlib
from typing import Any

from packserve.scan.context import Ctx, ScanHost
from packserve.scan.policy import judge
from packserve.scan.report import Severity

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG = 64 << 20  # bytes of JSON config read
MAX_NODES = 1 << 20  # JSON values visited (bounded work on hostile configs)
KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
LAMBDA_CLASSES = {"Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda"}

# Classes a Keras 2 (legacy .h5) config names without a module: models, layers, initializers,
# regularizers, constraints, optimizers, losses, metrics (reviewed; anything else is custom).
_CLASS_NAMES = """
    Sequential Functional Model InputLayer Dense EinsumDense Activation Dropout Flatten Reshape
    Permute RepeatVector Embedding Masking Identity Conv1D Conv2D Conv3D Conv1DTranspose
    Conv2DTranspose Conv3DTranspose SeparableConv1D SeparableConv2D DepthwiseConv1D
    DepthwiseConv2D Convolution1D Convolution2D Convolution3D MaxPooling1D MaxPooling2D
    MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D MaxPool1D MaxPool2D MaxPool3D
    AvgPool1D AvgPool2D AvgPool3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPool1D
    GlobalMaxPool2D GlobalMaxPool3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D
    BatchNormalization LayerNormalization GroupNormalization UnitNormalization
    SpectralNormalization ReLU LeakyReLU PReLU ELU Softmax ThresholdedReLU LSTM GRU SimpleRNN
    LSTMCell GRUCell SimpleRNNCell StackedRNNCells RNN Bidirectional TimeDistributed ConvLSTM1D
    ConvLSTM2D ConvLSTM3D Attention AdditiveAttention MultiHeadAttention GroupQueryAttention Add
    Subtract Multiply Average Maximum Minimum Concatenate Dot ZeroPadding1D ZeroPadding2D
    ZeroPadding3D Cropping1D Cropping2D Cropping3D UpSampling1D UpSampling2D UpSampling3D
    GaussianNoise GaussianDropout AlphaDropout SpatialDropout1D SpatialDropout2D SpatialDropout3D
    ActivityRegularization Rescaling Normalization Resizing CenterCrop Discretization
    CategoryEncoding Hashing IntegerLookup StringLookup TextVectorization RandomFlip
    RandomRotation RandomZoom RandomTranslation RandomContrast RandomCrop GlorotUniform
    GlorotNormal HeNormal HeUniform LecunNormal LecunUniform Zeros Ones Constant RandomNormal
    RandomUniform TruncatedNormal VarianceScaling Orthogonal L1 L2 L1L2 OrthogonalRegularizer
    MaxNorm MinMaxNorm NonNeg UnitNorm RadialConstraint Adam AdamW SGD RMSprop Adagrad Adadelta
    Adamax Nadam Ftrl Lion ExponentialDecay PiecewiseConstantDecay PolynomialDecay
    InverseTimeDecay CosineDecay CosineDecayRestarts BinaryCrossentropy CategoricalCrossentropy
    SparseCategoricalCrossentropy MeanSquaredError MeanAbsoluteError MeanAbsolutePercentageError
    MeanSquaredLogarithmicError Huber Hinge SquaredHinge CategoricalHinge KLDivergence Poisson
    LogCosh CosineSimilarity Accuracy BinaryAccuracy CategoricalAccuracy
    SparseCategoricalAccuracy TopKCategoricalAccuracy SparseTopKCategoricalAccuracy AUC Precision
    Recall Mean Sum MeanMetricWrapper LossScaleOptimizer DTypePolicy Policy
"""
KERAS_CLASSES = frozenset(_CLASS_NAMES.split())
# Keras 3's own serialization markers for values inside a config (serialization_lib): data,
# or a reference to another layer's output in a functional graph; none names code to run.
VALUE_MARKERS = frozenset({
    "__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__typespec__", "__ellipsis__",
    "__slice__",
})


def is_keras_archive(names: list[str]) -> bool:
    """A Keras 3 ``.keras`` zip: its config and metadata at the top level."""
    return "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names)


def judge_config(scanner: ScanHost, raw: bytes, ctx: Ctx) -> None:
    """Parse a Keras model config (JSON) and report what loading it would run."""
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        scanner.error(ctx, "Keras model config is not valid JSON: cannot verify")
        return
    seen: set[tuple[str, str]] = set()
    stack: list[Any] = [config]
    visited = 0
    while stack:
        node = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            scanner.error(ctx, "Keras model config is too large to verify")
            return
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
            verdict = _judge_node(node)
            if verdict is not None and verdict[1:3] not in seen:
                seen.add(verdict[1:3])
                severity, rule, what, reason = verdict
                scanner.finding(ctx, severity, rule, f"{what}: {reason}")


def judge_member(scanner: ScanHost, zf: zipfile.ZipFile, info: zipfile.ZipInfo, ctx: Ctx) -> None:
    """``config.json`` of a ``.keras`` archive: read (bounded) and judged."""
    try:
        with zf.open(info) as stream:
            raw = stream.read(MAX_CONFIG + 1)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        scanner.error(ctx, f"Keras config cannot be read: {exc}")
        return
    if len(raw) > MAX_CONFIG:
        scanner.error(ctx, "Keras config is too large to verify")
        return
    scanner.note_verified()
    judge_config(scanner, raw, ctx)


def _judge_node(node: dict[str, Any]) -> tuple[Severity, str, str, str] | None:
    cls = node.get("class_name")
    if not isinstance(cls, str):
        return None
    module = node.get("module")
    registered = node.get("registered_name")
    if cls in LAMBDA_CLASSES:
        return (Severity.CRITICAL, "keras-lambda", f"{cls} layer",
                "its Python code (marshalled bytecode or source) runs when the model is loaded")
    if cls == "function" and isinstance(module, str):
        name = node.get("config")
        if not isinstance(name, str):
            return (Severity.HIGH, "keras-function", f"function in {module}",
                    "a function the config cannot name plainly")
        verdict = judge(module, name)
        if verdict is not None and not _builtin(module):
            return (verdict.severity, "keras-function", f"function {module}.{name}",
                    f"imported and called on load ({verdict.reason})")
        return None
    if isinstance(module, str):
        if not _builtin(module):
            return (Severity.HIGH, "keras-custom-object", f"{module}.{cls}",
                    "custom object: loading imports this module and runs its code")
        return None
    if (isinstance(registered, str) and ">" in registered) or ">" in cls:
        return (Severity.HIGH, "keras-custom-object", str(registered or cls),
                "registered custom object: the loading process must provide (run) its code")
    if module is None and "config" in node and cls not in KERAS_CLASSES | VALUE_MARKERS:
        return (Severity.HIGH, "keras-custom-object", cls,
                "not a Keras class: a custom object whose code the loader must run")
    return None


def _builtin(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in KERAS_MODULES)


def scan_h5(scanner: ScanHost, source: Any, ctx: Ctx) -> None:
    """A legacy Keras ``.h5``: judge its ``model_config`` attribute (h5py, if installed)."""
    if ctx.member is None:
        scanner.report.files[ctx.file] = "hdf5"
    try:
        import h5py  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        scanner.error(ctx, "HDF5 file (Keras .h5?): h5py is not installed, its model config "
                      "cannot be read (pip install h5py)")
        return
    try:
        with h5py.File(source, "r") as h5:
            raw = h5.attrs.get("model_config")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        scanner.error(ctx, f"HDF5 file cannot be read ({type(exc).__name__}): cannot verify")
        return
    if raw is None:
        return  # weights only: arrays, nothing that runs (listed as not a pickle format)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes) or len(raw) > MAX_CONFIG:
        scanner.error(ctx, "HDF5 model_config is not a JSON string of sane size: cannot verify")
        return
    scanner.note_verified()
    judge_config(scanner, raw, ctx)


__all__ = ["HDF5_MAGIC", "KERAS_CLASSES", "is_keras_archive", "judge_config", "judge_member", "scan_h5"]
