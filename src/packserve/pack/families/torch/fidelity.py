"""Prove that an exported torch artifact computes what the eager (eval-mode) model computes.

The sample alone is not enough: a trace of ``if x.sum() > 0`` is exact on the sample it
was traced with and wrong on every input that takes the other branch, and a shape frozen
into a trace only shows at another batch size. So the artifact is compared with the eager
model on *probes*: the sample, batch sizes 1 / 7 / 64, and value ranges chosen to flip
typical data-dependent branches (sign, magnitude, zeros, far outside the sample's range).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from packserve.errors import PackError
from packserve.pack.families.torch.export import require_torch

ATOL = 1e-5
RTOL = 1e-5
DETERMINISM_RTOL = 1e-7
MAX_SAMPLE_PROBE_ROWS = 1024
BATCH_SIZES = (1, 7, 64)
RANDOM_OPS = frozenset(
    {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Bernoulli",
     "Multinomial"}
)


@dataclass(frozen=True)
class Probe:
    name: str
    x: np.ndarray  # (n, k) float64
    why: str


def make_probes(table: np.ndarray, *, seed: int = 0) -> list[Probe]:
    """Deterministic probe inputs derived from the sample (same probes on every pack)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(table, dtype=np.float64)
    n, k = x.shape
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    absmax = max(float(np.abs(x).max()), 1.0)
    rows64 = x[rng.integers(0, n, 64)]
    probes = [
        Probe("sample", x[:MAX_SAMPLE_PROBE_ROWS], "the sample given to pack"),
        Probe("batch_1", x[:1], "batch size 1"),
        Probe("batch_7", x[rng.integers(0, n, 7)] + rng.normal(0.0, 0.1, (7, k)) * sd,
              "batch size 7: jittered sample rows"),
        Probe("batch_64", rng.normal(mu, sd, (64, k)), "batch size 64: normal fitted to the sample"),
        Probe("negated", -rows64, "sign flipped: reverses branches on sums and signs"),
        Probe("all_positive", np.abs(rows64), "every value >= 0"),
        Probe("all_negative", -np.abs(rows64), "every value <= 0"),
        Probe("scaled_x10", rows64 * 10.0, "large magnitudes: branches on norms / thresholds"),
        Probe("scaled_x0.01", rows64 * 0.01, "small magnitudes"),
        Probe("zeros", np.zeros((7, k)), "all zeros"),
        Probe("wide_uniform", rng.uniform(-3.0 * absmax, 3.0 * absmax, (64, k)),
              "uniform, three times wider than the sample's range"),
    ]
    with np.errstate(over="ignore"):
        return [p for p in probes if np.isfinite(p.x.astype(np.float32)).all()]


def as_array(out: Any, model_name: str) -> np.ndarray:
    torch = require_torch()
    if not isinstance(out, torch.Tensor):
        raise PackError(
            f"{model_name}.forward returned {type(out).__name__}; packserve packs models whose "
            "forward(x) returns one tensor (wrap the model to select the output)"
        )
    arr: np.ndarray = out.detach().cpu().numpy()
    return arr


def run_eager(model: Any, x: np.ndarray, dtype: Any) -> np.ndarray:
    """Run the eager model (already in eval mode) without autograd."""
    torch = require_torch()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)))
    return as_array(out, type(model).__name__)


def eager_on_probes(model: Any, probes: list[Probe], dtype: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    """Eager outputs per probe; a probe the eager model rejects (e.g. a range check in
    forward) is skipped and named, except the sample, which must work."""
    out: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for p in probes:
        try:
            out[p.name] = run_eager(model, p.x, dtype)
        except PackError:
            raise
        except Exception as exc:
            if p.name == "sample":
                raise
            skipped.append(f"{p.name} ({type(exc).__name__})")
    return out, skipped


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, treating NaN==NaN and equal infinities as agreement; shape mismatch = inf."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        if a.size != b.size:
            return float("inf")
        b = b.reshape(a.shape)
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    agree = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    d[agree] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max())


