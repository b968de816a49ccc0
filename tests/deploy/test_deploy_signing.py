"""Docker and KServe outputs carry the signature and the trusted keys (issue #20).

No container engine or cluster here: the outputs are checked for content, validated offline,
and their server command is run as a plain process with the paths they name mapped to local
copies — exactly the files an image or a pod would hold.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_validate import utils as kv
from test_docker import env_of, parse_dockerfile
from test_kserve import K8S_VERSION, console_script, validate_all

from helpers.server import free_port
from helpers.signing import Keys, make_keys, signed_copy, tampered_copy
from packserve.deploy.docker import IMAGE_TRUST_DIR, write_docker
from packserve.deploy.kserve import TRUST_DIR, write_kserve
from packserve.deploy.target import inspect_target
from packserve.errors import SignatureError, SignatureMissingError
from packserve.signing import SIGNATURE_NAME, key_fingerprint

ROW = [0.5] * 15


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(chapter_bundle: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signed_copy(chapter_bundle, tmp_path_factory.mktemp("signed") / "fraud", keys)


def remap(env: dict[str, str], prefix: str, local: Path) -> dict[str, str]:
    """Point the image/pod paths under ``prefix`` at their local copies."""
    return {k: v.replace(prefix, str(local)) for k, v in env.items()}


def test_docker_context_enforces_signatures(signed: Path, keys: Keys, tmp_path: Path, launch: Any) -> None:
    out = tmp_path / "ctx"
    written = write_docker(inspect_target(signed), out, trusted_keys=[keys.public])
    assert out / "trust" in written and (out / "model" / SIGNATURE_NAME).is_file()
    assert (out / "trust" / keys.public.name).read_bytes() == keys.public.read_bytes()
    ignore = (out / ".dockerignore").read_text().splitlines()
    assert "!trust/" in ignore and "!trust/*" in ignore
    ins = parse_dockerfile((out / "Dockerfile").read_text())
    copies = [rest for w, rest in ins if w == "COPY"]
    assert f"--chown=root:root trust/ {IMAGE_TRUST_DIR}/" in copies
    words = [w for w, _ in ins]
    assert max(i for i, w in enumerate(words) if w == "COPY") < words.index("USER")  # root-owned
    env = env_of(ins)
    assert env["PACKSERVE_TRUSTED_KEYS"] == f"{IMAGE_TRUST_DIR}/{keys.public.name}"
    # the image's CMD with the image's ENV, /models and the trust dir mapped to the context
    port = free_port()
    env = remap(env, IMAGE_TRUST_DIR, out / "trust") | {
        "PACKSERVE_MODEL_PATH": str(out / "model"), "PACKSERVE_PORT": str(port)}
    cmd = json.loads(next(rest for w, rest in ins if w == "CMD"))
    with launch([console_script(cmd[0]), *cmd[1:]], env, url=f"http://127.0.0.1:{port}",
                ready_path="/health/ready") as srv:
        ready = httpx.get(f"{srv.url}/health/ready").json()
        assert ready["signatures"] == {"enforced": True, "trusted": [key_fingerprint(keys.public)]}
        assert httpx.post(f"{srv.url}/predict", json={"features": ROW}).status_code == 200
    # the same image with a tampered model refuses to start, with the signature exit code
    (out / "model" / "model.onnx").write_bytes(b"\x00" + (out / "model" / "model.onnx").read_bytes()[1:])
    proc = subprocess.run([console_script(cmd[0]), *cmd[1:]], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 6 and "does not match its signature" in proc.stderr


def test_docker_refuses_to_package_what_its_server_would_refuse(
    signed: Path, chapter_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    with pytest.raises(SignatureMissingError):
        write_docker(inspect_target(chapter_bundle), tmp_path / "a", trusted_keys=[keys.public])
    assert not (tmp_path / "a").exists()
    bad = tampered_copy(signed, tmp_path / "bad", "manifest_rewritten", keys)
    with pytest.raises(SignatureError):
        write_docker(inspect_target(bad), tmp_path / "b", trusted_keys=[keys.public])
    assert not (tmp_path / "b").exists()
    # signed but not enforced: the signature still travels, and the Dockerfile says so
    write_docker(inspect_target(signed), tmp_path / "c")
    assert (tmp_path / "c" / "model" / SIGNATURE_NAME).is_file()
    text = (tmp_path / "c" / "Dockerfile").read_text()
    assert "signatures NOT enforced" in text and "PACKSERVE_TRUSTED_KEYS=" not in text


def test_kserve_outputs_enforce_signatures(signed: Path, keys: Keys, tmp_path: Path, launch: Any) -> None:
    paths = write_kserve(inspect_target(signed), tmp_path / "k", image="img:1", trusted_keys=[keys.public])
    assert [p.name for p in paths] == ["servingruntime.yaml", "inferenceservice.yaml", "trusted-keys.yaml"]
    runtime, isvc, cm = (yaml.safe_load(p.read_text()) for p in paths)
    assert validate_all(runtime, isvc) == []
    kv.validate(cm, K8S_VERSION, strict=True)
    c = runtime["spec"]["containers"][0]
    volume = runtime["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert c["volumeMounts"] == [{"name": volume["name"], "mountPath": TRUST_DIR, "readOnly": True}]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fraud-predictor"},
           "spec": {"containers": [c], "volumes": runtime["spec"]["volumes"]}}
    kv.validate(pod, K8S_VERSION, strict=True)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PACKSERVE_TRUSTED_KEYS"] == f"{TRUST_DIR}/{keys.public.name}"
    # the container command, with /mnt/models and the mounted ConfigMap as local folders
    mounted = tmp_path / "trusted"
    mounted.mkdir()
    for name, pem in cm["data"].items():
        (mounted / name).write_text(pem)
    mnt = tmp_path / "mnt"
    shutil.copytree(signed, mnt)  # the storage initializer copies model.sig with the bundle
    port = free_port()
    env = remap(env, TRUST_DIR, mounted) | {"PACKSERVE_MODEL_PATH": str(mnt), "PACKSERVE_PORT": str(port)}
    with launch([console_script(c["command"][0]), *c["command"][1:]], env, url=f"http://127.0.0.1:{port}",
                ready_path=c["readinessProbe"]["httpGet"]["path"]) as srv:
        assert httpx.get(f"{srv.url}/health/ready").json()["signatures"]["enforced"] is True
    # unsigned bundles are refused while writing the manifests
    (mnt / SIGNATURE_NAME).unlink()
    with pytest.raises(SignatureMissingError):
        write_kserve(inspect_target(mnt), tmp_path / "k2", image="img:1", trusted_keys=[keys.public])


def test_cli_deploy_takes_trusted_keys(signed: Path, keys: Keys, tmp_path: Path) -> None:
    docker = subprocess.run(
        [sys.executable, "-m", "packserve", "deploy", "docker", str(signed), "--out", str(tmp_path / "d"),
         "--trusted-key", str(keys.public), "--trusted-key", str(keys.root)],
        capture_output=True, text=True, timeout=120)
    assert docker.returncode == 0, docker.stderr
    assert sorted(p.name for p in (tmp_path / "d" / "trust").iterdir()) == sorted(
        [keys.public.name, keys.root.name])
    kserve = subprocess.run(
        [sys.executable, "-m", "packserve", "deploy", "kserve", str(signed), "--image", "i:1",
         "--out", str(tmp_path / "k"), "--trusted-key", str(keys.other_public)],
        capture_output=True, text=True, timeout=120)
    assert kserve.returncode == 6 and "not trusted" in kserve.stderr and "Traceback" not in kserve.stderr
