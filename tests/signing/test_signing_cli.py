"""``packserve sign`` / ``verify`` / ``inspect`` / ``pack --sign-key``: output and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization

from helpers.signing import Keys, tampered_copy
from packserve.signing import SIGNATURE_NAME, key_fingerprint, verify_signature


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "packserve", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_sign_verify_and_inspect(chapter_bundle: Path, keys: Keys, tmp_path: Path) -> None:
    b = tmp_path / "fraud"
    shutil.copytree(chapter_bundle, b)
    unsigned = cli("verify", b, "--key", keys.public)
    assert unsigned.returncode == 7 and "not signed" in unsigned.stderr
    assert "none (unsigned)" in cli("inspect", b).stdout
    signed = cli("sign", b, "--key", keys.private)
    fp = key_fingerprint(keys.public)
    assert signed.returncode == 0 and fp in signed.stdout
    ok = cli("verify", b, "-k", keys.other_public, "-k", keys.public)
    assert ok.returncode == 0 and f"signed by key {fp}" in ok.stdout
    doc = json.loads(cli("verify", b, "--key", keys.public, "--json").stdout)
    assert doc["signature"]["verified"] is True and doc["signature"]["files"] == ["model.onnx",
                                                                                 "packserve.json"]
    shown = cli("inspect", b)
    assert shown.returncode == 0 and f"by key {fp}" in shown.stdout and "not verified" in shown.stdout
    assert "valid, signed by key" in cli("inspect", b, "--key", keys.public).stdout
    wrong = cli("inspect", b, "--key", keys.other_public)
    assert wrong.returncode == 6 and "not trusted" in wrong.stderr
    bad = tampered_copy(b, tmp_path / "bad", "byte_in_artifact", keys)
    refused = cli("verify", bad, "--key", keys.public)
    assert refused.returncode == 6 and "changed: model.onnx" in refused.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("x\n")
    assert cli("verify", b, "--key", junk).returncode == 2
    assert cli("sign", b, "--key", junk).returncode == 2


def test_certificate_chain_and_encrypted_keys(chapter_bundle: Path, keys: Keys, tmp_path: Path) -> None:
    b = tmp_path / "fraud"
    shutil.copytree(chapter_bundle, b)
    assert cli("sign", b, "--key", keys.leaf_key, "--chain", keys.intermediate).returncode == 2
    signed = cli("sign", b, "--key", keys.leaf_key, "--cert", keys.leaf_cert, "--chain", keys.intermediate)
    assert signed.returncode == 0 and "CN=model signer" in signed.stdout
    ok = cli("verify", b, "--key", keys.root)
    assert ok.returncode == 0 and "via CA root.crt" in ok.stdout
    assert "certificate CN=model signer" in cli("inspect", b).stdout
    # an encrypted key: its password comes from the environment, never from argv
    enc = tmp_path / "enc.pem"
    key = serialization.load_pem_private_key(keys.private.read_bytes(), None)
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"s3cret")))
    no_pw = cli("sign", b, "--key", enc)
    assert no_pw.returncode == 2 and "encrypted" in no_pw.stderr
    assert cli("sign", b, "--key", enc, env={"PACKSERVE_SIGNING_KEY_PASSWORD": "s3cret"}).returncode == 0
    verify_signature(b, [keys.public])


def test_pack_sign_key(chapter_model, chapter_data, keys: Keys, tmp_path: Path) -> None:
    chapter_model.save_model(tmp_path / "fraud.json")
    np.save(tmp_path / "sample.npy", chapter_data.x_test[:50])
    out = cli("pack", tmp_path / "fraud.json", tmp_path / "b", "--sample", tmp_path / "sample.npy",
              "--sign-key", keys.private)
    assert out.returncode == 0, out.stderr
    assert key_fingerprint(keys.public) in out.stdout and (tmp_path / "b" / SIGNATURE_NAME).is_file()
    assert cli("verify", tmp_path / "b", "--key", keys.public).returncode == 0
    refused = cli("pack", tmp_path / "fraud.json", tmp_path / "c", "--sample", tmp_path / "sample.npy",
                  "--sign-key", keys.public)
    assert refused.returncode == 2 and not (tmp_path / "c").exists()
