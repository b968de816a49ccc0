"""HTTP serving over bundles: ``create_app(settings)`` and ``run(settings)``.

Names are resolved lazily (PEP 562) so that ``packserve.serve.settings`` can be imported by
the CLI without pulling FastAPI, uvicorn or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packserve.serve.app import ROUTERS, PackserveApp, create_app
    from packserve.serve.lifecycle import run
    from packserve.serve.registry import ModelHandle, ModelRegistry, ModelState
    from packserve.serve.settings import ServeSettings
    from packserve.serve.state import ServerState

_WHERE = {
    "ROUTERS": "app",
    "PackserveApp": "app",
    "create_app": "app",
    "ServerState": "state",
    "run": "lifecycle",
    "ModelHandle": "registry",
    "ModelRegistry": "registry",
    "ModelState": "registry",
    "ServeSettings": "settings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'packserve.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"packserve.serve.{module}"), name)


__all__ = [
    "ROUTERS",
    "ModelHandle",
    "ModelRegistry",
    "ModelState",
    "PackserveApp",
    "ServeSettings",
    "ServerState",
    "create_app",
    "run",
]
