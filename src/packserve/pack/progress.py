"""Step reporting for long packs, without threading a callback through every packer.

A caller (the CLI's progress display) installs a callback with :func:`reporting`; packers
call :func:`step` at each phase. With no callback installed, :func:`step` does nothing, so
library users pay nothing and packers written by others need not know about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_callback: ContextVar[Callable[[str], None] | None] = ContextVar("packserve_pack_step", default=None)


def step(message: str) -> None:
    """Announce the phase that starts now ("converting", "checking parity", ...)."""
    cb = _callback.get()
    if cb is not None:
        cb(message)


@contextmanager
def reporting(callback: Callable[[str], None]) -> Iterator[None]:
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)


__all__ = ["reporting", "step"]
