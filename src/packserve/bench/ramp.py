"""``find_max``: ramp the open-loop rate until the server (or the generator) gives way.

Each step is one :func:`~packserve.bench.runner.run_bench` phase at a fixed offered rate,
judged by :func:`_judge`; after the first failing step the ramp bisects towards the last
sustained one. Kept apart from ``runner`` because it is a search *over* phases, not a phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packserve.bench.inputs import Signature, resolve_signature
from packserve.bench.runner import (
    KEEP_UP,
    BenchResult,
    FindMaxResult,
    ProgressFactory,
    run_bench,
)

FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
GROWTH = 1.25  # past the last fraction, each step offers this much more
Failure = tuple[float, BenchResult, str]  # a failing step: offered rate, result, verdict


def _rate(start_rate: float, i: int) -> float:
    """The i-th step's offered rate: a fraction of the estimate, then x1.25 per step."""
    rates = [round(start_rate * f, 1) for f in FRACTIONS]
    return rates[i] if i < len(rates) else round(rates[-1] * GROWTH ** (i - len(rates) + 1), 1)


@dataclass
class _Ramp:
    """The steps run so far, each judged; runs one more on :meth:`step`."""

    url: str
    step_duration: float
    slo_p99_ms: float | None
    max_error_rate: float
    common: dict[str, Any]
    steps: list[BenchResult] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def step(self, rate: float) -> tuple[BenchResult, bool, str]:
        r = run_bench(self.url, rate=rate, duration=self.step_duration, **self.common)
        if r.generator_limited:  # a noisy neighbour, or the real limit: try once more
            time.sleep(0.5)
            r = run_bench(self.url, rate=rate, duration=self.step_duration, **self.common)
        ok, why = _judge(r, self.slo_p99_ms, self.max_error_rate)
        self.steps.append(r)
        self.passed.append(ok)
        self.reasons.append(why)
        time.sleep(0.2)  # let the server drain between steps
        return r, ok, why

    def bisect(self, last_ok: float, fail: Failure, refine: int) -> Failure:
        """Up to ``refine`` steps between the last sustained rate and the failing one (none
        past a generator limit); returns the lowest failing step found."""
        for _ in range(0 if fail[1].generator_limited else refine):
            mid = round((last_ok + fail[0]) / 2, 1)
            if fail[0] - last_ok < 0.04 * fail[0]:
                break
            r, ok, why = self.step(mid)
            if ok:
                last_ok = mid
                continue
            fail = (mid, r, why)
            if r.generator_limited:
                break
        return fail

    def result(self, probe: BenchResult | None, stop_reason: str,
               fail: Failure | None) -> FindMaxResult:
        order = sorted(range(len(self.steps)), key=lambda k: self.steps[k].phase.offered_rate)
        return FindMaxResult(
            [self.steps[k] for k in order], [self.passed[k] for k in order],
            [self.reasons[k] for k in order], probe, self.slo_p99_ms, self.max_error_rate,
            stop_reason, fail is not None and fail[1].generator_limited,
        )


def _stop_reason(fail: Failure) -> str:
    fail_rate, fail_r, fail_why = fail
    detail = ("; ".join(fail_r.health.reasons) + "; the server's limit is at least the "
              "best sustained step") if fail_r.generator_limited else fail_why
    return f"at {fail_rate:g} req/s offered: {detail}"


def find_max(
    url: str,
    *,
    slo_p99_ms: float | None = None,
    max_error_rate: float = 0.01,
    step_duration: float = 5.0,
    start_rate: float | None = None,
    probe_concurrency: int = 16,
    max_steps: int = 14,
    refine: int = 2,
    model: str | None = None,
    bundle: str | Path | None = None,
    signature: Signature | None = None,
    progress: ProgressFactory | None = None,
    **kwargs: Any,
) -> FindMaxResult:
    """Ramp the open-loop rate until errors, the p99 SLO, or falling behind the offered rate.

    Steps are fractions of a capacity estimate (a short closed-loop probe at
    ``probe_concurrency``, or ``start_rate``): 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0,
    then x1.25 each; after the first failing step, ``refine`` more steps bisect between it and
    the last sustained one. A step passes when the error rate is within ``max_error_rate``, p99 is
    within the SLO, the server completed at least 95% of the offered rate, and the generator
    kept up. Steps are returned in order of offered rate.
    """
    sig = signature or resolve_signature(url, model=model, bundle=bundle)
    common = dict(model=model, signature=sig, progress=progress, **kwargs)
    probe: BenchResult | None = None
    if start_rate is None:
        probe = run_bench(url, concurrency=probe_concurrency,
                          duration=max(1.0, min(3.0, step_duration / 2)), **common)
        start_rate = max(probe.throughput, 1.0)
    ramp = _Ramp(url, step_duration, slo_p99_ms, max_error_rate, common)
    last_ok: float | None = None
    for i in range(max_steps):
        rate = _rate(start_rate, i)
        r, ok, why = ramp.step(rate)
        if ok:
            last_ok = rate
            continue
        fail: Failure = (rate, r, why)
        if last_ok is not None:  # bisect towards the last sustained rate
            fail = ramp.bisect(last_ok, fail, refine)
        return ramp.result(probe, _stop_reason(fail), fail)
    stop = f"every step up to {max_steps} passed (raise --rate to ramp further)"
    return ramp.result(probe, stop, None)


def _judge(r: BenchResult, slo_p99_ms: float | None, max_error_rate: float) -> tuple[bool, str]:
    if r.generator_limited:
        return False, "generator could not keep up"
    if r.error_rate > max_error_rate:
        return False, f"errors {r.error_rate:.1%} > {max_error_rate:.1%}"
    p99 = r.latency.percentiles_ms.get("p99", 0.0)
    if slo_p99_ms is not None and p99 > slo_p99_ms:
        return False, f"p99 {p99:.1f} ms > SLO {slo_p99_ms:g} ms"
    if r.throughput < KEEP_UP * r.phase.offered_rate:
        return False, "completed < 95% of offered (queue growing)"
    return True, "sustained"


__all__ = ["find_max"]
