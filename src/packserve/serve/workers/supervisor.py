"""``packserve serve --workers N``: one supervisor, N single-process servers on one socket.

Why a supervisor and not the engine's own workers (uvicorn's ``workers=``, granian's
``--workers``): every worker must keep packserve's own drain (readiness 503 at once, grace,
every accepted request answered, exit 0) and ``/metrics`` must count the whole server, not
whichever worker the kernel handed the scrape to. The same supervisor runs either engine
(``--server``): each worker is a single-process server of that engine.

* The supervisor binds the listening socket once and starts N workers
  (:func:`worker_main`) that inherit it; each runs the unchanged
  single-process server (:func:`packserve.serve.lifecycle.run`) on that socket, so the kernel
  spreads connections over them. The supervisor imports no web stack and loads no model.
* SIGTERM/SIGINT: forwarded as SIGTERM to every worker (each drains by the usual rules), the
  supervisor closes its copy of the socket (listening stops once the last worker stops) and
  exits 0 when every worker exited 0. A second SIGINT is forwarded as SIGINT (force exit).
* A worker that dies on its own (OOM kill, segfault, SIGKILL) is replaced; a worker that exits
  with a packserve exit code (bad bundle: 5, config: 2) stops the whole server with that code.
* Crash loops back off, they never stop healthy workers: the first ``MAX_RESTARTS`` deaths
  within ``RESTART_WINDOW_S`` (counted across workers) are replaced at once; each further
  one waits twice as long as the previous (1 s, 2 s, 4 s ... at most ``MAX_BACKOFF_S``) while
  the live workers keep serving. Only when no worker is alive and deaths keep coming (the
  whole server crash-loops) does the supervisor give up, with exit code 1, so that the
  process manager above it (systemd, Kubernetes) takes over.
* Metrics: prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a fresh folder
  per run): counters and histograms are summed over all workers, dead ones included;
  ``packserve_requests_in_flight`` is the live workers' sum, ``packserve_draining`` their max,
  ``packserve_model_state`` one series per live worker (``pid`` label); the process metrics
  (memory, CPU, fds) are the sums over the supervisor and its live workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from packserve.errors import ExitCode
from packserve.serve.engines.common import bind_socket
from packserve.serve.settings import ServeSettings

log = logging.getLogger("packserve.serve")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: replacements made at once within RESTART_WINDOW_S; beyond them restarts back off
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
BACKOFF_BASE_S = 1.0
MAX_BACKOFF_S = 30.0
_POLL_S = 0.05
_WORKER_CMD = (
    "import sys; from packserve.serve.workers import worker_main; sys.exit(worker_main(sys.argv[1:]))"
)


# --- supervisor ------------------------------------------------------------------------------


def settings_payload(settings: ServeSettings) -> bytes:
    """All fields as JSON (secrets in clear: this goes through a pipe to our own child)."""
    data = settings.model_dump(mode="json")
    data["api_key"] = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return json.dumps(data).encode()


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts, watches, replaces and stops the workers (see the module docstring)."""

    def __init__(self, settings: ServeSettings, sock: socket.socket, metrics_dir: Path) -> None:
        self.settings, self.sock, self.metrics_dir = settings, sock, metrics_dir
        self.workers: dict[int, _Worker] = {}
        self.exit_codes: dict[int, int] = {}
        self.stopping = False
        self.forced = False
        self.exit_code = 0
        self._restarts: list[float] = []
        self._due: dict[int, float] = {}  # worker index -> when its replacement starts
        self._payload = settings_payload(settings)
        self._stop_deadline = 0.0

    # signals only set flags; the loop acts on them
    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("supervisor: received %s: draining %d worker(s)", signal.Signals(sig).name,
                     len(self.workers))
            self.stopping = True
        elif sig == signal.SIGINT:
            self.forced = True

    def spawn(self, index: int) -> None:
        env = {**os.environ, MULTIPROC_ENV: str(self.metrics_dir)}
        cmd = [sys.executable, "-c", _WORKER_CMD, str(self.sock.fileno()), str(index)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env, pass_fds=(self.sock.fileno(),))
        assert proc.stdin is not None
        proc.stdin.write(self._payload)
        proc.stdin.close()
        self.workers[index] = _Worker(index, proc)

    def _signal_all(self, sig: int) -> None:
        for w in self.workers.values():
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def _begin_stop(self) -> None:
        self._signal_all(signal.SIGTERM)
        # nobody may accept on our copy of the socket once the workers stop listening
        with contextlib.suppress(OSError):
            self.sock.close()
        s = self.settings
        self._stop_deadline = time.monotonic() + s.shutdown_grace_s + s.drain_timeout_s + 10.0

    def _reap(self) -> None:
        from prometheus_client import multiprocess

        for index, w in list(self.workers.items()):
            code = w.proc.poll()
            if code is None:
                continue
            del self.workers[index]
            multiprocess.mark_process_dead(w.proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            if self.stopping:
                # -SIGTERM: killed by our SIGTERM before it installed its handler, i.e. before
                # it could accept anything (workers take connections only after that): clean
                self.exit_codes[index] = 0 if code == -signal.SIGTERM else code
                if self.exit_codes[index] != 0:
                    log.warning("supervisor: worker %d exited with %d while stopping", index, code)
                continue
            if code > 0:  # a packserve exit code (bad bundle: 5, config: 2...): not transient
                log.error("supervisor: worker %d exited with code %d: stopping", index, code)
                self.exit_code = code
                self.stopping = True
                continue
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
            excess = len(self._restarts) - MAX_RESTARTS + 1
            if excess > 0 and not self.workers:  # every worker is down: the whole server loops
                log.error("supervisor: no worker alive and %d deaths in %.0fs: giving up",
                          len(self._restarts) + 1, RESTART_WINDOW_S)
                self.exit_code = ExitCode.FAILED
                self.stopping = True
                continue
            self._restarts.append(now)
            delay = 0.0 if excess <= 0 else min(MAX_BACKOFF_S, BACKOFF_BASE_S * 2 ** (excess - 1))
            log.warning("supervisor: worker %d (pid %d) died (%d): starting a new one%s", index,
                        w.proc.pid, code, f" in {delay:g}s (crash loop: backing off)" if delay else "")
            self._due[index] = now + delay

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, due in list(self._due.items()):
            if self.stopping:
                del self._due[index]
            elif now >= due:
                del self._due[index]
                self.spawn(index)

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for i in range(self.settings.workers):
                self.spawn(i)
            stop_sent = forced_sent = False
            while self.workers or self._due:
                if self.stopping and not stop_sent:
                    stop_sent = True
                    self._begin_stop()
                if self.forced and not forced_sent:
                    forced_sent = True
                    self._signal_all(signal.SIGINT)
                if stop_sent and time.monotonic() > self._stop_deadline:
                    log.error("supervisor: workers still running after the drain timeout: killing")
                    self._signal_all(signal.SIGKILL)
                    self._stop_deadline = float("inf")
                self._reap()
                self._respawn_due()
                time.sleep(_POLL_S)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.exit_code:
            return self.exit_code
        bad = [c for c in self.exit_codes.values() if c != 0]
        return (bad[0] if bad[0] > 0 else ExitCode.FAILED) if bad else 0  # >0: a worker's own code


@contextlib.contextmanager
def metrics_folder() -> Iterator[Path]:
    """A clean multiprocess folder: the user's (``PROMETHEUS_MULTIPROC_DIR``, wiped of old
    ``*.db`` / ``collected_*.json`` files: stale pids would add up) or a temporary one removed
    afterwards."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for pattern in ("*.db", "collected_*.json"):
            for old in path.glob(pattern):
                old.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="packserve-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_workers(settings: ServeSettings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM/SIGINT; the exit code."""
    from packserve.serve.engines.common import configure_logging

    configure_logging(settings.log_level)
    settings.require_model_path()
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("supervisor (pid %d): %d workers on http://%s:%d", os.getpid(), settings.workers,
             shown, port)
    with metrics_folder() as folder:
        return Supervisor(settings, sock, folder).run()


# --- worker ----------------------------------------------------------------------------------


def worker_main(argv: list[str]) -> int:
    """Entry of one worker (args: FD INDEX; the settings as JSON on stdin)."""
    from packserve.errors import PackserveError
    from packserve.serve.lifecycle import run

    fd, _index = int(argv[0]), int(argv[1])
    settings = ServeSettings(**json.loads(sys.stdin.buffer.read()))
    sock = socket.socket(fileno=fd)
    try:
        return run(settings, sock=sock, worker=True)
    except PackserveError as exc:  # as the CLI does: the message and the exit code, no traceback
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code


__all__ = [
    "MULTIPROC_ENV",
    "Supervisor",
    "bind_socket",
    "run_workers",
    "worker_main",
]

