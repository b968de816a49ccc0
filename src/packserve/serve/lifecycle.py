"""The server process: uvicorn with packserve's signal handling, and ``run(settings)``.

Models load *after* the socket is listening (the app's lifespan, :mod:`packserve.serve.state`),
so ``/health/live`` answers at once and ``/health/ready`` says 503 until every model is
verified and warm. On SIGTERM the server
does not let uvicorn close connections straight away (that drops requests already sitting
in keep-alive buffers and re-raises the signal, exit -15). Instead:

1. readiness turns 503 at once and every response carries ``Connection: close``;
2. for ``shutdown_grace_s`` the server keeps listening so a load balancer can notice; new
   requests get a clean 503 (``shutting_down``), requests already running finish;
3. the listening sockets close; the server waits (at most ``drain_timeout_s``) until no
   request is in flight and connections are idle, then closes them and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from packserve.errors import PackserveError
from packserve.serve.settings import ServeSettings
from packserve.serve.state import ServerState

log = logging.getLogger("packserve.serve")


def _idle(conn: Any) -> bool:
    """True when a uvicorn protocol has no request in progress or queued."""
    cycle = getattr(conn, "cycle", None)
    busy = cycle is not None and not getattr(cycle, "response_complete", True)
    return not busy and not getattr(conn, "pipeline", None)


class PackserveServer(uvicorn.Server):
    """uvicorn's server with packserve's own signal handling and drain."""

    def __init__(self, config: uvicorn.Config, settings: ServeSettings, state: ServerState) -> None:
        super().__init__(config)
        self.settings = settings
        self.state = state
        self.exit_code = 0
        self._drain_task: asyncio.Task[None] | None = None
        state.on_fatal = self._fatal

    def _fatal(self, exc: PackserveError) -> None:
        log.error("error: %s", exc.message)
        self.exit_code = exc.exit_code
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Own handlers: SIGTERM/SIGINT start a drain; a second SIGINT forces exit. No re-raise."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self._drain_task is None:
            log.info("received %s: draining", signal.Signals(sig).name)
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())
        elif sig == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting")
            self.should_exit = self.force_exit = True

    async def drain(self) -> None:
        state, settings = self.state, self.settings
        state.draining = True
        for hook in state.on_drain:
            hook(settings.drain_timeout_s)
        await asyncio.sleep(settings.shutdown_grace_s)
        for server in self.servers:  # stop accepting; established connections stay open
            server.close()
        deadline = time.monotonic() + settings.drain_timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            conns = list(self.server_state.connections)
            if state.in_flight == 0 and all(_idle(c) for c in conns):
                now = time.monotonic()
                if quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= 0.05:
                    for c in conns:  # nothing in progress: close what clients left open
                        c.shutdown()
                    if not self.server_state.connections:
                        break
            else:
                quiet_since = None
            await asyncio.sleep(0.01)
        else:
            log.warning("drain timeout: %d request(s) still in flight", state.in_flight)
        log.info("drained: exiting")
        self.should_exit = True


def _configure_logging(level: str) -> None:
    """packserve's own loggers print next to uvicorn's (uvicorn configures only its own)."""
    logger = logging.getLogger("packserve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logging.getLogger("packserve.access").propagate = False


def run(
    settings: ServeSettings,
    *,
    sockets: list[Any] | None = None,
    server_class: type[PackserveServer] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain).

    ``sockets``/``server_class``: a worker of ``--workers N`` (:mod:`packserve.serve.workers`)
    serves on the supervisor's already-bound socket with a subclass of the server."""
    from packserve.serve.app import create_app  # lazy: the --workers supervisor imports no FastAPI

    _configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        server_header=False,
        backlog=4096,  # a connection storm's SYNs wait, not dropped and retried 1 s, 3 s later
    )
    server = (server_class or PackserveServer)(config, settings, app.state.serving)
    server.run(sockets=sockets)
    if app.state.serving.fatal is not None and server.exit_code == 0:
        server.exit_code = app.state.serving.fatal.exit_code
    return server.exit_code


#: ``ServerState`` is re-exported: it lived here before :mod:`packserve.serve.state`.
__all__ = ["PackserveServer", "ServerState", "run"]
