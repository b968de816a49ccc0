"""uvicorn as packserve's HTTP engine (``--server uvicorn``, the default).

uvicorn's own SIGTERM handling closes connections straight away (dropping requests already
sitting in keep-alive buffers) and re-raises the signal (exit -15), so :class:`PackserveServer`
replaces it with packserve's drain (:mod:`packserve.serve.lifecycle`): readiness 503, the
grace period, close the listening sockets, wait until no request is in flight and the
connections are idle, close them, exit 0.

Admission's refusals are answered in uvicorn's parser callback, before any ASGI task exists
(:mod:`packserve.serve.engines.uvicorn_door`, :mod:`packserve.serve.door`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from packserve.errors import PackserveError
from packserve.serve.engines.common import BACKLOG, WorkerDuties, start_drain
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
            start_drain(self.state, self.settings, sig)
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())
        elif sig == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting")
            self.should_exit = self.force_exit = True

    async def drain(self) -> None:
        state, settings = self.state, self.settings
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


class WorkerServer(PackserveServer):
    """The single-process server with the duties of a ``--workers`` worker:

    * it takes connections from the shared socket only once its models are loaded (a
      single server listens at once and says 503 on readiness; a worker still loading would
      instead answer 503 to requests its ready siblings could serve, e.g. while replacing a
      dead worker) — until then the kernel gives connections to the other workers, or
      keeps them in the backlog;
    * every tick (0.1 s) :class:`~packserve.serve.engines.common.WorkerDuties` (metrics,
      orphan check)."""

    servers: list[Any] = []  # read by a drain that starts before listening

    def __init__(self, config: uvicorn.Config, settings: ServeSettings, state: ServerState) -> None:
        super().__init__(config, settings, state)
        self.duties = WorkerDuties(config.app)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        state, original = self.state, self.lifespan.startup

        async def startup_then_load() -> None:
            await original()
            while not (state.loading_done or state.draining or self.should_exit):
                await asyncio.sleep(0.02)

        self.lifespan.startup = startup_then_load  # type: ignore[method-assign]
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.duties.final()
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        self.duties.tick(counter)
        return await super().on_tick(counter)


def uvicorn_config(settings: ServeSettings, app: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: httptools, with the app's admission door
    (:mod:`packserve.serve.engines.uvicorn_door`) unless it has none (``--no-admission-door``,
    ``--access-log``)."""
    door = getattr(app, "door", None)
    http: Any = "httptools"
    if door is not None:
        from packserve.serve.engines.uvicorn_door import door_protocol

        http = door_protocol(door)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=http,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        server_header=False,
        backlog=BACKLOG,
    )


def serve(settings: ServeSettings, app: Any, *, sock: socket.socket | None, worker: bool) -> int:
    """Serve ``app`` until drained; the exit code. ``sock``: the supervisor's shared socket."""
    config = uvicorn_config(settings, app)
    server = (WorkerServer if worker else PackserveServer)(config, settings, app.state.serving)
    server.run(sockets=None if sock is None else [sock])
    return server.exit_code


__all__ = ["PackserveServer", "WorkerServer", "serve", "uvicorn_config"]
