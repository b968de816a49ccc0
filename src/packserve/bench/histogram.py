"""A log-linear bucket latency histogram (HdrHistogram-style, ~0.8% precision).

Recording is O(1) and percentiles are O(buckets), whatever the number of samples, so a
long soak at thousands of requests per second costs a few kilobytes, not a list of every
sample. Values are integer microseconds: below 256 us each value has its own bucket; above,
each power of two is split into 128 linear sub-buckets, so any reported value is within
1/128 of the true one. Histograms from several processes merge exactly (add the counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS  # 128 sub-buckets per power of two
_DIRECT = _SUB * 2  # values below this have one bucket each

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)


def _index(v: int) -> int:
    if v < _DIRECT:
        return v
    shift = v.bit_length() - (_SUB_BITS + 1)
    return _SUB * shift + (v >> shift)


def _bounds(index: int) -> tuple[int, int]:
    """Lowest and highest value that land in bucket ``index``."""
    if index < _DIRECT:
        return index, index
    shift = index // _SUB - 1
    sub = index - _SUB * shift
    return sub << shift, ((sub + 1) << shift) - 1


@dataclass
class Summary:
    """Percentiles in milliseconds, as reported to people and in JSON."""

    count: int
    min_ms: float
    mean_ms: float
    max_ms: float
    percentiles_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min_ms": self.min_ms,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            "percentiles_ms": dict(self.percentiles_ms),
        }


class Histogram:
    """Counts of integer-microsecond values in log-linear buckets."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts: list[int] = []
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value_us: int) -> None:
        v = value_us if value_us > 0 else 0
        i = _index(v)
        counts = self._counts
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += 1
        if self.count == 0 or v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += 1
        self.total += v

    def record_seconds(self, seconds: float) -> None:
        self.record(round(seconds * 1_000_000))

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        if len(other._counts) > len(self._counts):
            self._counts.extend([0] * (len(other._counts) - len(self._counts)))
        for i, c in enumerate(other._counts):
            if c:
                self._counts[i] += c
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def value_at(self, percentile: float) -> int:
        """Value (us) at or below which ``percentile`` % of samples fall (0 if empty).

        Returns the highest value equivalent to the bucket (as HdrHistogram does), clamped
        to the exact recorded min/max, so p100 is the true maximum.
        """
        if self.count == 0:
            return 0
        rank = max(1, -(-self.count * percentile // 100))  # ceil, at least the first sample
        seen = 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                return min(max(_bounds(i)[1], self.min), self.max)
        return self.max

    def summary(self, percentiles: tuple[float, ...] = PERCENTILES) -> Summary:
        pct = {_label(p): self.value_at(p) / 1000.0 for p in percentiles}
        mean = self.total / self.count / 1000.0 if self.count else 0.0
        return Summary(self.count, self.min / 1000.0, mean, self.max / 1000.0, pct)

    def to_dict(self) -> dict[str, Any]:
        """Sparse, JSON-safe form (used to ship histograms between processes)."""
        return {
            "buckets": {str(i): c for i, c in enumerate(self._counts) if c},
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        h = cls()
        buckets = {int(k): int(v) for k, v in data["buckets"].items()}
        if buckets:
            h._counts = [0] * (max(buckets) + 1)
            for i, c in buckets.items():
                h._counts[i] = c
        h.count = int(data["count"])
        h.total = int(data["total"])
        h.min = int(data["min"])
        h.max = int(data["max"])
        return h

    def percentile_curve(self, points: int = 60) -> list[tuple[float, float]]:
        """(percentile, ms) pairs on a log scale of 1/(1-p), for the classic HDR plot."""
        out: list[tuple[float, float]] = []
        if self.count == 0:
            return out
        for k in range(points + 1):
            # from p0 to p99.99 evenly in log10(1/(1-p))
            p = 100.0 * (1.0 - 10 ** (-4.0 * k / points))
            out.append((p, self.value_at(p) / 1000.0))
        return out


def _label(p: float) -> str:
    return f"p{p:g}"


__all__ = ["PERCENTILES", "Histogram", "Summary"]
