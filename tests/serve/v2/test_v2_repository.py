"""ModelRepository in-process: load beside, swap, failures, unload, polling rules."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from helpers.reload import place as _place
from packserve.errors import ModelLoadError, ModelNotFoundError
from packserve.serve.registry import ModelRegistry, ModelState
from packserve.serve.repository import ModelRepository


@pytest.fixture()
def repo(tmp_path: Path, chapter_bundle: Path) -> Path:
    root = tmp_path / "repo"
    (root / "fraud").mkdir(parents=True)
    _place(chapter_bundle, root / "fraud" / "1")
    return root


async def _start(root: Path) -> tuple[ModelRegistry, ModelRepository]:
    registry = ModelRegistry()
    registry.add_path(root)
    await registry.load_all()
    return registry, ModelRepository(registry, root)


def test_load_beside_then_swap_and_failures_keep_serving(repo: Path, chapter_bundle: Path) -> None:
    async def main() -> None:
        registry, rep = await _start(repo)
        assert registry.resolve("fraud").version == "1"
        assert rep.pending() == []
        _place(chapter_bundle, repo / "fraud" / "2")
        assert rep.pending() == ["fraud"]
        report = await rep.load("fraud")
        assert report.loaded == ["2"] and report.serving == "2"
        assert registry.resolve("fraud").version == "2"
        assert registry.resolve("fraud", "1").ready  # older versions stay loaded
        assert (await rep.load("fraud")).loaded == []  # nothing new: a no-op

        _place(chapter_bundle, repo / "fraud" / "3", corrupt=True)
        with pytest.raises(ModelLoadError, match="version 2 keeps serving"):
            await rep.load("fraud")
        assert registry.resolve("fraud").version == "2"
        assert [(e.version, e.state) for e in rep.index()] == [
            ("1", "READY"), ("2", "READY"), ("3", "UNAVAILABLE")]
        assert [e.version for e in rep.index(ready_only=True)] == ["1", "2"]
        # the poller does not retry an unchanged failure; a changed file is retried once it
        # stayed unchanged for one poll (settled), any file, not only the manifest
        assert rep.pending() == []
        artifact = repo / "fraud" / "3" / "model.onnx"
        st = artifact.stat()
        os.utime(artifact, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert rep.pending() == []  # changed since the last poll: still settling
        assert rep.pending() == ["fraud"]
        results = await rep.poll_once()
        assert isinstance(results[0], ModelLoadError)
        assert rep.pending() == []
        registry.close()

    asyncio.run(main())


def test_concurrent_loads_load_a_version_once(repo: Path, chapter_bundle: Path) -> None:
    async def main() -> None:
        registry, rep = await _start(repo)
        _place(chapter_bundle, repo / "fraud" / "2")
        a, b = await asyncio.gather(rep.load("fraud"), rep.load("fraud"))
        assert sorted([a.loaded, b.loaded]) == [[], ["2"]]
        assert [h.version for h in registry.versions("fraud")] == ["1", "2"]
        registry.close()

    asyncio.run(main())


def test_unload_then_poll_leaves_it_unloaded_until_loaded(repo: Path) -> None:
    async def main() -> None:
        registry, rep = await _start(repo)
        handle = registry.resolve("fraud")
        assert await rep.unload("fraud") == ["1"]
        assert handle.state is ModelState.UNLOADED
        with pytest.raises(ModelNotFoundError):
            registry.resolve("fraud")
        assert rep.pending() == []  # the poller must not bring it back
        assert [(e.version, e.state) for e in rep.index()] == [("1", "UNAVAILABLE")]
        assert (await rep.load("fraud")).serving == "1"
        with pytest.raises(ModelNotFoundError):
            await rep.unload("ghost")
        with pytest.raises(ModelNotFoundError):
            await rep.load("ghost")
        registry.close()

    asyncio.run(main())


def test_unload_waits_for_held_handles(repo: Path) -> None:
    async def main() -> None:
        registry, rep = await _start(repo)
        handle = registry.resolve("fraud")
        handle.in_flight += 1  # a request routed to this version, still running
        task = asyncio.create_task(rep.unload("fraud"))
        await asyncio.sleep(0.05)
        assert not task.done() and handle.state is ModelState.READY
        assert [e.state for e in rep.index()] == ["UNLOADING"]
        handle.in_flight -= 1
        assert await asyncio.wait_for(task, 5) == ["1"]
        assert handle.state is ModelState.UNLOADED
        registry.close()

    asyncio.run(main())


def test_single_bundle_has_nothing_to_load(chapter_bundle: Path) -> None:
    async def main() -> None:
        registry = ModelRegistry()
        registry.add_path(chapter_bundle)
        rep = ModelRepository(registry, chapter_bundle)
        assert not rep.enabled
        with pytest.raises(ModelLoadError, match="single bundle"):
            await rep.load("fraud")

    asyncio.run(main())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"repository_api": True}, "needs an API key"),
        ({"repository_api": True, "api_key": "k", "workers": 2}, "one worker"),
        ({"repository_poll_s": -1.0}, "greater than or equal to 0"),
    ],
)
def test_repository_settings_are_checked(kwargs: dict, fragment: str) -> None:
    from pydantic import ValidationError

    from packserve.serve.settings import ServeSettings

    with pytest.raises(ValidationError, match=fragment):
        ServeSettings(**kwargs)
    ok = ServeSettings(repository_api=True, api_key="k", repository_poll_s=0.5)
    assert ok.repository_api and ok.repository_poll_s == 0.5
