"""Signing and verifying bundles in the OpenSSF model-signing format (issue #20), in process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import packserve
from helpers.signing import TAMPERS, Keys, tampered_copy
from packserve.bundle import MANIFEST_NAME, verify_bundle
from packserve.errors import (
    ConfigError,
    IntegrityError,
    SignatureError,
    SignatureMissingError,
)
from packserve.signing import (
    SIGNATURE_NAME,
    key_fingerprint,
    load_trust_anchor,
    read_signature,
    sign_bundle,
    verify_signature,
)


def model_signing_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_sign_then_verify(signed_bundle: Path, keys: Keys) -> None:
    info = verify_signature(signed_bundle, [keys.public])
    assert info.kind == "key" and info.verified_by is not None
    fp = key_fingerprint(keys.public)
    assert fp.startswith("sha256:") and len(fp) == 71
    assert info.key_fingerprint == fp == key_fingerprint(keys.private) == info.verified_by.fingerprint
    assert set(info.files) == {"model.onnx", MANIFEST_NAME}
    # the signature file is outside the manifest and does not disturb integrity or loading
    assert SIGNATURE_NAME not in packserve.read_manifest(signed_bundle).files
    verify_bundle(signed_bundle)
    assert packserve.load(signed_bundle).predict([[0.5] * 15]).labels.shape == (1,)


def test_one_of_several_trusted_keys(signed_bundle: Path, keys: Keys) -> None:
    info = verify_signature(signed_bundle, [keys.other_public, keys.public])
    assert info.verified_by is not None and info.verified_by.path == keys.public
    with pytest.raises(SignatureError, match="not trusted"):
        verify_signature(signed_bundle, [keys.other_public])


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampering_is_refused_before_the_runtime_opens_anything(
    case: str, signed_bundle: Path, keys: Keys, tmp_path: Path, no_ort_open: list[str]
) -> None:
    bad = tampered_copy(signed_bundle, tmp_path / "b", case, keys)
    expected = SignatureMissingError if case == "signature_missing" else SignatureError
    with pytest.raises(expected) as info:
        verify_signature(bad, [keys.public])
    assert str(tmp_path) not in info.value.message  # no host paths in messages
    with pytest.raises(expected):
        packserve.load(bad, trusted_keys=[keys.public])
    assert no_ort_open == []
    if case == "manifest_rewritten":
        verify_bundle(bad)  # sha256s match: only the signature catches this one


def test_refusal_messages_name_what_changed(signed_bundle: Path, keys: Keys, tmp_path: Path) -> None:
    def refusal(case: str) -> tuple[str, str]:
        with pytest.raises(SignatureError) as info:
            verify_signature(tampered_copy(signed_bundle, tmp_path / case, case, keys), [keys.public])
        return info.value.message, info.value.reason

    assert refusal("byte_in_artifact") == (
        "the bundle does not match its signature: file(s) changed: model.onnx", "files_differ")
    assert "changed: model.onnx, packserve.json" in refusal("manifest_rewritten")[0]
    assert refusal("file_added") == (
        "the bundle does not match its signature: file(s) added: extra.bin", "files_differ")
    assert "added: .gitattributes" in refusal("git_file_added")[0]
    assert "removed: model.onnx" in refusal("file_removed")[0]
    assert refusal("signature_truncated")[1] == "unreadable"
    msg, reason = refusal("signed_by_other_key")
    assert key_fingerprint(keys.other_public) in msg and reason == "untrusted_signer"
    msg, reason = refusal("other_key_claiming_ours")
    assert "does not verify" in msg and reason == "bad_signature"
    assert refusal("signature_missing")[1] == "missing"
    assert SignatureMissingError.exit_code == 7 and SignatureError.exit_code == 6


def test_files_the_signer_chose_to_ignore_are_still_refused(
    chapter_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    """model_signing lets a signer skip paths; packserve wants every file present signed."""
    b = tmp_path / "b"
    shutil.copytree(chapter_bundle, b)
    (b / "README.md").write_text("not signed\n")
    out = model_signing_cli("sign", "key", b, "--private_key", keys.private, "--signature",
                            b / SIGNATURE_NAME, "--ignore-paths", b / "README.md")
    assert out.returncode == 0, out.stderr
    assert model_signing_cli("verify", "key", b, "--signature", b / SIGNATURE_NAME, "--public_key",
                             keys.public, "--ignore-paths", b / "README.md").returncode == 0
    with pytest.raises(SignatureError, match="not covered by the signature: README.md"):
        verify_signature(b, [keys.public])


def test_signed_by_model_signing_cli_verifies_and_loads(
    chapter_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    b = tmp_path / "b"
    shutil.copytree(chapter_bundle, b)
    out = model_signing_cli("sign", "key", b, "--private_key", keys.private,
                            "--signature", b / SIGNATURE_NAME)
    assert out.returncode == 0, out.stderr
    assert verify_signature(b, [keys.public]).key_fingerprint == key_fingerprint(keys.public)
    assert packserve.load(b, trusted_keys=[keys.public]).manifest.name == "fraud"


def test_signed_by_packserve_verifies_with_model_signing_cli(
    signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    ok = model_signing_cli("verify", "key", signed_bundle, "--signature", signed_bundle / SIGNATURE_NAME,
                           "--public_key", keys.public)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stderr
    bad = tampered_copy(signed_bundle, tmp_path / "b", "byte_in_artifact", keys)
    no = model_signing_cli("verify", "key", bad, "--signature", bad / SIGNATURE_NAME,
                           "--public_key", keys.public)
    assert no.returncode != 0


def test_certificate_chain_signing(chapter_bundle: Path, keys: Keys, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(chapter_bundle, b)
    info = sign_bundle(b, keys.leaf_key, certificate=keys.leaf_cert, chain=[keys.intermediate])
    assert info.kind == "certificate" and info.certificate_subject == "CN=model signer"
    assert info.key_fingerprint == key_fingerprint(keys.leaf_cert)
    verified = verify_signature(b, [keys.public, keys.root])  # keys and CAs mix
    assert verified.verified_by is not None and verified.verified_by.kind == "certificate"
    with pytest.raises(SignatureError, match="trusted CA"):
        verify_signature(b, [keys.other_root])
    with pytest.raises(SignatureError, match="no trusted CA certificate"):
        verify_signature(b, [keys.public])
    ok = model_signing_cli("verify", "certificate", b, "--signature", b / SIGNATURE_NAME,
                           "--certificate_chain", keys.root)
    assert ok.returncode == 0, ok.stderr
    (b / "model.onnx").write_bytes(b"\x00" + (b / "model.onnx").read_bytes()[1:])
    with pytest.raises(SignatureError, match="changed: model.onnx"):
        verify_signature(b, [keys.root])


def test_signing_refuses_a_broken_bundle_and_bad_keys(
    signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    bad = tampered_copy(signed_bundle, tmp_path / "b", "byte_in_artifact", keys)
    with pytest.raises(IntegrityError):
        sign_bundle(bad, keys.private)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        sign_bundle(signed_bundle, garbage)
    with pytest.raises(ConfigError, match="neither a PEM public key"):
        load_trust_anchor(garbage)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trust_anchor(tmp_path / "absent.pub")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="not an elliptic-curve key"):
        load_trust_anchor(rsa_pub)


def test_keyless_sigstore_signatures_are_refused_clearly(signed_bundle: Path, keys: Keys,
                                                        tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(signed_bundle, b)
    doc = json.loads((b / SIGNATURE_NAME).read_text())
    doc["verificationMaterial"] = {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []}
    (b / SIGNATURE_NAME).write_text(json.dumps(doc))
    info = read_signature(b)
    assert info is not None and info.kind == "sigstore"
    with pytest.raises(SignatureError, match="keyless"):
        verify_signature(b, [keys.public])


def test_pack_signs_at_the_end(chapter_model, chapter_data, keys: Keys, tmp_path: Path) -> None:
    res = packserve.pack(chapter_model, tmp_path / "p", sample=chapter_data.x_test[:50], name="fraud",
                         sign_key=keys.private)
    assert res.signature is not None and res.signature.key_fingerprint == key_fingerprint(keys.public)
    verify_signature(res.path, [keys.public])
    with pytest.raises(ConfigError):  # checked before any work: nothing is written
        packserve.pack(chapter_model, tmp_path / "q", sample=chapter_data.x_test[:50],
                       sign_key=keys.public)
    assert not (tmp_path / "q").exists()
