"""Versions and hot reload over a repository folder ``REPO/<name>/<version>/``.

The :class:`~packserve.serve.registry.ModelRegistry` already routes an unversioned request
to the newest *ready* version (:func:`~packserve.serve.registry.version_key` order). This
module adds what changes the set of versions while traffic flows:

* **load** (``POST /v2/repository/models/{name}/load``, or the poller): every version
  directory of ``name`` that is not serving is verified (sha256), opened and warmed in a
  thread *outside* the registry, beside the version that is serving. Only a version that
  became ready is added to the registry: that single ``registry.add`` on the event loop is
  the swap. Requests resolved before it finish on the old version (they hold its handle);
  every request resolved after it gets the new one. A version that fails is never routed to:
  the old one keeps serving, and the failure is kept here for the index, the load call's
  answer, the ``packserve_model_state{state="failed"}`` gauge and
  ``packserve_model_loads_total{result="failed"}``.
  Versions load newest first, so a load after an unload serves the newest version from
  its first answer (never an older one on the way up).
* **keep_versions** N (> 0): only the N newest ready versions of a model stay loaded; an
  older one leaves routing when a newer one is swapped in and closes once its in-flight
  requests finished (every version ever loaded would otherwise stay in memory). Versions
  older than the N newest ready ones are not loaded at all.
* **unload**: the model's versions leave the registry at once (new requests 404), then the
  handles close only after their in-flight work finished (bounded by ``drain_timeout_s``).
  A request holds its version from routing on (body reading included), so a request routed
  before the unload finishes on it.
* **poll** (``repository_poll_s`` > 0): new version directories (and new model folders) are
  loaded as they appear. A failed version is retried when *any* of its files changed and
  then stayed unchanged for one poll interval (it settled): a manifest copied before its
  ``model.onnx`` is served once the copy finished. Removing a directory does not unload
  (use the unload call): a half-deleted folder must not take traffic down. A model unloaded
  by the unload call stays unloaded until a load call.

Bundles written by ``packserve pack`` appear atomically (staged in a hidden folder, then
renamed), so the poller never sees half a bundle; a hand copy that is caught mid-way fails
its sha256 check and is retried once its files settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from packserve.errors import BundleError, ModelLoadError, ModelNotFoundError, PackserveError
from packserve.serve.registry import ModelHandle, ModelRegistry, ModelState, discover, version_key

log = logging.getLogger("packserve.serve")

__all__ = ["IndexEntry", "LoadReport", "ModelRepository"]

#: Triton's repository-index states.
_INDEX_STATE = {
    ModelState.READY: "READY",
    ModelState.LOADING: "LOADING",
    ModelState.FAILED: "UNAVAILABLE",
    ModelState.UNLOADED: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class LoadReport:
    name: str
    loaded: list[str]
    failed: dict[str, str]
    serving: str | None


Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    """(relative path, size, mtime) of every file under a version folder: any copy, rewrite
    or late arrival changes it."""
    out: list[tuple[str, int, int]] = []
    try:
        for f in sorted(path.rglob("*")):
            with contextlib.suppress(OSError):
                st = f.stat()
                if f.is_file():
                    out.append((f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    except OSError:
        pass
    return tuple(out)


class ModelRepository:
    """Load / unload / index / poll for a registry served from a repository folder."""

    def __init__(
        self,
        registry: ModelRegistry,
        root: Path | None,
        *,
        drain_timeout_s: float = 30.0,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry
        self.root = root
        self.drain_timeout_s = drain_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}
        # (name, version) -> (failed handle, the folder's fingerprint when it was tried)
        self._failed: dict[tuple[str, str], tuple[ModelHandle, Fingerprint]] = {}
        self._seen: dict[tuple[str, str], Fingerprint] = {}  # at the previous poll
        self._retiring: set[asyncio.Task[None]] = set()
        self._unloading: dict[tuple[str, str], ModelHandle] = {}  # routed no more, still busy
        self._unloaded: set[str] = set()  # explicitly unloaded: the poller leaves them alone
        self._poller: asyncio.Task[None] | None = None
        self.loads = Counter(
            "packserve_model_loads", "model version loads after startup, by result",
            ["model", "result"], registry=metrics_registry,
        ) if metrics_registry is not None else None

    @property
    def enabled(self) -> bool:
        """A repository folder (not a single bundle) is being served."""
        return self.root is not None and not self.registry.single

    def _require_root(self) -> Path:
        if self.root is None or self.registry.single:
            raise ModelLoadError(
                "the server was started on a single bundle, not a repository folder "
                "REPO/<name>/<version>/: there is nothing to load or unload"
            )
        return self.root

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # --- index ----------------------------------------------------------------------------

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every model version the server knows: serving, loading, failed, on disk only."""
        entries: dict[tuple[str, str], IndexEntry] = {}
        if self.enabled:
            assert self.root is not None
            try:
                found, _ = discover(self.root)
            except BundleError:
                found = []
            for d in found:
                reason = d.error or (
                    f"superseded by newer versions (keep_versions={self.registry.keep_versions})"
                    if self._superseded(d.name, d.version) else "not loaded"
                )
                entries[(d.name, d.version)] = IndexEntry(d.name, d.version, "UNAVAILABLE", reason)
        for (name, version), (handle, _) in self._failed.items():
            entries[(name, version)] = IndexEntry(name, version, "UNAVAILABLE", handle.error or "failed")
        for h in self.registry.handles():
            entries[(h.name, h.version)] = IndexEntry(h.name, h.version, _INDEX_STATE[h.state], h.error or "")
        for (name, version), h in self._unloading.items():
            entries[(name, version)] = IndexEntry(name, version, "UNLOADING", f"{h.in_flight} in flight")
        out = sorted(entries.values(), key=lambda e: (e.name, version_key(e.version)))
        return [e for e in out if e.state == "READY"] if ready_only else out

    # --- load -----------------------------------------------------------------------------

    async def load(self, name: str, *, retry_failed: bool = True) -> LoadReport:
        """Load every not-yet-serving version of ``name``; the newest ready one serves.

        Versions that load are swapped in even when another one fails. If any version
        failed, :class:`ModelLoadError` says which and why, and which version keeps serving
        (as Triton's load call fails while the previous version keeps running).
        ``retry_failed=False`` (the poller) skips a failed version whose files are unchanged.
        Newest version first; with ``registry.keep_versions`` N, versions older than the N
        newest ready ones are not loaded, and loaded ones beyond them are retired.
        """
        root = self._require_root()
        async with self._lock(name):
            found = [d for d in discover(root)[0] if d.name == name] if (root / name).is_dir() else []
            if not found:
                raise ModelNotFoundError(f"no model folder {name!r} with a bundle in the repository")
            self._unloaded.discard(name)
            serving = {h.version: h for h in self._registry_versions(name)}
            loaded: list[str] = []
            failed: dict[str, str] = {}
            keep = self.registry.keep_versions
            ready = 0
            for d in sorted(found, key=lambda d: version_key(d.version), reverse=True):
                current = serving.get(d.version)
                if current is not None and current.state is not ModelState.FAILED:
                    ready += current.ready
                    continue
                if keep and ready >= keep:
                    continue  # superseded by newer ready versions: stays on disk only
                fp = fingerprint(d.path)
                prev = self._failed.get((name, d.version))
                if prev is not None and not retry_failed and prev[1] == fp:
                    continue
                handle = self.registry.new_handle(name, d.version, d.path, d.manifest)
                if d.error is not None:
                    handle.state, handle.error = ModelState.FAILED, d.error
                    self.registry.notify(handle)
                else:
                    await self.registry.load(handle)  # verify + open + warm, in a thread
                if handle.ready:
                    if current is not None:  # a version that failed at startup
                        self.registry.remove(name, d.version)
                    self.registry.add(handle)  # the swap: one step on the event loop
                    ready += 1
                    self._failed.pop((name, d.version), None)
                    loaded.append(d.version)
                    self._count(name, "loaded")
                    log.info("model %s version %s loaded and serving", name, d.version)
                else:
                    self._failed[(name, d.version)] = (handle, fp)
                    failed[d.version] = handle.error or "failed to load"
                    self._count(name, "failed")
                    log.error("model %s version %s failed to load: %s (the previous version keeps serving)",
                              name, d.version, handle.error)
            self._trim(name)
            now = self._serving_version(name)
        if failed:
            detail = "; ".join(f"version {v}: {why}" for v, why in failed.items())
            keeps = f"version {now} keeps serving" if now else "no version of it is serving"
            raise ModelLoadError(f"model {name!r} failed to load ({detail}); {keeps}")
        return LoadReport(name, loaded, failed, now)

    def _registry_versions(self, name: str) -> list[ModelHandle]:
        try:
            return self.registry.versions(name)
        except ModelNotFoundError:
            return []

    def _serving_version(self, name: str) -> str | None:
        ready = [h for h in self._registry_versions(name) if h.ready]
        return ready[-1].version if ready else None

    def _trim(self, name: str) -> None:
        """Retire ready versions older than the ``keep_versions`` newest ready ones."""
        keep = self.registry.keep_versions
        ready = [h for h in self._registry_versions(name) if h.ready]
        if not keep or len(ready) <= keep:
            return
        for h in ready[:-keep]:
            self.registry.remove(h.name, h.version)  # routing stops now
            self._unloading[(h.name, h.version)] = h
            task = asyncio.get_running_loop().create_task(self._retire_one(h))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("model %s version %s superseded (keep_versions=%d): retiring", h.name,
                     h.version, keep)

    async def _retire_one(self, handle: ModelHandle) -> None:
        try:
            await self._retire(handle)
        finally:
            self._unloading.pop((handle.name, handle.version), None)

    def _count(self, name: str, result: str) -> None:
        if self.loads is not None:
            self.loads.labels(name, result).inc()

    # --- unload ---------------------------------------------------------------------------

    async def unload(self, name: str) -> list[str]:
        """Stop routing to ``name`` now; close each version once its in-flight work is done."""
        self._require_root()
        async with self._lock(name):
            handles = self.registry.versions(name)  # 404 for an unknown model
            for h in handles:
                self._unloading[(h.name, h.version)] = h
            try:
                for h in handles:
                    self.registry.remove(h.name, h.version)
                await asyncio.gather(*(self._retire(h) for h in handles))
            finally:
                for h in handles:
                    self._unloading.pop((h.name, h.version), None)
            for key in [k for k in self._failed if k[0] == name]:
                del self._failed[key]
            self._unloaded.add(name)
            return [h.version for h in handles]

    async def _retire(self, handle: ModelHandle) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while handle.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if handle.in_flight > 0:
            log.warning("model %s version %s closed with %d requests still in flight (drain timeout)",
                        handle.name, handle.version, handle.in_flight)
        # in_flight counts requests queued in the handle's batcher too, so it is empty now;
        # the UNLOADED notification detaches and closes it (serve/batching/wiring.py).
        handle.close()
        self.registry.notify(handle)
        log.info("model %s version %s unloaded", handle.name, handle.version)

    # --- polling --------------------------------------------------------------------------

    def start_polling(self, interval_s: float) -> None:
        if interval_s > 0 and self.enabled and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(interval_s))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
            self._poller = None

    def pending(self) -> list[str]:
        """Model names with a version directory that is neither serving, superseded
        (``keep_versions``) nor known-failed (or failed, with files that changed since and
        then stayed unchanged for one poll)."""
        assert self.root is not None
        try:
            found, _ = discover(self.root)
        except PackserveError:
            return []
        known = {(h.name, h.version) for h in self.registry.handles() if h.state is not ModelState.FAILED}
        names: set[str] = set()
        seen: dict[tuple[str, str], Fingerprint] = {}
        for d in found:
            key = (d.name, d.version)
            if key in known or key in self._unloading or d.name in self._unloaded:
                continue
            if self._superseded(d.name, d.version):
                continue
            prev = self._failed.get(key)
            if prev is not None:
                fp = seen[key] = fingerprint(d.path)
                if fp == prev[1] or fp != self._seen.get(key):
                    continue  # unchanged since it failed, or still changing
            names.add(d.name)
        self._seen = seen
        return sorted(names)

    def _superseded(self, name: str, version: str) -> bool:
        keep = self.registry.keep_versions
        if not keep:
            return False
        key = version_key(version)
        newer = [h for h in self._registry_versions(name) if h.ready and version_key(h.version) > key]
        return len(newer) >= keep

    async def poll_once(self) -> list[LoadReport | PackserveError]:
        results: list[LoadReport | PackserveError] = []
        for name in self.pending():
            try:
                results.append(await self.load(name, retry_failed=False))
            except PackserveError as exc:
                results.append(exc)
        return results

    async def _poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once()
            except Exception:  # never let the poller die
                log.exception("repository poll failed")

    def describe(self) -> dict[str, Any]:
        return {"root": None if self.root is None else self.root.name, "enabled": self.enabled}
