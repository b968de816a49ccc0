"""Keys, certificate chains, the tampering cases of issue #20, and a trap on ONNX Runtime.

``TAMPERS`` maps a case name to a function that damages a copy of a *signed* bundle the
way an attacker with write access could; every case must be refused by ``verify`` and by
``serve --trusted-key``. ``ort_trap_env`` makes a ``packserve serve`` subprocess log every
path ONNX Runtime is asked to open, so a test can prove a refused artifact was never opened.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from packserve.bundle import MANIFEST_NAME, sha256_file
from packserve.signing import SIGNATURE_NAME, sign_bundle


@dataclass(frozen=True)
class Keys:
    private: Path       # our signing key
    public: Path        # what a server trusts
    other_private: Path  # an attacker's key
    other_public: Path
    leaf_key: Path      # certificate-chain signing: leaf key + cert, intermediate, root CA
    leaf_cert: Path
    intermediate: Path
    root: Path
    other_root: Path


def _write_key(key: ec.EllipticCurvePrivateKey, priv: Path, pub: Path | None = None) -> None:
    priv.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if pub is not None:
        pub.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _cert(key: ec.EllipticCurvePrivateKey, cn: str, issuer: ec.EllipticCurvePrivateKey, issuer_cn: str,
          *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = (x509.KeyUsage(False, False, False, False, False, True, True, False, False) if ca
             else x509.KeyUsage(True, False, False, False, False, False, False, False, False))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca else None), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer, hashes.SHA256())
    )


def make_keys(folder: Path) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    k = Keys(*(folder / n for n in (
        "key.pem", "key.pub", "other.pem", "other.pub", "leaf.pem", "leaf.crt", "inter.crt",
        "root.crt", "other-root.crt")))
    _write_key(ec.generate_private_key(ec.SECP256R1()), k.private, k.public)
    _write_key(ec.generate_private_key(ec.SECP384R1()), k.other_private, k.other_public)
    root, inter, leaf, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    _write_key(leaf, k.leaf_key)
    pem = serialization.Encoding.PEM
    root_cn, ca_cn = "packserve test root", "packserve test ca"
    k.root.write_bytes(_cert(root, root_cn, root, root_cn, ca=True).public_bytes(pem))
    k.intermediate.write_bytes(_cert(inter, ca_cn, root, root_cn, ca=True).public_bytes(pem))
    k.leaf_cert.write_bytes(_cert(leaf, "model signer", inter, ca_cn, ca=False).public_bytes(pem))
    k.other_root.write_bytes(_cert(other, root_cn, other, root_cn, ca=True).public_bytes(pem))
    return k


def signed_copy(src: Path, dst: Path, keys: Keys) -> Path:
    shutil.copytree(src, dst)
    (dst / SIGNATURE_NAME).unlink(missing_ok=True)
    sign_bundle(dst, keys.private)
    return dst


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_manifest(bundle: Path, _keys: Keys) -> None:
    """Swap in a different artifact and fix the manifest's sha256/size: integrity still passes."""
    art = bundle / "model.onnx"
    _flip(art)
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    m["files"]["model.onnx"] = {"sha256": sha256_file(art), "size": art.stat().st_size}
    (bundle / MANIFEST_NAME).write_text(json.dumps(m, indent=2))


def _resign_other_key(bundle: Path, keys: Keys) -> None:
    sign_bundle(bundle, keys.other_private)


def _resign_claiming_our_key(bundle: Path, keys: Keys) -> None:
    """Signed by the attacker, but the signature names our key (its hint) as the signer."""
    from packserve.signing import key_fingerprint

    sign_bundle(bundle, keys.other_private)
    doc = json.loads((bundle / SIGNATURE_NAME).read_text())
    doc["verificationMaterial"]["publicKey"]["hint"] = key_fingerprint(keys.public).removeprefix("sha256:")
    (bundle / SIGNATURE_NAME).write_text(json.dumps(doc))


def _truncate_signature(bundle: Path, _keys: Keys) -> None:
    sig = bundle / SIGNATURE_NAME
    sig.write_bytes(sig.read_bytes()[: sig.stat().st_size // 2])


TAMPERS: dict[str, Callable[[Path, Keys], None]] = {
    "byte_in_artifact": lambda b, _k: _flip(b / "model.onnx"),
    "byte_in_manifest": lambda b, _k: _flip(b / MANIFEST_NAME),
    "byte_in_signature": lambda b, _k: _flip(b / SIGNATURE_NAME),
    "file_added": lambda b, _k: (b / "extra.bin").write_bytes(b"\x00" * 16),
    "git_file_added": lambda b, _k: (b / ".gitattributes").write_text("* binary\n"),
    "file_removed": lambda b, _k: (b / "model.onnx").unlink(),
    "manifest_rewritten": _rewrite_manifest,
    "signed_by_other_key": _resign_other_key,
    "other_key_claiming_ours": _resign_claiming_our_key,
    "signature_truncated": _truncate_signature,
    "signature_missing": lambda b, _k: (b / SIGNATURE_NAME).unlink(),
}


def tampered_copy(signed: Path, dst: Path, case: str, keys: Keys) -> Path:
    shutil.copytree(signed, dst)
    TAMPERS[case](dst, keys)
    return dst


ORT_TRAP = '''\
import os
log = os.environ.get("PACKSERVE_TEST_ORT_LOG")
if log:
    import onnxruntime as _ort
    _Base = _ort.InferenceSession
    class _Logged(_Base):
        def __init__(self, path_or_bytes, *args, **kwargs):
            with open(log, "a") as fh:
                fh.write(f"{path_or_bytes if isinstance(path_or_bytes, str) else '<bytes>'}\\n")
            super().__init__(path_or_bytes, *args, **kwargs)
    _ort.InferenceSession = _Logged
'''


def ort_trap_env(folder: Path) -> tuple[dict[str, str], Path]:
    """Env for a server subprocess whose every ONNX Runtime session open is logged."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(ORT_TRAP)
    log = folder / "ort-opened.log"
    log.touch()
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PACKSERVE_TEST_ORT_LOG": str(log)}, log


def opened(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line]
