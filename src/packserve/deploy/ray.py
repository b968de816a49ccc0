"""Ray Serve: replicas of the one app (``create_app``) behind Ray's HTTP proxy.

Ray brings what a home-made cluster would lack: replicas placed over a cluster, restarts of
dead replicas, health checks, autoscaling, a bounded queue in front of the replicas. packserve
brings the app, unchanged: each replica builds ``create_app(settings)`` *on the replica*
(``@serve.ingress`` with a builder, so nothing of the app is pickled), with its own batcher —
Ray's own ``@serve.batch`` is not stacked on top.

* a replica joins the proxy's routing only once its models are loaded and warm: the ASGI
  lifespan's ``startup.complete`` is held back until loading finished (a failed lone bundle
  fails the startup instead);
* ``check_health`` is the server's readiness (the same rule as ``/health/ready``);
* ``max_ongoing_requests`` per replica and ``max_queued_requests`` in front of them: past
  that, Ray answers 503 at once instead of queueing without bound;
* graceful shutdown: Ray stops routing to a stopping replica, waits for its ongoing requests
  (at most ``drain_timeout_s``), then runs the app's lifespan shutdown.

Requires the ``ray`` extra (``pip install 'packserve[ray]'``). With ``--address`` the cluster's
nodes need packserve installed as well (same image, or a Ray runtime_env).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packserve.errors import MissingDependencyError
from packserve.serve.settings import ServeSettings

log = logging.getLogger("packserve.deploy")

APP_NAME = "packserve"
DEPLOYMENT_NAME = "packserve"


@dataclass(frozen=True)
class RayOptions:
    replicas: int = 1
    #: autoscaling between ``replicas`` and this many (None: a fixed number of replicas)
    max_replicas: int | None = None
    address: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    num_cpus: int | None = None
    replica_cpus: float = 1.0
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    health_check_period_s: float = 2.0
    health_check_timeout_s: float = 10.0


def _import_serve() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a server
    try:
        from ray import serve
    except ImportError:
        raise MissingDependencyError("ray[serve]", "ray") from None
    return serve


class LoadedBeforeTraffic:
    """ASGI wrapper: ``lifespan.startup.complete`` only once the models finished loading."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        state = self.app.state.serving

        async def send_when_loaded(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                while not state.loading_done:
                    await asyncio.sleep(0.02)
                if state.fatal is not None:
                    message = {"type": "lifespan.startup.failed", "message": state.fatal.message}
            await send(message)

        await self.app(scope, receive, send_when_loaded)


def replica_settings(settings: ServeSettings, options: RayOptions) -> dict[str, Any]:
    """Settings each replica rebuilds (JSON-safe; secrets included: they go to our replicas)."""
    data = settings.model_dump(mode="json")
    if settings.model_path is not None:  # replicas run in other working directories
        data["model_path"] = str(settings.model_path.resolve())
    data["api_key"] = settings.api_key.get_secret_value() if settings.api_key is not None else None
    threads = max(1, int(options.replica_cpus))
    data["workers"] = 1
    data["intra_op_threads"] = settings.intra_op_threads or threads
    data["inference_threads"] = settings.inference_threads or threads
    return data


def build_application(settings: ServeSettings, options: RayOptions) -> Any:
    """The Ray Serve application: one deployment whose replicas each run ``create_app``."""
    serve = _import_serve()
    payload = json.dumps(replica_settings(settings, options))

    def build_asgi_app() -> Any:  # runs on each replica, at replica start
        from packserve.serve.app import create_app

        return LoadedBeforeTraffic(create_app(ServeSettings(**json.loads(payload))))

    class PackserveReplica:
        def check_health(self) -> None:
            from packserve.serve.routes import readiness

            app = self.app.app  # type: ignore[attr-defined]
            ok, status, _ = readiness(app.state.registry, app.state.serving)
            if not ok and status != "draining":
                raise RuntimeError(f"packserve replica not ready: {status}")

    autoscaling: dict[str, Any] | None = None
    if options.max_replicas is not None and options.max_replicas > options.replicas:
        autoscaling = {
            "min_replicas": options.replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": max(1, options.max_ongoing_requests // 2),
        }
    deployment = serve.deployment(
        name=DEPLOYMENT_NAME,
        num_replicas=None if autoscaling else options.replicas,
        autoscaling_config=autoscaling,
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
        ray_actor_options={"num_cpus": options.replica_cpus},
        health_check_period_s=options.health_check_period_s,
        health_check_timeout_s=options.health_check_timeout_s,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=settings.drain_timeout_s,
    )(serve.ingress(build_asgi_app)(PackserveReplica))
    return deployment.bind()


def run_ray(path: str | Path, options: RayOptions, settings: ServeSettings | None = None) -> int:
    """Start (or join) Ray, deploy, serve until SIGTERM/SIGINT, then shut Serve down cleanly."""
    from packserve.deploy.target import inspect_target
    from packserve.serve.engines.common import configure_logging

    settings = settings or ServeSettings(model_path=Path(path))
    configure_logging(settings.log_level)
    logging.getLogger("packserve.deploy").setLevel(settings.log_level.upper())
    inspect_target(settings.require_model_path())  # fail here, not in every replica
    if settings.repository_api and (options.replicas > 1 or options.max_replicas):
        from packserve.errors import ConfigError

        raise ConfigError(
            "PACKSERVE_REPOSITORY_API with several replicas: a load/unload call would reach one "
            "replica only; use PACKSERVE_REPOSITORY_POLL_S (every replica watches the folder)"
        )
    serve = _import_serve()
    import ray

    if options.address:
        ray.init(address=options.address, logging_level=logging.WARNING)
    else:
        # "local": always a new head, even where a stale /tmp/ray/ray_current_cluster points elsewhere
        ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    # after ray.init: Ray's core worker installs a SIGTERM handler that kills the driver at once
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(build_application(settings, options), name=APP_NAME, route_prefix="/")
        log.info("Ray Serve: http://%s:%d (%d replica(s) of create_app)", options.host,
                 options.port, options.replicas)
        while not stop.wait(0.5):
            pass
        log.info("stopping: draining the replicas")
        serve.shutdown()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        ray.shutdown()
    log.info("stopped")
    return 0


__all__ = ["LoadedBeforeTraffic", "RayOptions", "build_application", "replica_settings", "run_ray"]
