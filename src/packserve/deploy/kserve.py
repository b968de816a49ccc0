"""KServe manifests: a ``ServingRuntime`` running ``packserve serve`` and an ``InferenceService``.

KServe's container contract is what Triton and MLServer ship as runtimes: an Open Inference
Protocol (V2) server on port 8080 that loads what the storage initializer put in
``/mnt/models``. packserve meets it with plain settings (``PACKSERVE_MODEL_PATH``,
``PACKSERVE_PORT``... the one :class:`~packserve.serve.settings.ServeSettings`), no special
mode: the container runs the same ``packserve serve`` as everywhere else.

Shutdown: Kubernetes sends SIGTERM and kills after ``terminationGracePeriodSeconds`` (30 s by
default), so the runtime sets grace + drain timeout below that.

Signatures: each bundle's ``model.sig`` sits in its folder, so it reaches ``/mnt/models`` with
the model. With trusted keys, a ConfigMap holds the public keys, the runtime mounts it
read-only and ``PACKSERVE_TRUSTED_KEYS`` names them: the pod refuses what they did not sign.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packserve.deploy.target import Target, check_signatures, dns_name, trusted_file_names

KSERVE_MODEL_DIR = "/mnt/models"
KSERVE_PORT = 8080
#: the model format the runtime declares and the InferenceService asks for
MODEL_FORMAT = "packserve"
MODEL_FORMAT_VERSION = "1"  # manifest schema_version
RUNTIME_UID = 10001
STORAGE_PLACEHOLDER = "s3://CHANGE-ME/models/{name}"
TRUST_DIR = "/etc/packserve/trusted"
TRUST_VOLUME = "trusted-keys"


def container_settings(
    *, grace_s: float = 5.0, drain_s: float = 20.0, trusted: Sequence[str] = ()
) -> dict[str, str]:
    """ServeSettings fields for the KServe contract, as ``PACKSERVE_*`` env values."""
    from packserve.serve.settings import ServeSettings

    fields = {
        "model_path": KSERVE_MODEL_DIR,
        "host": "0.0.0.0",  # noqa: S104 - a container listens on its pod IP
        "port": str(KSERVE_PORT),
        "shutdown_grace_s": str(grace_s),
        "drain_timeout_s": str(drain_s),
    }
    if trusted:
        fields["trusted_keys"] = ",".join(f"{TRUST_DIR}/{n}" for n in trusted)
    unknown = set(fields) - set(ServeSettings.model_fields)
    assert not unknown, unknown  # the generator must follow the one settings class
    return {f"PACKSERVE_{k.upper()}": v for k, v in fields.items()}


def _resources(cpu: str, memory: str, cpu_limit: str | None, memory_limit: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    if limits:
        res["limits"] = limits
    return res


def serving_runtime(
    *, name: str, image: str, cpu: str = "1", memory: str = "1Gi",
    cpu_limit: str | None = None, memory_limit: str | None = "2Gi",
    trusted_configmap: str | None = None, trusted: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``ServingRuntime`` (serving.kserve.io/v1alpha1); with ``trusted`` key file names in
    the ConfigMap ``trusted_configmap``, mounted at ``TRUST_DIR`` and enforced."""
    probe_port = KSERVE_PORT
    env = [{"name": k, "value": v} for k, v in container_settings(trusted=trusted).items()]
    runtime: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "packserve", "app.kubernetes.io/component": "runtime"},
            "annotations": {"prometheus.kserve.io/port": str(KSERVE_PORT),
                            "prometheus.kserve.io/path": "/metrics"},
        },
        "spec": {
            "supportedModelFormats": [
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": True}
            ],
            "protocolVersions": ["v2"],
            "multiModel": False,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image,
                    "command": ["packserve", "serve"],
                    "env": env,
                    "ports": [{"containerPort": KSERVE_PORT, "name": "http", "protocol": "TCP"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": probe_port},
                        "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3,
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/v2/health/live", "port": probe_port},
                        "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
                    },
                    "resources": _resources(cpu, memory, cpu_limit, memory_limit),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUNTIME_UID,
                        "runAsGroup": RUNTIME_UID,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }
    if trusted:
        spec = runtime["spec"]
        spec["volumes"] = [{"name": TRUST_VOLUME, "configMap": {"name": trusted_configmap}}]
        spec["containers"][0]["volumeMounts"] = [
            {"name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": True}
        ]
    return runtime


def trusted_keys_configmap(name: str, keys: Mapping[str, str]) -> dict[str, Any]:
    """A ConfigMap holding the trusted public keys (file name -> PEM text)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "packserve"}},
        "data": dict(keys),
    }


def inference_service(
    *, name: str, runtime: str, storage_uri: str, cpu: str = "1", memory: str = "1Gi",
    cpu_limit: str | None = None, memory_limit: str | None = "2Gi",
    min_replicas: int = 1, max_replicas: int = 3,
) -> dict[str, Any]:
    """The ``InferenceService`` (serving.kserve.io/v1beta1) using that runtime."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "packserve"}},
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "model": {
                    "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
                    "runtime": runtime,
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "resources": _resources(cpu, memory, cpu_limit, memory_limit),
                },
            }
        },
    }


