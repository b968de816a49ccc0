"""A keep-alive load client for the SIGTERM drain tests (one server or several workers)."""

from __future__ import annotations

import http.client
import json
import threading
import time


class KeepAliveClient(threading.Thread):
    """A keep-alive client hammering /predict until the server stops accepting connections."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.ok_after_term = 0
        self.term_at: float | None = None
        self.statuses: list[int] = []
        self.lost: list[str] = []
        self.refused_late: list[float] = []
        self.body = json.dumps({"features": [0.1, 0.2, 0.3, 0.4]})

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        fresh = False
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.connect()
                except OSError:  # refused: the server no longer accepts; nothing was sent
                    return
                fresh = True
            try:
                conn.request("POST", "/predict", body=self.body,
                             headers={"content-type": "application/json"})
            except OSError as exc:  # could not even send: the connection was already closed
                if fresh and self.term_at is not None:  # reset from the closed listen backlog
                    self.refused_late.append(time.monotonic() - self.term_at)
                else:
                    self.lost.append(f"send: {exc!r}")
                return
            try:
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:  # sent, never answered
                if fresh and self.term_at is not None:
                    # A connection the kernel completed in the listen backlog just as the
                    # server closed its socket: never accepted by the server (= refused).
                    self.refused_late.append(time.monotonic() - self.term_at)
                else:  # LOST: a request on an accepted keep-alive connection
                    self.lost.append(repr(exc))
                return
            fresh = False
            self.statuses.append(resp.status)
            if resp.status == 200 and self.term_at is not None:
                self.ok_after_term += 1
            if resp.will_close:
                conn.close()
                conn = None
