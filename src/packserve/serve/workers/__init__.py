"""``packserve serve --workers N``: one supervisor, N server processes on one shared socket.

``supervisor`` binds the socket, starts and restarts the workers (it imports no web stack and
loads no model); ``metrics`` merges the workers' Prometheus values into one scrape.
"""

from __future__ import annotations

from packserve.serve.workers.metrics import (
    MULTIPROC_ENV,
    publish_collected,
    publish_gauges,
    render_all_workers,
)
from packserve.serve.workers.supervisor import Supervisor, bind_socket, run_workers, worker_main

__all__ = [
    "MULTIPROC_ENV",
    "Supervisor",
    "bind_socket",
    "publish_collected",
    "publish_gauges",
    "render_all_workers",
    "run_workers",
    "worker_main",
]
