"""``run_bench`` and ``soak``: load phases plus the server's resources, judged
(``find_max``, a search over such phases, is :mod:`packserve.bench.ramp`).

This is the library API the CLI and the demo call. It talks HTTP only (never imports the
server): the signature comes from the server's model metadata or from a bundle manifest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packserve.bench.client import Target
from packserve.bench.histogram import Summary
from packserve.bench.inputs import Signature, build_bodies, resolve_signature
from packserve.bench.inputs import images as image_inputs
from packserve.bench.inputs.tensors import image_hw
from packserve.bench.loadgen import Health, LoadSpec, Mode, PhaseResult, phase_health
from packserve.bench.procs import run_distributed
from packserve.bench.resources import MIB, ResourceSampler, ResourceSeries
from packserve.errors import ConfigError

DEFAULT_CONCURRENCY = 8
LEAK_MIN_MIB = 2.0
LEAK_MIN_FRACTION = 0.05
KEEP_UP = 0.95  # open loop: completing less than this share of the offered rate = overload


@dataclass
class BenchResult:
    """One measured load phase: what was asked, what the server did, and caveats."""

    url: str
    model: str | None
    path: str
    signature_source: str
    batch_size: int
    phase: PhaseResult
    health: Health
    resources: ResourceSeries
    notes: list[str] = field(default_factory=list)
    soak: bool = False
    started_at: float = 0.0  # wall-clock time (epoch seconds) the load started; 0 = unknown
    unit: str = "rows"  # what batch_size counts: "rows", or "images" for an image bundle

    @property
    def mode(self) -> str:
        return self.phase.mode

    @property
    def throughput(self) -> float:
        """Successful responses per second over the whole run (including the drain)."""
        return self.phase.ok / self.phase.wall_s if self.phase.wall_s > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.throughput * self.batch_size

    @property
    def images_per_s(self) -> float | None:
        """Images answered per second (image bundles; None otherwise)."""
        return self.rows_per_s if self.unit == "images" else None

    @property
    def error_rate(self) -> float:
        done = self.phase.ok + self.phase.error_count
        return self.phase.error_count / done if done else 0.0

    @property
    def latency(self) -> Summary:
        return self.phase.latency.summary()

    @property
    def generator_limited(self) -> bool:
        return not self.health.ok

    def memory_growth(self) -> dict[str, float] | None:
        g = self.resources.growth()
        if g is None:
            return None
        g = dict(g)
        g["bytes_per_request"] = g["growth_mib"] * MIB / max(self.phase.ok, 1)
        return g

    def leak_suspected(self) -> bool | None:
        """Soak only: memory still growing after warm-up by more than max(2 MiB, 5%)."""
        g = self.resources.growth()
        if not self.soak or g is None:
            return None
        limit = max(LEAK_MIN_MIB, LEAK_MIN_FRACTION * g["first_third_mib"])
        return g["growth_mib"] > limit and g["slope_mib_per_min"] > 0

    def timeline(self) -> list[dict[str, float]]:
        b = self.phase.bucket_s
        rows = []
        for i, h in enumerate(self.phase.timeline):
            rows.append({"t": (i + 1) * b, "ok_per_s": h.count / b,
                         "errors_per_s": self.phase.timeline_errors[i] / b,
                         "p50_ms": h.value_at(50) / 1000.0, "p99_ms": h.value_at(99) / 1000.0})
        return rows

    def to_dict(self) -> dict[str, Any]:
        p = self.phase
        return {
            "url": self.url, "model": self.model, "path": self.path,
            "signature_source": self.signature_source, "mode": p.mode,
            "offered_rate": p.offered_rate if p.mode == "open" else None,
            "concurrency": p.concurrency if p.mode == "closed" else None,
            "batch_size": self.batch_size, "duration_s": p.duration_s, "wall_s": p.wall_s,
            "sent": p.sent, "ok": p.ok, "throughput_rps": self.throughput,
            "rows_per_s": self.rows_per_s, "unit": self.unit,
            "images_per_s": self.images_per_s, "error_rate": self.error_rate,
            "errors": dict(sorted(p.errors.items())), "latency": self.latency.to_dict(),
            "latency_curve": [{"percentile": q, "ms": v}
                              for q, v in p.latency.percentile_curve()],
            "generator": {**self.health.to_dict(), "processes": p.processes,
                          "connections_opened": p.connections_opened,
                          "connection_cap_hit": p.connection_cap_hit},
            "resources": self.resources.to_dict(), "memory_growth": self.memory_growth(),
            "leak_suspected": self.leak_suspected(), "timeline": self.timeline(),
            "notes": self.notes, "started_at": self.started_at or None,
        }


@dataclass
class FindMaxResult:
    """The rate ramp: every step, the best sustainable one and why the ramp stopped."""

    steps: list[BenchResult]
    passed: list[bool]
    reasons: list[str]
    probe: BenchResult | None
    slo_p99_ms: float | None
    max_error_rate: float
    stop_reason: str
    generator_limited: bool

    @property
    def best(self) -> BenchResult | None:
        ok = [s for s, p in zip(self.steps, self.passed, strict=True) if p]
        return max(ok, key=lambda s: s.throughput) if ok else None

    @property
    def max_throughput(self) -> float:
        b = self.best
        return b.throughput if b is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "max_throughput_rps": self.max_throughput,
            "max_offered_rate": best.phase.offered_rate if best else None,
            "slo_p99_ms": self.slo_p99_ms, "max_error_rate": self.max_error_rate,
            "stop_reason": self.stop_reason, "generator_limited": self.generator_limited,
            "probe": self.probe.to_dict() if self.probe else None,
            "steps": [{**s.to_dict(), "passed": p, "verdict": r}
                      for s, p, r in zip(self.steps, self.passed, self.reasons, strict=True)],
        }


ProgressFactory = Callable[[str, float], contextlib.AbstractContextManager[Any]]


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds."""
    t = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if t.endswith(unit) and t[: -len(unit)].strip():
            num = t[: -len(unit)].strip()
            break
    else:
        unit, num = "s", t
    try:
        value = float(num) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30s, 500ms, 2m)") from None
    if value <= 0:
        raise ConfigError(f"duration must be positive: {text!r}")
    return value