def tolerance(reference: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> float:
    finite = np.abs(reference[np.isfinite(reference)])
    scale = float(finite.max()) if finite.size else 0.0
    return atol + rtol * scale


def check_determinism(model: Any, probes: list[Probe], dtype: Any) -> dict[str, Any]:
    """Two eager runs on the same input must agree, or the model is refused."""
    worst = 0.0
    for p in probes:
        a = run_eager(model, p.x, dtype)
        b = run_eager(model, p.x, dtype)
        d = max_abs_diff(a, b)
        tol = DETERMINISM_RTOL * max(1.0, tolerance(a, 0.0, 1.0))
        if d > tol:
            raise PackError(
                f"{type(model).__name__} is not deterministic in eval mode: two runs on the same "
                f"input ({p.why}) differ by max |Δ| = {d:.3g}. Something in forward() is random "
                "even in eval mode (e.g. F.dropout(..., training=True), torch.rand*, sampling); "
                "packserve will not bundle a model whose predictions change from call to call"
            )
        worst = max(worst, d)
    return {"check": "determinism", "runs": 2, "inputs": [p.name for p in probes],
            "max_abs_diff": worst, "passed": True}


def compare_probes(
    eager: dict[str, np.ndarray],
    run_artifact: Callable[[np.ndarray], np.ndarray],
    probes: list[Probe],
    runtime: str,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> list[dict[str, Any]]:
    """One ParityReport.checks entry per probe: max |Δ| between artifact and eager."""
    checks: list[dict[str, Any]] = []
    for p in probes:
        ref = eager[p.name]
        tol = tolerance(ref, atol, rtol)
        entry: dict[str, Any] = {
            "check": "fidelity", "probe": p.name, "rows": int(p.x.shape[0]), "runtime": runtime,
            "tolerance": tol,
        }
        try:
            got = run_artifact(p.x)
        except Exception as exc:  # an artifact that crashes on a batch size is unfaithful too
            entry.update(max_abs_diff=float("inf"), passed=False,
                         error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            checks.append(entry)
            continue
        d = max_abs_diff(ref, got)
        entry.update(max_abs_diff=d, passed=bool(d <= tol))
        checks.append(entry)
    return checks


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in checks if not c.get("passed", True)]


def describe(bad: list[dict[str, Any]], probes: list[Probe]) -> str:
    why = {p.name: p.why for p in probes}
    parts = []
    for c in bad[:4]:
        what = c.get("error") or f"max |Δ| = {c['max_abs_diff']:.3g} > {c['tolerance']:.3g}"
        parts.append(f"{c['probe']} ({why.get(c['probe'], '')}, {c['rows']} rows): {what}")
    more = f"; and {len(bad) - 4} more" if len(bad) > 4 else ""
    return "; ".join(parts) + more


def summary(checks: list[dict[str, Any]]) -> dict[str, Any]:
    fid = [c for c in checks if c.get("check") == "fidelity"]
    return {
        "probes": len({c["probe"] for c in fid}),
        "batch_sizes": sorted({c["rows"] for c in fid}),
        "runtimes": sorted({c["runtime"] for c in fid}),
        "max_abs_diff": max((c["max_abs_diff"] for c in fid), default=0.0),
        "passed": all(c["passed"] for c in fid),
    }


# --- ONNX graph inspection -------------------------------------------------------------------


def _constant_values(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values: dict[str, Any] = {}
    for init in graph.initializer:
        if not init.external_data:
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t") and not attr.t.external_data:
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _graphs(model: Any) -> list[Any]:
    todo = [model.graph] + [f for f in model.functions]
    out = []
    while todo:
        g = todo.pop()
        out.append(g)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    todo.append(attr.g)
                todo.extend(attr.graphs)
    return out


def training_nodes(model: Any) -> list[str]:
    """Nodes of an ONNX ModelProto that would behave as in training (or randomly) at inference.

    ONNX Runtime's default graph optimizer silently *removes* Dropout nodes, so comparing
    outputs with optimizations on cannot see them: the graph itself is inspected.
    """
    found: list[str] = []
    for g in _graphs(model):
        consts = _constant_values(g) if hasattr(g, "initializer") else {}
        for node in g.node:
            label = f"{node.op_type} {node.name!r}"
            if node.op_type == "Dropout" and len(node.input) >= 3 and node.input[2]:
                value = consts.get(node.input[2])
                if value is None or bool(np.asarray(value).reshape(-1)[0]):
                    found.append(f"{label} (training_mode={'runtime input' if value is None else True})")
            elif node.op_type == "BatchNormalization":
                if any(a.name == "training_mode" and a.i == 1 for a in node.attribute):
                    found.append(f"{label} (training_mode=1)")
            elif node.op_type in RANDOM_OPS:
                found.append(f"{label} (random)")
    return found


__all__ = [
    "ATOL",
    "BATCH_SIZES",
    "RTOL",
    "Probe",
    "check_determinism",
    "compare_probes",
    "describe",
    "eager_on_probes",
    "failed",
    "make_probes",
    "max_abs_diff",
    "run_eager",
    "summary",
    "training_nodes",
]
