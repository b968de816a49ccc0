"""The ASGI wrapper every Ray replica runs (no Ray needed): traffic only once models are loaded."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from uvicorn import Config
from uvicorn.lifespan.on import LifespanOn

from packserve.deploy.ray import LoadedBeforeTraffic, RayOptions, replica_settings
from packserve.serve.app import create_app
from packserve.serve.routes import readiness
from packserve.serve.settings import ServeSettings


def run_lifespan(app: LoadedBeforeTraffic) -> tuple[bool, bool, str]:
    """Start the lifespan as Ray's replica wrapper does; (startup failed, loaded, readiness)."""

    async def go() -> tuple[bool, bool, str]:
        lifespan = LifespanOn(Config(app, lifespan="on", log_config=None))
        await lifespan.startup()
        state = app.app.state.serving
        loaded = state.loading_done
        ok, status, _ = readiness(app.app.state.registry, state)
        failed = lifespan.should_exit
        await lifespan.shutdown()
        return failed, loaded, status

    return asyncio.run(go())


def test_startup_completes_only_once_the_models_are_loaded(chapter_bundle: Path) -> None:
    app = LoadedBeforeTraffic(create_app(ServeSettings(model_path=chapter_bundle)))
    failed, loaded, status = run_lifespan(app)
    assert not failed and loaded and status == "ready"


def test_a_bundle_that_fails_to_load_fails_the_replica_startup(chapter_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(chapter_bundle, bad)
    art = bad / "model.onnx"
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    app = LoadedBeforeTraffic(create_app(ServeSettings(model_path=bad)))
    failed, loaded, status = run_lifespan(app)
    assert failed and loaded and status == "failed"


def test_replica_settings_are_absolute_and_sized_to_the_replica(chapter_bundle: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(chapter_bundle.parent)
    s = ServeSettings(model_path=Path(chapter_bundle.name), api_key="k3y")
    data = replica_settings(s, RayOptions(replica_cpus=2))
    assert data["model_path"] == str(chapter_bundle.resolve())
    assert data["api_key"] == "k3y"  # the real key goes to the replicas, not "**********"
    assert data["intra_op_threads"] == 2 and data["inference_threads"] == 2 and data["workers"] == 1
    assert ServeSettings(**data).api_key is not None


def test_repository_api_is_refused_with_several_replicas(chapter_bundle: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PACKSERVE_REPOSITORY_API": "1", "PACKSERVE_API_KEY": "k"}
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "deploy", "ray", str(chapter_bundle), "--replicas", "2"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2 and "one replica only" in proc.stderr, proc.stderr
