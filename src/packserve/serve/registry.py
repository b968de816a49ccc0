"""Which models are served, in which state: discovery, versions, lookup, loading.

A :class:`ModelRegistry` holds, per model name, one or more versions
(:class:`~packserve.serve.handle.ModelHandle`, where inference happens; re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packserve.bundle import MANIFEST_NAME, Manifest, read_manifest
from packserve.errors import (
    BundleError,
    ConfigError,
    ModelNotFoundError,
    ModelNotReadyError,
    SignatureError,
)
from packserve.runtime import RuntimeOptions
from packserve.serve.handle import InferenceObserver, ModelHandle, ModelState, Submitter
from packserve.serve.offload import CostModel
from packserve.signing import TrustAnchor, trust_summary

log = logging.getLogger("packserve.serve")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions numerically where they are numbers: 1.10.0 > 1.9.0."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+_]", version))


@dataclass(frozen=True)
class Discovered:
    name: str
    version: str
    path: Path
    manifest: Manifest | None
    error: str | None = None


def discover(path: Path) -> tuple[list[Discovered], bool]:
    """Find bundles: ``path`` itself, or ``path/<name>/<version>/``. Returns (found, single)."""
    if not path.exists():
        raise ConfigError(f"model path '{path}' does not exist")
    if (path / MANIFEST_NAME).is_file():
        m = read_manifest(path)  # a single bad bundle is fatal: raise with the reason
        return [Discovered(m.name, m.version, path, m)], True
    if not path.is_dir():
        raise ConfigError(f"model path '{path}' is neither a bundle nor a repository folder")
    found: list[Discovered] = []
    for name_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ver_dir in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (ver_dir / MANIFEST_NAME).is_file():
                continue
            try:
                m = read_manifest(ver_dir)
            except BundleError as exc:
                found.append(Discovered(name_dir.name, ver_dir.name, ver_dir, None, exc.message))
                continue
            found.append(Discovered(name_dir.name, ver_dir.name, ver_dir, m))
    if not found:
        raise BundleError(
            f"no bundles in '{path}': expected a bundle or REPO/<name>/<version>/{MANIFEST_NAME}"
        )
    return found, False


class ModelRegistry:
    """Model name -> versions. ``generation`` changes whenever the set of models changes."""

    def __init__(
        self,
        *,
        executor: Executor | None = None,
        runtime_options: RuntimeOptions | None = None,
        max_batch: int = 1000,
        inline_max_s: float = 0.00025,
        default_model: str | None = None,
        require_all: bool = True,
        keep_versions: int = 0,
        trusted: tuple[TrustAnchor, ...] = (),
    ) -> None:
        self._models: dict[str, dict[str, ModelHandle]] = {}
        self.executor = executor
        self.runtime_options = runtime_options or RuntimeOptions()
        self.max_batch = max_batch
        self.inline_max_s = inline_max_s
        self.default_model = default_model
        self.require_all = require_all
        #: ready versions kept per model (newest first); older ones are not loaded / are
        #: retired by the repository. 0 = keep every version.
        self.keep_versions = keep_versions
        #: trusted keys / CAs: when set, only bundles they signed are loaded (issue #20)
        self.trusted = trusted
        self.single = False
        self.generation = 0
        self._resolved: dict[tuple[str | None, str | None], ModelHandle] = {}
        self._resolved_gen = -1
        self.observer: InferenceObserver | None = None
        #: "requests are arriving together": lets a loaded model's plan share calls between
        #: them (serve/coalesce.py); None: never (set by the app from its loop clock)
        self.busy: Callable[[], bool] | None = None
        self.on_state: list[Callable[[ModelHandle], None]] = []
        #: after a load whose signature was refused (metrics)
        self.on_refused: list[Callable[[ModelHandle, SignatureError], None]] = []

    # --- building ---------------------------------------------------------------------

    def new_handle(self, name: str, version: str, path: Path, manifest: Manifest | None) -> ModelHandle:
        return ModelHandle(
            name=name, version=version, path=path, manifest=manifest, max_batch=self.max_batch,
            cost=CostModel(self.inline_max_s), executor=self.executor, observer=self.observer,
            trusted=self.trusted,
        )

    def add_path(self, path: Path) -> list[ModelHandle]:
        found, single = discover(path)
        self.single = single
        handles = []
        for d in found:
            h = self.new_handle(d.name, d.version, d.path, d.manifest)
            if d.error is not None:
                h.state, h.error = ModelState.FAILED, d.error
            self.add(h)
            handles.append(h)
        if self.default_model is not None and self.default_model not in self._models:
            raise ConfigError(f"default model {self.default_model!r} is not among the served models")
        return handles

    def add(self, handle: ModelHandle) -> None:
        self._models.setdefault(handle.name, {})[handle.version] = handle
        self.notify(handle)

    def remove(self, name: str, version: str) -> ModelHandle:
        handle = self.get(name, version)
        del self._models[name][version]
        if not self._models[name]:
            del self._models[name]
        self.generation += 1
        return handle

    def notify(self, handle: ModelHandle) -> None:
        """A handle changed state: listeners (metrics, batchers) hear it; caches are dropped."""
        self.generation += 1
        for fn in self.on_state:
            fn(handle)

    async def load(self, handle: ModelHandle) -> None:
        if handle.state is not ModelState.LOADING:
            return
        handle.busy = self.busy
        await asyncio.to_thread(handle.load_sync, self.runtime_options)
        if handle.refusal is not None:
            for fn in self.on_refused:
                fn(handle, handle.refusal)
        self.notify(handle)

    async def load_all(self) -> None:
        """Load sequentially: on a small machine parallel loads only slow each other down.

        Newest version first; with ``keep_versions`` N, versions older than the N newest
        that became ready are dropped without being loaded (they stay on disk). The server's
        startup then freezes the heap (:func:`packserve.serve.state.load_models`).
        """
        for name in self.names():
            ready = 0
            for handle in reversed(self.versions(name)):  # newest first
                if self.keep_versions and ready >= self.keep_versions:
                    self.remove(name, handle.version)  # superseded: never loaded
                    continue
                await self.load(handle)
                ready += handle.ready

    # --- lookup -----------------------------------------------------------------------

    def handles(self) -> Iterator[ModelHandle]:
        for versions in self._models.values():
            yield from versions.values()

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelHandle]:
        if name not in self._models:
            raise ModelNotFoundError(f"no model named {name!r}")
        return sorted(self._models[name].values(), key=lambda h: version_key(h.version))

    def get(self, name: str, version: str | None = None) -> ModelHandle:
        """A handle in any state; ``version=None`` = newest ready version (else newest)."""
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFoundError(f"no model named {name!r}")
        if version is None:
            ordered = self.versions(name)
            ready = [h for h in ordered if h.ready]
            return (ready or ordered)[-1]
        handle = versions.get(version)
        if handle is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        return handle

    def default_name(self) -> str:
        if self.default_model is not None:
            return self.default_model
        if len(self._models) == 1:
            return next(iter(self._models))
        raise ModelNotFoundError(
            "several models are served and none is the default: use /models/{name}/predict "
            "or set default_model"
        )

    def resolve(self, name: str | None, version: str | None = None) -> ModelHandle:
        """A *ready* handle for a request, or 404 / 503 saying why not.

        Cached per (name, version) until ``generation`` changes: the hot path pays one dict
        lookup instead of sorting versions on every request.
        """
        if self._resolved_gen == self.generation:
            hit = self._resolved.get((name, version))
            if hit is not None and hit.state is ModelState.READY:
                return hit
        else:
            self._resolved.clear()
            self._resolved_gen = self.generation
        handle = self.get(self.default_name() if name is None else name, version)
        if handle.state is not ModelState.READY:
            raise ModelNotReadyError(
                f"model {handle.name!r} version {handle.version!r} is {handle.state.value}"
            )
        self._resolved[(name, version)] = handle
        return handle

    # --- readiness --------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        states = [h.state for h in self.handles()]
        loading = ModelState.LOADING in states
        n_ready = states.count(ModelState.READY)
        ok = not loading and (n_ready == len(states) if self.require_all else n_ready > 0)
        detail = {
            "models": [
                {"name": h.name, "version": h.version, "state": h.state.value}
                | ({"error": h.error} if h.error else {})
                for h in self.handles()
            ],
            "signatures": trust_summary(self.trusted),
        }
        return ok and bool(states), detail

    def failed(self) -> list[ModelHandle]:
        return [h for h in self.handles() if h.state is ModelState.FAILED]

    def close(self) -> None:
        for h in self.handles():
            h.close()


__all__ = [
    "Discovered",
    "InferenceObserver",
    "ModelHandle",
    "ModelRegistry",
    "ModelState",
    "Submitter",
    "discover",
    "version_key",
]
