"""What every engine's server process shares: logging, the listening socket, the start of a
drain, and the periodic duties of a ``--workers`` worker.

Kept free of any engine import, so that the supervisor (which imports no web stack) and
both engines use the same pieces.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from packserve.serve.settings import ServeSettings

if TYPE_CHECKING:
    from packserve.serve.state import ServerState

log = logging.getLogger("packserve.serve")

#: the kernel's queue of connections not yet accepted (per listening socket): a connection
#: storm's SYNs wait, rather than being dropped and retried 1 s, 3 s later
BACKLOG = 4096


def configure_logging(level: str) -> None:
    """packserve's own loggers print next to the engine's (which configures only its own)."""
    logger = logging.getLogger("packserve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logging.getLogger("packserve.access").propagate = False


def bind_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """Bind and listen once (a busy port is a clear config error); workers inherit the fd."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from packserve.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def start_drain(state: ServerState, settings: ServeSettings, sig: int) -> None:
    """Step 1 of every drain: readiness 503 and ``Connection: close`` from now on; the
    batchers stop taking work. The engine then waits ``shutdown_grace_s`` and stops listening."""
    log.info("received %s: draining", signal.Signals(sig).name)
    state.draining = True
    for hook in state.on_drain:
        hook(settings.drain_timeout_s)


class WorkerDuties:
    """A ``--workers`` worker's periodic jobs, called by its engine every 0.1 s (``tick``) and
    once at exit (``final``): publish this worker's metrics to the shared folder, and drain
    if the supervisor vanished (a SIGKILLed supervisor leaves no orphans)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.parent = os.getppid()
        self.orphaned = False

    def tick(self, counter: int) -> None:
        from packserve.serve.workers.metrics import publish_collected, publish_gauges

        metrics = getattr(self.app, "metrics", None)
        if metrics is not None:
            publish_gauges(metrics)
            if counter % 10 == 0:  # once a second: collector-based metrics (batching...)
                publish_collected(metrics)
        if not self.orphaned and os.getppid() != self.parent:
            self.orphaned = True
            log.error("worker %d: supervisor gone: draining", os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)

    def final(self) -> None:
        """The last counts of an exiting worker stay in the server's total."""
        from packserve.serve.workers.metrics import publish_collected

        metrics = getattr(self.app, "metrics", None)
        if metrics is not None:
            publish_collected(metrics)


__all__ = ["BACKLOG", "WorkerDuties", "bind_socket", "configure_logging", "start_drain"]
