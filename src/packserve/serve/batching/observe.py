"""What the batcher reports: metrics hooks (a protocol the serve layer implements) and the
counters it keeps itself for tests and health output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BatchObserver", "BatcherStats", "NullObserver"]


class BatchObserver(Protocol):
    """Metrics hooks. Called on the event loop; implementations must be cheap."""

    def batch(self, rows: int, requests: int, compute_s: float) -> None: ...
    def immediate(self, rows: int, compute_s: float) -> None:
        """A request run at once on the idle fast path: a batch of one, zero queue wait."""
    def queue_wait(self, seconds: float) -> None: ...
    def done(self, seconds: float) -> None:
        """One queued request answered: its time in the batcher, submit -> result (queue
        wait, its batch's compute and the hops back to the loop)."""
    def rejected(self, reason: str) -> None: ...
    def expired(self) -> None: ...
    def cancelled(self) -> None: ...
    def failed(self, requests: int) -> None: ...


class NullObserver:
    def batch(self, rows: int, requests: int, compute_s: float) -> None:
        pass

    def immediate(self, rows: int, compute_s: float) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def done(self, seconds: float) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def expired(self) -> None:
        pass

    def cancelled(self) -> None:
        pass

    def failed(self, requests: int) -> None:
        pass


@dataclass(slots=True)
class BatcherStats:
    """Counters kept by the batcher itself (tests, health output)."""

    completed: int = 0
    batches: int = 0
    rows: int = 0
    max_batch_rows: int = 0
    rejected: int = 0
    expired: int = 0
    cancelled: int = 0
    failed: int = 0
