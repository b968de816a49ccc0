"""Bring your own ONNX: an existing ``model.onnx`` (from any framework) -> tensor bundle.

Refused before anything runs: a file ``onnx.checker`` rejects (full check, which includes
strict shape inference), external-data paths that leave the model's directory, and operator
domains ONNX Runtime cannot run without a custom-op library. Then the graph must run on
the sample, twice with equal results (deterministic), and with ``expected`` (outputs saved
by the framework that made the file) match them within ``rtol x max(1, max|expected|)``.
Outputs are served as named tensors, or, given ``task``, as a classifier / regressor.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec
from packserve.errors import ConfigError, PackError, SampleError
from packserve.pack.build import Export
from packserve.pack.family import ExportJob, Family, declared_opsets, dist_version
from packserve.pack.onnx_model import OnnxModel, load_arrays
from packserve.pack.parity import NativeOutput
from packserve.pack.signature import SampleTable

ORT_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})
RTOL = 1e-4
_ELEM = {1: "float32", 2: "uint8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
_TASKS = ("binary", "multiclass", "regression", "tensor")


def _external_data(proto: Any, root: Path) -> list[str]:
    """Every external-data file the graph names, refused if it escapes ``root``."""
    from onnx.external_data_helper import _get_all_tensors

    files: list[str] = []
    for t in _get_all_tensors(proto):
        if t.data_location != 1:  # EXTERNAL
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        p = PurePosixPath(loc.replace("\\", "/"))
        resolved = (root / loc).resolve()
        if (not loc or p.is_absolute() or ".." in p.parts or ":" in loc
                or not resolved.is_relative_to(root.resolve())):
            raise PackError(f"tensor {t.name!r} keeps its data at {loc!r}, outside the model's "
                            "directory: refused (a bundle holds only its own files)")
        if not resolved.is_file():
            raise PackError(f"tensor {t.name!r} names external data {loc!r}, which is missing")
        if loc not in files:
            files.append(loc)
    return files


def _spec(vi: Any, what: str) -> TensorSpec:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        kind = vi.type.WhichOneof("value")
        hint = " (skl2onnx's ZipMap: convert with options={id(model): {'zipmap': False}})" \
            if kind in ("sequence_type", "map_type") else ""
        raise PackError(f"{what} {vi.name!r} is a {kind}, not a tensor{hint}")
    dtype = _ELEM.get(tt.elem_type)
    if dtype is None:
        raise PackError(f"{what} {vi.name!r} has element type {tt.elem_type}, which packserve "
                        f"does not serve (supported: {sorted(set(_ELEM.values()))})")
    dims: list[int | None] = []
    axes: dict[int, str] = {}
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and i > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(None)
            axes[i] = d.dim_param or ("batch" if i == 0 else f"axis{i}")
        if i == 0 and d.HasField("dim_value") and what == "input":
            raise PackError(f"input {vi.name!r} has a fixed batch axis ({d.dim_value}): "
                            "packserve serves batches; export it with a dynamic first axis")
    if not dims:
        raise PackError(f"{what} {vi.name!r} has no batch axis (a scalar)")
    return TensorSpec(name=vi.name, dtype=dtype, shape=dims, axes=axes)  # type: ignore[arg-type]


class OnnxFamily(Family):
    title = "ONNX files"
    options: ClassVar[frozenset[str] | None] = frozenset(
        {"expected", "task", "output", "classes", "threshold", "probability_output"})
    step = "checking the ONNX graph"

    def check(self, model: OnnxModel, options: Mapping[str, Any]) -> None:
        try:
            import onnx
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise PackError("checking an ONNX file needs the 'onnx' package") from exc
        path = model.path
        if not path.is_file():
            raise PackError(f"model file {path.name!r} does not exist")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise PackError(f"{path.name!r} is not an ONNX model: {type(exc).__name__}") from exc
        files = _external_data(proto, path.parent)
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PackError(f"{path.name!r} fails onnx.checker (full check, strict shape "
                            f"inference): {first.replace(str(path.parent), '<dir>')}") from exc
        local = {f.domain for f in proto.functions}
        for node in proto.graph.node:
            if node.domain not in ORT_DOMAINS and node.domain not in local:
                raise PackError(f"node {node.name or node.op_type!r} uses operator domain "
                                f"{node.domain!r} ({node.op_type}), which ONNX Runtime cannot run "
                                "without a custom-op library: refused")
        task = options.get("task")
        if task is not None and task not in _TASKS:
            raise ConfigError(f"task must be one of {list(_TASKS)}, got {task!r}")
        inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
        model.info = {
            "inputs": [_spec(i, "input") for i in inputs],
            "outputs": [_spec(o, "output") for o in proto.graph.output],
            "opsets": declared_opsets(proto), "external": files,
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "ir_version": int(proto.ir_version), "options": dict(options),
        }

    def read_sample(self, model: OnnxModel, sample: Any, feature_names: list[str] | None) -> SampleTable:
        specs: list[TensorSpec] = model.info["inputs"]
        if isinstance(sample, str | Path):
            sample = load_arrays(sample)
        if not isinstance(sample, Mapping):
            if len(specs) != 1:
                raise SampleError(f"the graph takes {len(specs)} inputs {[s.name for s in specs]}: "
                                  "give the sample as a mapping / .npz keyed by input name")
            sample = {specs[0].name: sample}
        if len(sample) == 1 and len(specs) == 1 and specs[0].name not in sample:
            sample = {specs[0].name: next(iter(sample.values()))}  # an .npy, or a renamed key
        names = [s.name for s in specs]
        if set(sample) != set(names):
            raise SampleError(f"sample holds {sorted(sample)}; the graph's inputs are {names}")
        tensors = {}
        for s in specs:
            arr = np.asarray(sample[s.name])
            if arr.ndim != len(s.shape):
                raise SampleError(f"sample input {s.name!r} is {arr.ndim}-D; the graph takes "
                                  f"{len(s.shape)}-D")
            for i, d in enumerate(s.shape):
                if d is not None and arr.shape[i] != d:
                    raise SampleError(f"sample input {s.name!r}: axis {i} has {arr.shape[i]}, "
                                      f"the graph takes {d}")
            if arr.dtype.kind == "f" and s.dtype not in ("float32", "float64", "float16"):
                raise SampleError(f"sample input {s.name!r} holds floats; the graph takes {s.dtype}")
            tensors[s.name] = np.ascontiguousarray(arr.astype(s.dtype))
            s.sample_shape = list(arr.shape)
        return SampleTable(features=[], table=np.empty((0, 0)), frame=None, tensors=tensors)

    def _session(self, model: OnnxModel) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(str(model.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).splitlines()[0][:300].replace(str(model.path.parent), "<dir>")
            raise PackError(f"ONNX Runtime cannot load {model.path.name!r}: {first}") from exc

    def native(self, model: OnnxModel, sample: SampleTable) -> NativeOutput:
        assert sample.tensors is not None
        sess = self._session(model)
        names = [o.name for o in model.info["outputs"]]
        try:
            first = dict(zip(names, sess.run(names, sample.tensors), strict=True))
            again = dict(zip(names, sess.run(names, sample.tensors), strict=True))
        except Exception as exc:
            raise PackError(f"the graph fails on the sample: {str(exc).splitlines()[0][:300]}") from exc
        for n in names:
            if not np.array_equal(first[n], again[n], equal_nan=first[n].dtype.kind == "f"):
                raise PackError(f"the graph is not deterministic: two runs on the sample differ in "
                                f"output {n!r}; packserve will not bundle it")
        expected = model.info["options"].get("expected")
        ref = first
        if expected is not None:
            exp = load_arrays(expected) if isinstance(expected, str | Path) else dict(expected)
            missing = [n for n in names if n not in exp]
            if missing:
                raise SampleError(f"expected outputs lack {missing}; the graph's outputs are {names}")
            ref = {n: np.asarray(exp[n]) for n in names}
            for n in names:
                if ref[n].shape != first[n].shape:
                    raise SampleError(f"expected output {n!r} has shape {list(ref[n].shape)}; the "
                                      f"graph gives {list(first[n].shape)} on the sample")
        model.info["reference"] = ref
        spec = self._outputs(model)
        if spec.task == "tensor":
            return NativeOutput(outputs=ref)
        from packserve.bundle import Manifest, ParityReport
        from packserve.runtime.postprocess import postprocess

        m = Manifest(name="x", task=spec.task, signature="tensor", inputs=model.info["inputs"],
                     outputs=spec, framework="onnx", framework_version="", model_type="",
                     parity=ParityReport(rows=0, tolerance=0.0, passed=False))
        pred = postprocess(ref, m)
        if spec.task == "regression":
            return NativeOutput(values=pred.values)
        return NativeOutput(labels=pred.labels, probabilities=pred.probabilities)

    def _outputs(self, model: OnnxModel) -> OutputSpec:
        opts = model.info["options"]
        outs: list[TensorSpec] = model.info["outputs"]
        names = [o.name for o in outs]
        task = opts.get("task") or "tensor"
        if task == "tensor":
            return OutputSpec(task="tensor", postprocess="none", names=names, tensors=outs)
        floats = [o.name for o in outs if o.dtype.startswith("float")]
        chosen = opts.get("probability_output") or (floats[0] if len(floats) == 1 else None)
        if chosen is None or chosen not in names:
            raise ConfigError(f"task={task!r}: name the output to read with probability_output= "
                              f"(one of {floats})")
        if task == "regression":
            return OutputSpec(task="regression", postprocess="identity", value_output=chosen,
                              names=names, tensors=outs)
        output = opts.get("output") or "probability"
        ref = model.info["reference"][chosen]
        width = int(ref.reshape(len(ref), -1).shape[1])
        classes = list(opts.get("classes") or range(max(width, 2)))
        if len(classes) != max(width, 2):
            raise ConfigError(f"classes= needs {max(width, 2)} labels, got {len(classes)}")
        if width == 1:
            post = "sigmoid_probability" if output == "probability" else "sigmoid_logit"
        else:
            post = "probabilities" if output == "probability" else "softmax"
        return OutputSpec(task=task, postprocess=post, probability_output=chosen, classes=classes,
                          threshold=float(opts.get("threshold", 0.5)), names=names, tensors=outs)

    def export(self, job: ExportJob) -> Export:
        import shutil

        model: OnnxModel = job.model
        shutil.copyfile(model.path, job.staging / "model.onnx")
        for rel in model.info["external"]:
            dest = job.staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model.path.parent / rel, dest)
        spec = self._outputs(model)
        return Export(
            artifact="model.onnx", inputs=model.info["inputs"], outputs=spec, framework="onnx",
            framework_version=dist_version("onnx"), model_type=f"onnx file {model.path.name}",
            converters={"onnx": dist_version("onnx"), "onnxruntime": dist_version("onnxruntime")},
            opsets=model.info["opsets"],
            export={"source": "user ONNX file", "producer": model.info["producer"],
                    "ir_version": model.info["ir_version"], "checker": "onnx.checker full_check",
                    "external_data": model.info["external"],
                    "parity_reference": "expected outputs given" if job.options.get("expected")
                    is not None else "the graph's own run on the sample (determinism only)"},
            proba_tol=RTOL, reg_rel_tol=RTOL,
            notes=[] if job.options.get("expected") is not None else [
                "no expected outputs were given: parity is the graph against itself (it runs and "
                "is deterministic); pass expected= to prove it matches the framework it came from"],
        )


FAMILY = OnnxFamily()
