"""Dynamic request batching: merge concurrent requests for one model into one model call.

``batcher`` holds the algorithm (one ``Batcher`` per model; its queue state, expiry,
disconnect sweep and drain/close are in ``backlog``), ``policy`` the wait rule and the
batch cost fit it rests on, ``execute`` the merged call, ``observe``/``metrics`` what it
reports, and ``wiring`` how the server attaches batchers to the registry and to HTTP requests.
Callers outside this folder import from here.
"""

from __future__ import annotations

from packserve.serve.batching.batcher import Batcher
from packserve.serve.batching.metrics import BatchMetrics, ModelBatchObserver
from packserve.serve.batching.observe import BatcherStats, BatchObserver, NullObserver
from packserve.serve.batching.policy import BatchCostFit, WaitPolicy
from packserve.serve.batching.types import WATCH_AFTER_S, ClientGone, DrainReport, Probe, client_probe
from packserve.serve.batching.wiring import (
    BatchConfig,
    Batchers,
    install_batching,
    resolve_config,
)

__all__ = [
    "WATCH_AFTER_S",
    "BatchConfig",
    "BatchCostFit",
    "BatchMetrics",
    "BatchObserver",
    "Batcher",
    "BatcherStats",
    "Batchers",
    "ClientGone",
    "DrainReport",
    "ModelBatchObserver",
    "NullObserver",
    "Probe",
    "WaitPolicy",
    "client_probe",
    "install_batching",
    "resolve_config",
]
