"""KServe manifests: offline schema validation, then the container command run as a plain process."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from helpers.server import free_port
from packserve.deploy.kserve import kserve_manifests, write_kserve
from packserve.deploy.target import inspect_target

SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = kv.latest_version()


def console_script(name: str) -> str:
    """``packserve`` as installed next to this interpreter (what the image's PATH finds)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def k8s_validator(filename: str) -> jsonschema.Draft202012Validator:
    """A validator for one built-in Kubernetes definition (strict: unknown fields are errors)."""
    folder = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = kv.schema_contents(f"{folder}/{filename}", K8S_VERSION)
    defs = kv.schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kserve_validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


CONTAINER = k8s_validator("container-v1.json")
RESOURCES = k8s_validator("resourcerequirements-v1.json")
RUNTIME = kserve_validator("servingruntime.schema.json")
ISVC = kserve_validator("inferenceservice.schema.json")


def errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def validate_all(runtime: dict[str, Any], isvc: dict[str, Any]) -> list[str]:
    found = errors(RUNTIME, runtime) + errors(ISVC, isvc)
    for c in runtime["spec"]["containers"]:
        found += errors(CONTAINER, c)
    found += errors(RESOURCES, isvc["spec"]["predictor"]["model"]["resources"])
    return found


@pytest.fixture(scope="module")
def written(chapter_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("kserve")
    paths = write_kserve(inspect_target(chapter_bundle), out, image="registry.example/packserve:0.1.0")
    assert [p.name for p in paths] == ["servingruntime.yaml", "inferenceservice.yaml"]
    runtime, isvc = (yaml.safe_load(p.read_text()) for p in paths)
    return runtime, isvc


def test_manifests_validate_offline(written: tuple[dict, dict]) -> None:
    runtime, isvc = written
    assert validate_all(runtime, isvc) == []
    # the pod KServe builds from the runtime: a built-in kind, through kubernetes-validate's API
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fraud-predictor"},
           "spec": {"containers": copy.deepcopy(runtime["spec"]["containers"])}}
    kv.validate(pod, K8S_VERSION, strict=True)
    pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8080]
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "where, mutate",
    [
        ("runtime", lambda r, i: r["spec"].update(protocolVersions=["v3"])),
        ("runtime", lambda r, i: r["spec"]["containers"][0]["ports"][0].update(containerPort="8080")),
        ("runtime", lambda r, i: r["spec"]["containers"][0].update(livenessprobe={})),
        ("runtime", lambda r, i: r["spec"]["containers"][0]["securityContext"].update(runAsNonRoot="yes")),
        ("runtime", lambda r, i: r["metadata"].update(name="Packserve_Runtime")),
        ("isvc", lambda r, i: i["spec"]["predictor"]["model"].pop("modelFormat")),
        ("isvc", lambda r, i: i["spec"]["predictor"]["model"].update(protocolVersion="v9")),
        ("isvc", lambda r, i: i["spec"]["predictor"]["model"]["resources"].update(request={})),
        ("isvc", lambda r, i: i["spec"].update(predicter={})),
    ],
)
def test_the_validation_catches_mistakes(written: tuple[dict, dict], where: str, mutate: Any) -> None:
    runtime, isvc = copy.deepcopy(written)
    mutate(runtime, isvc)
    assert validate_all(runtime, isvc) != []


def test_manifests_follow_the_kserve_contract(written: tuple[dict, dict]) -> None:
    runtime, isvc = written
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2"] and spec["multiModel"] is False
    fmt = spec["supportedModelFormats"][0]
    c = spec["containers"][0]
    assert c["name"] == "kserve-container" and c["image"] == "registry.example/packserve:0.1.0"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PACKSERVE_MODEL_PATH"] == "/mnt/models" and env["PACKSERVE_PORT"] == "8080"
    assert env["PACKSERVE_HOST"] == "0.0.0.0"
    # SIGTERM -> grace + drain must end before Kubernetes' default 30 s kill
    assert float(env["PACKSERVE_SHUTDOWN_GRACE_S"]) + float(env["PACKSERVE_DRAIN_TIMEOUT_S"]) < 30
    assert c["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0 and sc["allowPrivilegeEscalation"] is False
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    model = isvc["spec"]["predictor"]["model"]
    assert isvc["metadata"]["name"] == "fraud"
    assert model["modelFormat"] == {"name": fmt["name"], "version": fmt["version"]}
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    assert "CHANGE-ME" in model["storageUri"]  # a placeholder the user must edit


def test_repository_names_and_storage_uri(repo_of_two: Path) -> None:
    runtime, isvc = kserve_manifests(inspect_target(repo_of_two), image="img:1",
                                     storage_uri="s3://bucket/models/repo")
    assert isvc["metadata"]["name"] == "my-models"  # the folder's name, made DNS-safe
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/models/repo"
    assert validate_all(runtime, isvc) == []


@pytest.fixture(scope="module")
def repo_of_two(chapter_bundle: Path, regressor_bundle: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repos") / "My_Models"
    shutil.copytree(chapter_bundle, repo / "fraud" / "1")
    shutil.copytree(regressor_bundle, repo / "price" / "1")
    return repo


def test_the_container_command_serves_v2(written: tuple[dict, dict], chapter_bundle: Path, tmp_path: Path,
                                         launch: Any) -> None:
    """Run the runtime's container exactly as written: its command and env, with /mnt/models
    pointing at the bundle (as the storage initializer would) and 8080 swapped for a free port."""
    import tritonclient.http as triton

    runtime, _ = written
    c = runtime["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    mnt = tmp_path / "mnt" / "models"
    shutil.copytree(chapter_bundle, mnt)  # what KServe's storage initializer leaves there
    port = free_port()
    env.update(PACKSERVE_MODEL_PATH=str(mnt), PACKSERVE_PORT=str(port))
    cmd = [console_script(c["command"][0]), *c["command"][1:], *c.get("args", [])]
    ready = c["readinessProbe"]["httpGet"]["path"]
    with launch(cmd, env, url=f"http://127.0.0.1:{port}", ready_path=ready) as srv:
        assert httpx.get(f"{srv.url}{c['livenessProbe']['httpGet']['path']}").status_code == 200
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud")
        meta = client.get_model_metadata("fraud")
        spec = meta["inputs"][0]
        x = np.zeros([1, *[d for d in spec["shape"][1:]]], dtype=np.float32)
        inp = triton.InferInput(spec["name"], list(x.shape), spec["datatype"])
        inp.set_data_from_numpy(x)
        result = client.infer("fraud", [inp])
        outputs = {o["name"] for o in result.get_response()["outputs"]}
        assert outputs, result.get_response()
        client.close()
    assert srv.proc.returncode == 0, srv.output()[-2000:]


def test_cli_writes_valid_manifests(chapter_bundle: Path, tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "deploy", "kserve", str(chapter_bundle), "--image", "img:2",
         "--out", str(tmp_path), "--name", "Fraud_Detector", "--storage-uri", "gs://b/fraud"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    runtime = yaml.safe_load((tmp_path / "servingruntime.yaml").read_text())
    isvc = yaml.safe_load((tmp_path / "inferenceservice.yaml").read_text())
    assert validate_all(runtime, isvc) == []
    assert isvc["metadata"]["name"] == "fraud-detector"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "gs://b/fraud"
    missing = subprocess.run(
        [sys.executable, "-m", "packserve", "deploy", "kserve", str(tmp_path / "nope"), "--image", "i"],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