def kserve_manifests(
    target: Target, *, image: str, name: str | None = None, storage_uri: str | None = None,
    cpu: str = "1", memory: str = "1Gi", memory_limit: str | None = "2Gi",
    min_replicas: int = 1, max_replicas: int = 3, trusted: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ServingRuntime, InferenceService) for a bundle or repository. ``trusted``: key file
    names in the ConfigMap :func:`trusted_configmap_name` (see :func:`write_kserve`)."""
    isvc = dns_name(name) if name else target.default_name
    runtime = runtime_name(isvc)
    uri = storage_uri or STORAGE_PLACEHOLDER.format(name=isvc)
    kw: dict[str, Any] = {"cpu": cpu, "memory": memory, "memory_limit": memory_limit}
    return (
        serving_runtime(name=runtime, image=image, trusted=trusted,
                        trusted_configmap=trusted_configmap_name(runtime), **kw),
        inference_service(name=isvc, runtime=runtime, storage_uri=uri,
                          min_replicas=min_replicas, max_replicas=max_replicas, **kw),
    )


def runtime_name(isvc: str) -> str:
    return f"packserve-{isvc}"[:63].rstrip("-")


def trusted_configmap_name(runtime: str) -> str:
    return f"{runtime[:50].rstrip('-')}-trusted-keys"


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml  # type: ignore[import-untyped]

    return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def write_kserve(
    target: Target, out_dir: str | Path, *, trusted_keys: Sequence[str | Path] = (), **options: Any
) -> list[Path]:
    """Write ``servingruntime.yaml`` and ``inferenceservice.yaml`` (and, with ``trusted_keys``,
    ``trusted-keys.yaml``: the ConfigMap to apply first); returns their paths.

    With trusted keys every bundle is verified here first: the storage will hold these files,
    and a pod enforcing signatures must not be handed one it would refuse.
    """
    anchors = check_signatures(target.path, trusted_keys)
    names = trusted_file_names(anchors)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runtime, isvc = kserve_manifests(target, trusted=names, **options)
    docs = [runtime, isvc]
    paths = [out / "servingruntime.yaml", out / "inferenceservice.yaml"]
    if anchors:
        keys = {n: a.path.read_text() for n, a in zip(names, anchors, strict=True)}
        docs.append(trusted_keys_configmap(trusted_configmap_name(runtime["metadata"]["name"]), keys))
        paths.append(out / "trusted-keys.yaml")
    for path, doc in zip(paths, docs, strict=True):
        path.write_text(to_yaml(doc))
    return paths


__all__ = [
    "KSERVE_MODEL_DIR",
    "KSERVE_PORT",
    "MODEL_FORMAT",
    "container_settings",
    "inference_service",
    "kserve_manifests",
    "serving_runtime",
    "to_yaml",
    "trusted_keys_configmap",
    "write_kserve",
]
