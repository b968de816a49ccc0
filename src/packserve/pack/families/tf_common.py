"""What the Keras and SavedModel families share: a TensorFlow model seen from outside.

Both families describe their model as a :class:`TFGraph` (named inputs with dtype and shape,
named outputs, a callable that runs the native model on numpy arrays, and what the final
layer/loss says about the output); the sample, the output spec and the native reference are
then decided here once:

* one rank-2 float input and one output of rank <= 2 -> a *table* bundle (named features,
  /predict takes feature rows like any tabular family);
* anything else (NHWC images, sequences, several inputs) -> a *tensor* bundle (issue #16);
* the output's meaning (binary / multiclass / regression / raw tensors) comes from the final
  activation (``sigmoid`` / ``softmax``) or the compiled loss, else ``task=`` says it.

:class:`TFFamily` is the family part they share (one instance per pack carrying the graph and
the output decision; the native call; the ONNX file's checks and the :class:`Export`): a
subclass only describes its model and converts it.

TensorFlow is imported only by the functions that need it (``import packserve`` stays light).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from packserve.bundle import Label, OutputSpec, TensorSpec
from packserve.errors import ConfigError, MissingDependencyError, PackError, SampleError
from packserve.pack import parity
from packserve.pack.build import Export
from packserve.pack.family import ExportJob, Family, converter_errors, write_onnx
from packserve.pack.outputs import output_spec
from packserve.pack.signature import SampleTable, sample_table

EXTRA = "tensorflow"
OPSET = 17
OPTIONS = frozenset({"task", "output", "classes", "threshold", "opset_version"})
_DTYPES = {"float32", "float64", "float16", "int64", "int32", "uint8", "bool"}
_REGRESSION_LOSSES = {
    "mse", "mae", "mape", "msle", "mean_squared_error", "mean_absolute_error", "huber",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "log_cosh", "logcosh",
    "huber_loss", "meansquarederror", "meanabsoluteerror",
}

Arrays = dict[str, np.ndarray]


def require_tf() -> Any:
    """Import TensorFlow (and Keras), or say which extra installs them (exit 3)."""
    try:
        import keras  # noqa: F401
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError("tensorflow", EXTRA) from exc
    return tf


def require_tf2onnx() -> Any:
    try:
        import tf2onnx
    except ImportError as exc:
        raise MissingDependencyError("tf2onnx", EXTRA) from exc
    return tf2onnx


@dataclass
class TFGraph:
    """A TensorFlow model as the pack sees it."""

    inputs: list[TensorSpec]  # name, dtype, shape (batch axis first, None = variable)
    outputs: list[str]
    call: Callable[[Arrays], Arrays]
    last: str | None = None  # "Sigmoid" | "Softmax" | None: what the final activation says
    loss: str | None = None  # the compiled loss, when known
    #: the inputs' names in the exported graph when they differ (Keras's ``keras_tensor_N``)
    graph_names: list[str] = field(default_factory=list)

    @property
    def tabular(self) -> bool:
        """One rank-2 float input: the sample is a feature table."""
        return (len(self.inputs) == 1 and len(self.inputs[0].shape) == 2
                and self.inputs[0].dtype.startswith("float"))


_GENERATED = re.compile(r"(keras_tensor|input_layer)(_\d+)?")


def input_name(name: str, i: int, n: int) -> str:
    """Keras names unnamed inputs ``keras_tensor_N`` / ``input_layer_N`` (a process-wide
    counter, so the same model saved and loaded gets another name): serve them as ``input``."""
    if not _GENERATED.fullmatch(name):
        return name
    return "input" if n == 1 else f"input_{i}"


def dtype_name(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype))
    name = name.replace("tf.", "")
    if name not in _DTYPES:
        raise SampleError(f"packserve serves float, integer and boolean inputs; got {name}")
    return name


def _arrays(graph: TFGraph, sample: Any) -> Arrays:
    names = [s.name for s in graph.inputs]
    if isinstance(sample, Mapping):
        unknown = sorted(set(map(str, sample)) - set(names))
        missing = [n for n in names if n not in sample]
        if unknown or missing:
            raise SampleError(f"the model's inputs are {names}; the sample "
                              + (f"names unknown {unknown}" if unknown else f"lacks {missing}"))
        raw = [sample[n] for n in names]
    elif isinstance(sample, tuple | list) and len(names) > 1:
        if len(sample) != len(names):
            raise SampleError(f"the model takes {len(names)} inputs {names}; the sample has "
                              f"{len(sample)}")
        raw = list(sample)
    else:
        if len(names) != 1:
            raise SampleError(f"the model takes {len(names)} inputs {names}: pass the sample as "
                              "a mapping name -> array (or a tuple in that order)")
        raw = [sample]
    out: Arrays = {}
    for spec, value in zip(graph.inputs, raw, strict=True):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise SampleError(f"sample input {spec.name!r} must be numeric, got {arr.dtype}")
        if arr.ndim != len(spec.shape) or arr.shape[0] < 1:
            raise SampleError(f"sample input {spec.name!r} has shape {list(arr.shape)}; the model "
                              f"takes {_shape(spec.shape)} (batch axis first, at least one row)")
        for i, (want, got) in enumerate(zip(spec.shape[1:], arr.shape[1:], strict=True), 1):
            if want is not None and want != got:
                raise SampleError(f"sample input {spec.name!r} has {got} on axis {i}; the model "
                                  f"takes {_shape(spec.shape)}")
        out[spec.name] = np.ascontiguousarray(arr, dtype=spec.dtype)
    return out


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + "]"


def read_sample(graph: TFGraph, sample: Any, feature_names: list[str] | None) -> SampleTable:
    """A feature table for a tabular model; named N-D arrays for anything else."""
    if graph.tabular and not isinstance(sample, Mapping | tuple):
        width = graph.inputs[0].shape[1]
        st = sample_table(sample, feature_names=feature_names, expected_width=width)
        if not st.all_numeric:
            raise SampleError("a Keras/TensorFlow model takes numbers: the sample must be numeric")
        for f in st.features:
            f.dtype = "float32"
        return st
    arrays = _arrays(graph, sample)
    return SampleTable(features=[], table=np.empty((0, 0)), frame=None, tensors=arrays)


def model_inputs(graph: TFGraph, sample: SampleTable) -> Arrays:
    if sample.tensors is not None:
        return sample.tensors
    name = graph.inputs[0].name
    return {name: np.ascontiguousarray(sample.table, dtype=graph.inputs[0].dtype)}


def input_specs(graph: TFGraph, sample: SampleTable) -> list[TensorSpec]:
    if sample.tensors is None:
        s = graph.inputs[0]
        return [TensorSpec(name=s.name, dtype=s.dtype, shape=[None, len(sample.features)],
                           features=sample.names)]
    specs = []
    for s in graph.inputs:
        arr = sample.tensors[s.name]
        axes = {i: ("batch" if i == 0 else f"{s.name}_{i}")
                for i, d in enumerate(s.shape) if d is None}
        specs.append(TensorSpec(name=s.name, dtype=s.dtype, shape=[None, *s.shape[1:]],
                                axes=axes, sample_shape=list(arr.shape)))
    return specs


def decide_outputs(graph: TFGraph, raw: Arrays, options: Mapping[str, Any]) -> tuple[OutputSpec, list[str]]:
    """What the outputs mean: a classifier/regressor when one output of rank <= 2 says so,
    else (or with ``task='tensor'``) raw named tensors."""
    task: str | None = options.get("task")
    classes: list[Label] | None = options.get("classes")
    single = len(graph.outputs) == 1 and raw[graph.outputs[0]].ndim <= 2
    tensors = [TensorSpec(name=n, dtype=dtype_name(raw[n].dtype) if raw[n].dtype.name in _DTYPES
                          else "float32", shape=[None, *raw[n].shape[1:]]) for n in graph.outputs]
    if task == "tensor" or (task is None and not single):
        why = "chosen" if task == "tensor" else (
            f"the model returns {len(graph.outputs)} outputs" if len(graph.outputs) > 1
            else f"the output is {raw[graph.outputs[0]].ndim}-D")
        spec = OutputSpec(task="tensor", postprocess="none", names=list(graph.outputs),
                          tensors=tensors)
        return spec, [f"task='tensor' ({why}): outputs {graph.outputs} are served by name, as they are"]
    if not single:
        raise ConfigError(f"task={task!r} needs one output of shape (n,) or (n, k): use task='tensor'")
    name = graph.outputs[0]
    out = raw[name]
    notes: list[str] = []
    width = 1 if out.ndim == 1 else int(out.shape[1])
    loss = (graph.loss or "").lower().replace(" ", "")
    if task is None and graph.last is None and width == 1 and loss in _REGRESSION_LOSSES:
        task = "regression"
        notes.append(f"task='regression' inferred from the linear final layer and the compiled "
                     f"loss {graph.loss!r}")
    try:
        spec, more = output_spec(out, graph.last, task=task, output=options.get("output"),
                                 classes=classes, threshold=float(options.get("threshold", 0.5)))
    except ConfigError as exc:
        raise ConfigError(exc.message.replace("nn.", "Keras ").replace("not a module", "linear")
                          + ", or task='tensor' to serve the raw output") from exc
    notes += [m.replace("nn.", "Keras ") for m in more]
    spec.names = [name]
    spec.tensors = tensors
    if spec.task == "regression":
        spec.value_output = name
    else:
        spec.probability_output = name
    return spec, notes


def rename_outputs(proto: Any, names: Sequence[str]) -> None:
    """Give the ONNX graph's outputs the model's own names (tf2onnx writes ``Identity:0``)."""
    mapping = {o.name: n for o, n in zip(proto.graph.output, names, strict=True) if o.name != n}
    if not mapping:
        return
    for node in proto.graph.node:
        for i, o in enumerate(node.output):
            if o in mapping:
                node.output[i] = mapping[o]
        for i, o in enumerate(node.input):
            if o in mapping:
                node.input[i] = mapping[o]
    for o in proto.graph.output:
        o.name = mapping.get(o.name, o.name)


def _rename_inputs(proto: Any, graph: TFGraph) -> None:
    mapping = {g: s.name for g, s in zip(graph.graph_names, graph.inputs, strict=False)
               if g != s.name}
    if not mapping:
        return
    for node in proto.graph.node:
        for i, o in enumerate(node.input):
            if o in mapping:
                node.input[i] = mapping[o]
    for i in proto.graph.input:
        i.name = mapping.get(i.name, i.name)


def check_graph_inputs(proto: Any, graph: TFGraph) -> None:
    """The artifact takes the model's inputs by name (Keras's generated ``keras_tensor_N``
    names renamed), with a variable batch axis."""
    _rename_inputs(proto, graph)
    got = sorted(i.name for i in proto.graph.input)
    want = sorted(s.name for s in graph.inputs)
    if got != want:
        raise PackError(f"the exported graph takes inputs {got}, not the model's {want}")
    for i in proto.graph.input:
        dims = i.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            raise PackError(f"the export fixed the batch axis of input {i.name!r} to "
                            f"{dims[0].dim_value}; packserve serves any batch size")


@dataclass
class Timing:
    seconds: float = 0.0


@contextlib.contextmanager
def converting(what: str) -> Iterator[Timing]:
    """Run a converter quietly (its stdout chatter dropped), its errors named by ``what``;
    the yielded :class:`Timing` says how long it took."""
    timing = Timing()
    t0 = time.perf_counter()
    with converter_errors(what), contextlib.redirect_stdout(io.StringIO()):
        yield timing
    timing.seconds = round(time.perf_counter() - t0, 4)


class TFFamily(Family):
    """The Keras and SavedModel families' common part; a subclass describes its model
    (:meth:`describe_model`) and converts it (:meth:`export`, ending in :meth:`written`)."""

    options = OPTIONS
    ARTIFACT = "model.onnx"

    def __init__(self) -> None:
        self._options: Mapping[str, Any] = {}
        self._graph: TFGraph | None = None
        self._spec: tuple[OutputSpec, list[str]] | None = None

    def resolve(self, model: Any) -> tuple[Family, Any]:
        return type(self)(), model  # one instance per pack: it carries that pack's decisions

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        require_tf()
        require_tf2onnx()
        self.check_model(model)
        self._options = options

    def check_model(self, model: Any) -> None:
        """Refuse what this family cannot pack, before any work (default: nothing)."""

    @abstractmethod
    def describe_model(self, model: Any, sample: Any) -> TFGraph:
        """The model's inputs, outputs and native call."""

    @abstractmethod
    def native_failure(self, model: Any) -> str:
        """How a failure of the native model on the sample is introduced."""

    def read_sample(self, model: Any, sample: Any, feature_names: list[str] | None) -> SampleTable:
        self._graph = self.describe_model(model, sample)
        return read_sample(self._graph, sample, feature_names)

    def native(self, model: Any, sample: SampleTable) -> parity.NativeOutput:
        graph = self.graph
        with converter_errors(self.native_failure(model)):
            raw = graph.call(model_inputs(graph, sample))
        if self._spec is None:
            self._spec = decide_outputs(graph, raw, self._options)
        return parity.native_output(self._spec[0], raw)

    @property
    def graph(self) -> TFGraph:
        assert self._graph is not None, "read_sample comes first"
        return self._graph

    @staticmethod
    def opset(job: ExportJob) -> int:
        return int(job.options.get("opset_version", OPSET))

    def written(self, job: ExportJob, proto: Any, *, notes: Sequence[str] = (),
                **fields: Any) -> Export:
        """Check the converted graph's inputs, write it, and describe it (``fields``: the
        :class:`Export` fields that differ between the families)."""
        assert self._spec is not None, "native comes first"
        spec, spec_notes = self._spec
        check_graph_inputs(proto, self.graph)
        opsets = write_onnx(job.staging, proto, self.ARTIFACT)
        return Export(artifact=self.ARTIFACT, inputs=input_specs(self.graph, job.sample),
                      outputs=spec, opsets=opsets, notes=[*spec_notes, *notes], **fields)


__all__ = [
    "EXTRA", "OPSET", "OPTIONS", "TFFamily", "TFGraph", "Timing", "check_graph_inputs",
    "converting", "decide_outputs", "dtype_name", "input_name", "input_specs", "model_inputs", "read_sample",
    "rename_outputs", "require_tf", "require_tf2onnx",
]
