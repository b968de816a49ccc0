"""Deployment shapes around the one app (:func:`packserve.serve.create_app`).

* ``packserve serve --workers N`` — several processes on one host (:mod:`packserve.serve.workers.supervisor`);
* :mod:`packserve.deploy.ray` — Ray Serve replicas wrapping ``create_app`` (extra ``ray``);
* :mod:`packserve.deploy.kserve` — KServe ``ServingRuntime`` + ``InferenceService`` manifests;
* :mod:`packserve.deploy.docker` — a container build context (Dockerfile, .dockerignore, models).

This layer sits above serve (serve never imports it). Submodules are imported on use: Ray is
an optional, heavy dependency.
"""

from __future__ import annotations

from packserve.deploy.target import ModelRef, Target, dns_name, inspect_target

__all__ = ["ModelRef", "Target", "dns_name", "inspect_target"]
