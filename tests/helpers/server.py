"""Start a real ``packserve serve`` in a subprocess on 127.0.0.1 and a free port.

    with running_server(bundle, "--max-batch", "50", env={"PACKSERVE_API_KEY": "k"}) as srv:
        httpx.post(f"{srv.url}/predict", json=...)

Waits (bounded) for ``/health/ready`` == 200, yields a :class:`Server` (``url``, ``proc``,
``port``, ``output()``), and on exit sends SIGTERM and waits (bounded; SIGKILL on timeout).
``wait_ready=False`` yields as soon as the port answers at all (for readiness tests).
``PACKSERVE_SHUTDOWN_GRACE_S`` defaults to 0.2 here (not 2 s) so that stopping is quick; pass
``env={"PACKSERVE_SHUTDOWN_GRACE_S": ...}`` to test the grace period itself. The engine is
``PACKSERVE_SERVER`` from the environment (tests/serve's ``engine`` fixture sets it per run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

#: the HTTP engines (``packserve serve --server``): tests of a guarantee run on each
ENGINES = ("uvicorn", "granian")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded); SIGKILL if it does not exit. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise


def wait_until(url: str, proc: subprocess.Popen[bytes], *, ready: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            r = httpx.get(f"{url}/health/ready" if ready else f"{url}/health/live", timeout=2.0)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"server at {url} not {'ready' if ready else 'up'} after {timeout}s")


@contextlib.contextmanager
def running_server(
    path: str | os.PathLike[str],
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    wait_ready: bool = True,
    stop_timeout: float = 30.0,
) -> Iterator[Server]:
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="packserve-serve-", suffix=".log", delete=False
    )
    full_env = {**os.environ, "PACKSERVE_SHUTDOWN_GRACE_S": "0.2", **(env or {})}
    cmd = [sys.executable, "-m", "packserve", "serve", str(path),
           "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = Server(f"http://127.0.0.1:{port}", port, proc, Path(log_file.name))
    try:
        try:
            wait_until(server.url, proc, ready=wait_ready, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- server output ---\n{server.output()}") from None
        yield server
    finally:
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.terminate(stop_timeout)
        log_file.close()
        with contextlib.suppress(OSError):
            os.unlink(log_file.name)


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[bytes, bytes]:
    """One whole HTTP/1.1 response (head, Content-Length body) from ``sock``; ``buf`` holds
    bytes already read past the previous response and keeps those past this one."""
    data = buf if buf is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    data[:] = rest[length:]
    return head, rest[:length]
