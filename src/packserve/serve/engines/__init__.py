"""HTTP engines of the server process (``--server``): one module each, the same interface.

* :mod:`~packserve.serve.engines.uvicorn` (default) and :mod:`~packserve.serve.engines.granian`
  each expose ``serve(settings, app, *, sock, worker) -> exit code``: serve the app on a new
  socket (``sock=None``) or on the ``--workers`` supervisor's, under packserve's signal
  handling and drain (:mod:`packserve.serve.lifecycle` states the guarantees);
* :mod:`~packserve.serve.engines.common`: what both share (logging, the socket, the start of a
  drain, a worker's periodic duties).

Engines are imported only by the server process that uses them: ``import packserve`` imports
neither.
"""

ENGINES = ("uvicorn", "granian")

__all__ = ["ENGINES"]
