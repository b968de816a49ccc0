"""granian as packserve's HTTP engine (``--server granian``; ``pip install 'packserve[granian]'``).

granian's embedded server (:mod:`granian.server.embed`: the Rust HTTP stack on its own thread,
the app on this process's uvloop) serves a socket packserve binds (or inherits from the
``--workers`` supervisor), under packserve's own signal handling and lifespan. granian's
process manager, signal handlers and workers are not used: the drain, the supervisor and the
merged ``/metrics`` are the same for both engines (:mod:`packserve.serve.lifecycle`).

What granian does on ``stop()`` (granian 2.8: ``src/serve.rs``, ``src/workers.rs``): its accept
loop ends and drops the listener (the socket closes), every connection gets hyper's graceful
shutdown (an idle one closes; one with a request in progress answers it, then closes), and
``serve()`` returns once every connection task finished. packserve calls it after the grace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from packserve.errors import ConfigError, ExitCode, PackserveError
from packserve.serve.engines.common import BACKLOG, WorkerDuties, bind_socket, start_drain
from packserve.serve.settings import ServeSettings

log = logging.getLogger("packserve.serve")

#: connections one process holds at once (granian's ``backpressure``: beyond it granian stops
#: accepting). uvicorn has no such bound, and admission control (serve/admission.py) must see
#: an overload to refuse it with 503, and health checks must get in: far above any real load.
MAX_CONNECTIONS = 16384
_EXPERIMENTAL = "Embedded server is experimental!"


def require_granian() -> None:
    """``--server granian`` without the extra: a config error (exit 2), not a traceback."""
    try:
        import granian  # noqa: F401
    except ImportError:
        raise ConfigError("--server granian needs granian: pip install 'packserve[granian]'") from None


def _embedded(app: Any, sock: socket.socket, settings: ServeSettings) -> Any:
    """granian's embedded server on ``sock`` (granian takes the fd over and closes it on stop)."""
    from granian import _granian
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    holder: Any = _granian.SocketHolder  # (fd, is_uds, backlog) on Linux; the stub declares none

    class Embedded(Server):  # type: ignore[misc]
        def _init_shared_socket(self) -> None:  # our socket, not one granian binds itself
            self._shd = shared = holder(sock.detach(), False, BACKLOG)
            self._sfd = shared.get_fd()
            self._ssp = None

    host, port = sock.getsockname()[:2]
    server = Embedded(
        app, address=host, port=port, interface=Interfaces.ASGINL,  # the lifespan is ours
        http=HTTPModes.http1, websockets=False, backlog=BACKLOG, backpressure=MAX_CONNECTIONS,
        log_level=LogLevels(settings.log_level), log_access=False,  # packserve's --access-log
    )
    logging.getLogger("_granian").addFilter(lambda r: r.getMessage() != _EXPERIMENTAL)
    return server


class GranianProcess:
    """One server process on granian: lifespan, signals, drain (see the module docstring)."""

    def __init__(self, settings: ServeSettings, app: Any, sock: socket.socket, worker: bool) -> None:
        self.settings, self.app, self.sock, self.worker = settings, app, sock, worker
        self.state = app.state.serving
        self.state.on_fatal = self._fatal
        self.duties = WorkerDuties(app) if worker else None
        self.exit_code = 0
        self.abandoned = False  # the drain timed out: connections are left to the process exit
        self._stop = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None

    def _fatal(self, exc: PackserveError) -> None:
        log.error("error: %s", exc.message)
        self.exit_code = exc.exit_code
        self._stop.set()

    def _on_signal(self, sig: int) -> None:
        if self._drain is None:
            start_drain(self.state, self.settings, sig)
            self._drain = asyncio.get_running_loop().create_task(self._grace())
        elif sig == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting")
            self.abandoned = True
            self._stop.set()

    async def _grace(self) -> None:
        await asyncio.sleep(self.settings.shutdown_grace_s)
        self._stop.set()

    async def _tick(self, duties: WorkerDuties) -> None:
        counter = 0
        while True:
            await asyncio.sleep(0.1)
            counter += 1
            duties.tick(counter)

    async def _serve(self) -> None:
        """Serve until the drain (or a fatal error) says stop; then granian's graceful stop."""
        server = _embedded(self.app, self.sock, self.settings)
        serving = asyncio.get_running_loop().create_task(server.serve())
        stopping = asyncio.get_running_loop().create_task(self._stop.wait())
        done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if serving in done:  # granian ended on its own: its worker failed
            stopping.cancel()
            exc = serving.exception()
            log.error("granian stopped unexpectedly%s", f": {exc}" if exc else "")
            self.exit_code = self.exit_code or ExitCode.FAILED
            return
        server.stop()  # stop listening; every connection finishes its request, then closes
        if self.abandoned:
            return
        try:
            await asyncio.wait_for(asyncio.shield(serving), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("drain timeout: %d request(s) still in flight", self.state.in_flight)
            self.abandoned = True

    async def main(self) -> int:
        from granian import asgi

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        lifespan: Any = asgi.LifespanProtocol(self.app)  # type: ignore[no-untyped-call]
        await lifespan.startup()  # starts loading the models in the background
        if lifespan.interrupt:
            log.error("startup failed: %s", lifespan.exc)
            return ExitCode.FAILED
        ticker = None if self.duties is None else loop.create_task(self._tick(self.duties))
        state = self.state
        while self.worker and not (state.loading_done or state.draining or self._stop.is_set()):
            await asyncio.sleep(0.02)  # a worker listens once ready: its siblings serve meanwhile
        if not self._stop.is_set():
            await self._serve()
        log.info("drained: exiting")
        if ticker is not None and self.duties is not None:
            ticker.cancel()
            self.duties.final()
        await lifespan.shutdown()
        return self.exit_code


def serve(settings: ServeSettings, app: Any, *, sock: socket.socket | None, worker: bool) -> int:
    """Serve ``app`` until drained; the exit code. ``sock``: the supervisor's shared socket."""
    import uvloop

    if sock is None:
        sock = bind_socket(settings.host, settings.port)  # granian logs "Listening at" it
    process = GranianProcess(settings, app, sock, worker)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(process.main())
    if process.abandoned:  # granian's thread still holds connections: do not wait for it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


__all__ = ["MAX_CONNECTIONS", "GranianProcess", "require_granian", "serve"]
