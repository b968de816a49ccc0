"""``serve --trusted-key`` against real servers: start, hot reload, load API, exit codes.

Every server here runs with a ``sitecustomize`` that logs each path ONNX Runtime is asked to
open (``helpers.signing.ort_trap_env``): a refused bundle must never appear in that log,
while the good ones must (so the trap is known to work).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers.server import free_port, running_server
from helpers.signing import TAMPERS, Keys, opened, ort_trap_env, tampered_copy
from packserve.signing import key_fingerprint, load_trust_anchor

pytestmark = pytest.mark.timeout(240)

ROW = [0.5] * 15
API_KEY = "sig-key"
AUTH = {"X-API-Key": API_KEY}
REFUSED = {  # case -> the reason label the metrics carry
    "byte_in_artifact": "files_differ",
    "byte_in_manifest": "files_differ",
    "file_added": "files_differ",
    "git_file_added": "files_differ",
    "file_removed": "files_differ",
    "manifest_rewritten": "files_differ",
    "signed_by_other_key": "untrusted_signer",
    "other_key_claiming_ours": "bad_signature",
    "signature_truncated": "unreadable",
    "signature_missing": "missing",
}
assert set(REFUSED) | {"byte_in_signature"} == set(TAMPERS)


def place(src: Path, dest: Path, case: str | None, keys: Keys) -> Path:
    """A (tampered) version directory, put in place atomically (stage hidden, then rename)."""
    staging = dest.parent / f".{dest.name}.staging"
    staging.parent.mkdir(parents=True, exist_ok=True)
    if case is None:
        shutil.copytree(src, staging)
    else:
        tampered_copy(src, staging, case, keys)
    staging.rename(dest)
    return dest


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        got = head[len(name):].strip("{}")
        if ",".join(sorted(got.split(","))) == want or (not want and head == name):
            return float(value)
    return None


def test_start_refuses_every_tampered_bundle(
    signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    place(signed_bundle, repo / "good" / "1", None, keys)
    for case in TAMPERS:
        place(signed_bundle, repo / case / "1", case, keys)
    env, log = ort_trap_env(tmp_path / "trap")
    env |= {"PACKSERVE_TRUSTED_KEYS": f"{keys.root},{keys.public}", "PACKSERVE_API_KEY": API_KEY}
    with running_server(repo, "--default-model", "good", "--no-require-all-models", "--repository-api",
                        env=env) as srv, httpx.Client(base_url=srv.url, headers=AUTH) as c:
        ready = c.get("/health/ready").json()
        trusted = [load_trust_anchor(keys.root).fingerprint, key_fingerprint(keys.public)]
        assert ready["signatures"] == {"enforced": True, "trusted": trusted}
        states = {m["name"]: m for m in ready["models"]}
        assert states["good"]["state"] == "ready"
        for case in REFUSED:
            assert states[case]["state"] == "failed", case
        assert "not signed" in states["signature_missing"]["error"]
        assert "changed: model.onnx" in states["byte_in_artifact"]["error"]
        assert states["byte_in_signature"]["state"] == "failed"
        assert c.post("/predict", json={"features": ROW}).status_code == 200
        refused = c.post("/models/manifest_rewritten/predict", json={"features": ROW})
        assert refused.status_code == 503
        listed = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert listed["good"]["signed_by"] == key_fingerprint(keys.public)
        # the repository index says why
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
        assert index["signed_by_other_key"]["state"] == "UNAVAILABLE"
        assert "not trusted" in index["signed_by_other_key"]["reason"]
        # /metrics: the policy and one refusal per case, with its reason
        text = c.get("/metrics").text
        assert metric(text, "packserve_signatures_enforced") == 1.0
        assert metric(text, "packserve_trusted_keys") == 2.0
        for case, reason in REFUSED.items():
            assert metric(text, "packserve_signature_refusals_total", model=case, reason=reason,
                          version="1") == 1.0, case
        # hot reload through the load call: refused, version 1 keeps serving
        place(signed_bundle, repo / "good" / "2", "manifest_rewritten", keys)
        r = c.post("/v2/repository/models/good/load")
        assert r.status_code == 400 and "version 1 keeps serving" in r.json()["error"]
        assert "does not match its signature" in r.json()["error"]
        assert c.post("/predict", json={"features": ROW}).json()["model_version"] == "1"
        output = srv.output()
    assert "signatures enforced" in output and "refused: signature untrusted_signer" in output
    paths = opened(log)
    assert any(p.startswith(str(repo / "good" / "1")) for p in paths), paths  # the trap works
    assert [p for p in paths if not p.startswith(str(repo / "good" / "1"))] == []


def test_hot_reload_refuses_every_tampered_version(
    signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    place(signed_bundle, repo / "fraud" / "1", None, keys)
    env, log = ort_trap_env(tmp_path / "trap")
    env["PACKSERVE_TRUSTED_KEYS"] = str(keys.public)
    cases = sorted(REFUSED)
    with running_server(repo, "--repository-poll-s", "0.1", "--keep-versions", "0", env=env) as srv:
        for n, case in enumerate(cases, start=2):
            place(signed_bundle, repo / "fraud" / str(n), case, keys)
        good = len(cases) + 2
        place(signed_bundle, repo / "fraud" / str(good), None, keys)  # proves the poller ran
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = httpx.get(f"{srv.url}/metrics").text
            seen = [metric(text, "packserve_signature_refusals_total", model="fraud", version=str(n),
                           reason=REFUSED[c]) for n, c in enumerate(cases, start=2)]
            if all(seen) and metric(text, "packserve_model_state", model="fraud", version=str(good),
                                    state="ready") == 1.0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"poller did not finish: {seen}\n{srv.output()[-3000:]}")
        r = httpx.post(f"{srv.url}/predict", json={"features": ROW})
        assert r.status_code == 200
        versions = {m["version"]: m["state"] for m in httpx.get(f"{srv.url}/models").json()["models"]}
        assert versions["1"] == "ready" and versions[str(good)] == "ready"
        assert not any(str(n) in versions and versions[str(n)] == "ready" for n in range(2, good))
    paths = opened(log)
    allowed = (str(repo / "fraud" / "1"), str(repo / "fraud" / str(good)))
    assert len(paths) == 2 and all(p.startswith(allowed) for p in paths), paths


@pytest.mark.parametrize("case, code, workers", [
    ("byte_in_artifact", 6, "1"), ("signature_missing", 7, "1"), ("manifest_rewritten", 6, "2")])
def test_a_lone_refused_bundle_exits_with_the_signature_code(
    case: str, code: int, workers: str, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    bad = tampered_copy(signed_bundle, tmp_path / "fraud", case, keys)
    env, log = ort_trap_env(tmp_path / "trap")
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "serve", str(bad), "--port", str(free_port()),
         "--trusted-key", str(keys.other_public), "--trusted-key", str(keys.public), "--workers", workers],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "signature" in proc.stderr or "not signed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert opened(log) == []


def test_without_trusted_keys_signatures_are_not_enforced(signed_bundle: Path, keys: Keys,
                                                          tmp_path: Path) -> None:
    unsigned = tampered_copy(signed_bundle, tmp_path / "fraud", "signature_missing", keys)
    with running_server(unsigned) as srv:
        assert httpx.get(f"{srv.url}/health/ready").json()["signatures"] == {"enforced": False}
        text = httpx.get(f"{srv.url}/metrics").text
        assert metric(text, "packserve_signatures_enforced") == 0.0
        assert httpx.post(f"{srv.url}/predict", json={"features": ROW}).status_code == 200
        assert "signatures are not enforced" in srv.output()


def test_a_bad_trusted_key_file_is_a_config_error(signed_bundle: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pub"
    junk.write_text("hello\n")
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "serve", str(signed_bundle), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PACKSERVE_TRUSTED_KEYS": str(junk)},
    )
    assert proc.returncode == 2 and "neither a PEM public key" in proc.stderr
    assert "Traceback" not in proc.stderr