def predict_path(model: str | None, batch_size: int) -> str:
    base = f"/models/{model}/predict" if model else "/predict"
    return base + ("/batch" if batch_size > 1 else "")


def _sampler(url: str, pid: int | None, interval_s: float) -> ResourceSampler:
    if pid is not None:
        return ResourceSampler(pid=pid, interval_s=interval_s)
    return ResourceSampler(metrics_url=Target.parse(url).base_url + "/metrics",
                           interval_s=interval_s)


@contextlib.contextmanager
def _no_progress(title: str, duration: float) -> Iterator[None]:
    yield None


def run_bench(
    url: str,
    *,
    model: str | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    duration: float = 10.0,
    batch_size: int = 1,
    bundle: str | Path | None = None,
    signature: Signature | None = None,
    pid: int | None = None,
    processes: int = 1,
    timeout: float = 10.0,
    max_connections: int = 512,
    sample_interval: float | None = None,
    soak: bool = False,
    seed: int = 0,
    images: str | Path | bool | None = None,
    progress: ProgressFactory | None = None,
) -> BenchResult:
    """Load ``url`` for ``duration`` seconds, open loop at ``rate`` or closed at ``concurrency``.

    Latency in open loop is measured from each request's *scheduled* send time. Without
    either, a closed loop at concurrency 8 is used. ``images``: a directory of image files to
    send, True for generated ones, False for JSON bodies; None (default) sends generated
    images to an image bundle and JSON to anything else.
    """
    if rate is not None and concurrency is not None:
        raise ConfigError("give --rate (open loop) or --concurrency (closed loop), not both")
    if rate is not None and rate <= 0:
        raise ConfigError("--rate must be positive")
    if concurrency is not None and concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if duration <= 0:
        raise ConfigError("--duration must be positive")
    if processes < 1:
        raise ConfigError("--processes must be at least 1")
    target = Target.parse(url)
    sig = signature or resolve_signature(url, model=model, bundle=bundle)
    name = model if model is not None else None
    path = predict_path(name, batch_size)
    image_set = _image_set(sig, images, seed)
    if image_set is not None:
        pairs = image_inputs.bodies(image_set, batch_size=batch_size, seed=seed)
        requests = tuple(target.request("POST", path, b, ct) for b, ct in pairs)
        source = f"{sig.source}; {image_set.source}"
    else:
        bodies = build_bodies(sig, batch_size=batch_size, seed=seed)
        requests = tuple(target.request("POST", path, b) for b in bodies)
        source = sig.source
    mode: Mode = "open" if rate is not None else "closed"
    spec = LoadSpec(target.base_url, requests, mode, float(duration), rate=rate or 0.0,
                    concurrency=concurrency or (0 if rate else DEFAULT_CONCURRENCY),
                    timeout_s=timeout, max_connections=max_connections,
                    bucket_s=0.25 if duration < 5 else max(1.0, duration / 600))
    interval = sample_interval or (max(0.25, duration / 240) if soak else 0.5)
    sampler = _sampler(url, pid, interval)
    title = (f"{'soak' if soak else 'bench'} {target.base_url}{path} "
             + (f"@ {rate:g} req/s" if rate else f"x{spec.concurrency} concurrent"))
    factory = progress or _no_progress
    started_at = time.time()
    with factory(title, duration) as sink:
        sampler.start()
        try:
            phase = run_distributed(spec, processes, sink)
        finally:
            series = sampler.stop()
    result = BenchResult(target.base_url, name, path, source, batch_size, phase,
                         phase_health(phase), series, soak=soak, started_at=started_at,
                         unit="images" if image_set is not None else "rows")
    _annotate(result)
    return result


