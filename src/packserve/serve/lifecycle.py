"""The server process: ``run(settings)`` on the chosen engine (``--server uvicorn|granian``).

Both engines (:mod:`packserve.serve.engines`) give the same guarantees:

* Models load *after* the socket is listening (the app's lifespan,
  :mod:`packserve.serve.state`), so ``/health/live`` answers at once and ``/health/ready``
  says 503 until every model is verified and warm (a ``--workers`` worker takes connections
  only once its models are ready: its siblings serve meanwhile).
* SIGTERM/SIGINT start a drain, never an abrupt exit:

  1. readiness turns 503 at once and every response carries ``Connection: close``;
  2. for ``shutdown_grace_s`` the server keeps listening so a load balancer can notice; new
     requests get a clean 503 (``shutting_down``), requests already running finish;
  3. the listening socket closes; every accepted request is answered (at most
     ``drain_timeout_s``), idle connections close, and the process exits 0.

  A second SIGINT exits without waiting.
* Bodies over ``max_body_bytes`` get 413 while being read (the app's gateway, any engine).
"""

from __future__ import annotations

import socket

from packserve.serve.engines.common import configure_logging
from packserve.serve.settings import ServeSettings
from packserve.serve.state import ServerState


def run(settings: ServeSettings, *, sock: socket.socket | None = None, worker: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain).

    ``sock``/``worker``: a worker of ``--workers N`` (:mod:`packserve.serve.workers`) serves
    on the supervisor's already-bound socket, with a worker's duties."""
    from packserve.serve.app import create_app  # lazy: the --workers supervisor imports no FastAPI

    configure_logging(settings.log_level)
    if settings.server == "granian":
        from packserve.serve.engines.granian import require_granian, serve

        require_granian()  # before the app: a missing extra is a config error, not a traceback
    else:
        from packserve.serve.engines.uvicorn import serve
    app = create_app(settings)
    code = serve(settings, app, sock=sock, worker=worker)
    fatal = app.state.serving.fatal
    if fatal is not None and code == 0:
        code = fatal.exit_code
    return code


#: ``ServerState`` is re-exported: it lived here before :mod:`packserve.serve.state`.
__all__ = ["ServerState", "run"]
