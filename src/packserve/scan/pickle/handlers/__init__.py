"""Opcode handlers: ``plain`` for values (numbers, strings, containers), ``objects`` for what
a real unpickler would import, call or mutate. Importing the package registers both in
:data:`DISPATCH`, the opcode byte -> handler table the walker's loop reads."""

from __future__ import annotations

from packserve.scan.pickle.handlers import objects  # noqa: F401 - registers its handlers
from packserve.scan.pickle.handlers.plain import DISPATCH

__all__ = ["DISPATCH"]