def _image_set(sig: Signature, images: str | Path | bool | None,
               seed: int) -> image_inputs.ImageSet | None:
    if images is None:
        images = sig.image_size is not None
    if images is False:
        return None
    if images is True:
        return image_inputs.generated(image_size(sig), seed=seed)
    return image_inputs.from_dir(images)


def image_size(sig: Signature) -> tuple[int, int]:
    """(height, width) of generated images: what the bundle's preprocessing produces, else an
    image-like tensor input's ([C, H, W] or [H, W, C], C in 1..4), else 224x224."""
    return sig.image_size or image_hw(sig.tensors) or image_inputs.DEFAULT_SIZE


def _annotate(r: BenchResult) -> None:
    p = r.phase
    if not r.health.ok:
        r.notes.append(
            "the load generator could not keep up (" + "; ".join(r.health.reasons) + "): "
            "throughput and latency may be the generator's limit, not the server's; use "
            "--processes N, or run the generator on its own (quieter) machine"
        )
    r.notes.extend(r.health.warnings)
    if p.connection_cap_hit:
        r.notes.append(f"all {p.connections_opened} connections were busy at times: requests "
                       "queued in the client (counted in latency, as an open system would)")
    if p.mode == "open" and r.throughput < KEEP_UP * p.offered_rate and r.health.ok:
        r.notes.append(f"the server completed {r.throughput:.0f} req/s of {p.offered_rate:g} "
                       "offered: it is overloaded at this rate (latency includes the queue)")
    if r.resources.note:
        r.notes.append(r.resources.note)
    leak = r.leak_suspected()
    g = r.memory_growth()
    if leak and g is not None:
        r.notes.append(f"memory leak suspected: RSS grew {g['growth_mib']:.1f} MiB after warm-up "
                       f"({g['slope_mib_per_min']:.1f} MiB/min, ~{g['bytes_per_request']:.0f} "
                       "bytes per request)")


def soak(url: str, duration: float, **kwargs: Any) -> BenchResult:
    """Sustained load with memory sampled over time; flags a leak (see ``leak_suspected``)."""
    return run_bench(url, duration=duration, soak=True, **kwargs)


__all__ = [
    "BenchResult",
    "FindMaxResult",
    "image_size",
    "parse_duration",
    "predict_path",
    "resolve_signature",
    "run_bench",
    "soak",
]
