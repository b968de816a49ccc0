"""Bundle signatures in the OpenSSF model-signing format (``model.sig`` in the bundle).

The manifest's sha256s catch a flipped byte but not someone who rewrites the manifest too;
a signature proves *who* made the bundle. The format — a Sigstore bundle around a DSSE
envelope around an in-toto statement listing every file's digest — and its cryptography
belong to the ``model_signing`` library (the ``signing`` extra); this module only decides
what packserve signs and trusts, fully offline (no transparency log, no network):

* ``model.sig`` sits in the bundle directory. It cannot be listed in ``packserve.json``
  (it signs that file), and bundle integrity checks only the files the manifest lists, so
  it never breaks :func:`~packserve.bundle.verify_bundle`.
* Everything else in the directory is signed (git files included), and a signature is
  accepted only if it covers *every* file present: an added file is refused even when the
  signer had told ``model_signing`` to ignore it.
* A trust anchor is an EC public key (P-256/384/521) or a CA certificate (for signatures
  made with a certificate chain). Key fingerprints are ``sha256:`` of the key's PEM
  SubjectPublicKeyInfo — the key hint ``model_signing`` writes into the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packserve.bundle import read_manifest, sha256_file, verify_bundle
from packserve.errors import (
    ConfigError,
    MissingDependencyError,
    SignatureError,
    SignatureMissingError,
)

SIGNATURE_NAME = "model.sig"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")

PathLike = str | os.PathLike[str]
AnchorKind = Literal["key", "certificate"]


def _lib(name: str) -> Any:
    """Import a ``model_signing`` module on first use: it pulls sigstore (~1 s of imports)."""
    try:
        importlib.import_module("OpenSSL")  # model_signing needs it but does not declare it
        return importlib.import_module(f"model_signing.{name}")
    except ImportError as exc:
        raise MissingDependencyError("model-signing", "signing") from exc


# --- keys, certificates, fingerprints -------------------------------------------------------


def _pem_fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(pem).hexdigest()


def _check_curve(public_key: Any, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{what} is not an elliptic-curve key (model signing uses EC P-256/384/521)")
    if public_key.curve.name not in SUPPORTED_CURVES:
        raise ConfigError(f"{what} uses the unsupported curve {public_key.curve.name}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path.name!r}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class TrustAnchor:
    """What a verifier trusts: one EC public key, or CA certificate(s) for certificate chains."""

    path: Path
    kind: AnchorKind
    fingerprint: str
    """``sha256:`` of the key's PEM SPKI, or of the first certificate's DER."""

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.fingerprint[:19]})"


def load_trust_anchor(path: PathLike) -> TrustAnchor:
    """Read a PEM public key or CA certificate; :class:`ConfigError` if it is neither."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    p = Path(path)
    data = _read(p, "trusted key")
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ConfigError(f"trusted certificate {p.name!r} is not a valid PEM certificate") from exc
        return TrustAnchor(p, "certificate", "sha256:" + certs[0].fingerprint(hashes.SHA256()).hex())
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(
            f"trusted key {p.name!r} is neither a PEM public key nor a PEM CA certificate"
        ) from exc
    _check_curve(key, f"trusted key {p.name!r}")
    return TrustAnchor(p, "key", _pem_fingerprint(key))


def load_trust_anchors(paths: Iterable[PathLike | TrustAnchor]) -> tuple[TrustAnchor, ...]:
    return tuple(p if isinstance(p, TrustAnchor) else load_trust_anchor(p) for p in paths)


def key_fingerprint(path: PathLike) -> str:
    """Fingerprint of a PEM public key, private key or certificate (the signer's public key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    data = _read(p, "key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return _pem_fingerprint(x509.load_pem_x509_certificate(data).public_key())
        if b"PRIVATE KEY-----" in data:
            return _pem_fingerprint(serialization.load_pem_private_key(data, None).public_key())
        return _pem_fingerprint(serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p.name!r} is not a readable PEM key or certificate") from exc


def trust_summary(anchors: Sequence[TrustAnchor]) -> dict[str, Any]:
    """What a server reports about enforcement (readiness, logs): nothing secret, fingerprints."""
    if not anchors:
        return {"enforced": False}
    return {"enforced": True, "trusted": [a.fingerprint for a in anchors]}


# --- what a signature file says (read, not yet verified) ------------------------------------


@dataclass(frozen=True)
class SignatureInfo:
    """A signature's claims; ``verified_by`` is set only after :func:`verify_signature`."""

    kind: Literal["key", "certificate", "sigstore"]
    key_fingerprint: str | None
    files: dict[str, str]
    """Signed file name -> digest (hex), as the signed statement lists them."""
    hash_type: str
    certificate_subject: str | None = None
    certificate_fingerprint: str | None = None
    verified_by: TrustAnchor | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key_fingerprint": self.key_fingerprint,
            "certificate_subject": self.certificate_subject,
            "certificate_fingerprint": self.certificate_fingerprint,
            "hash_type": self.hash_type,
            "files": sorted(self.files),
            "verified": self.verified_by is not None,
            "verified_by": None if self.verified_by is None else self.verified_by.fingerprint,
        }


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(value, validate=True)


def _cert_der(raw: Any) -> bytes:
    """model_signing base64-encodes the DER before protobuf's JSON base64s it again."""
    once = _b64(raw)
    try:
        return base64.b64decode(once, validate=True)
    except (binascii.Error, ValueError):
        return once


def parse_signature(data: bytes) -> SignatureInfo:
    """Read what a signature file claims, without checking it. :class:`SignatureError` if unreadable."""
    try:
        doc = json.loads(data)
        material = doc["verificationMaterial"]
        statement = json.loads(_b64(doc["dsseEnvelope"]["payload"]))
        predicate = statement["predicate"]
        files = {str(r["name"]): str(r["digest"]) for r in predicate["resources"]}
        hash_type = str(predicate["serialization"]["hash_type"])
        if "publicKey" in material:
            hint = material["publicKey"].get("hint")
            return SignatureInfo("key", f"sha256:{hint}" if hint else None, files, hash_type)
        if "x509CertificateChain" in material:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes

            leaf = x509.load_der_x509_certificate(
                _cert_der(material["x509CertificateChain"]["certificates"][0]["rawBytes"])
            )
            return SignatureInfo(
                "certificate", _pem_fingerprint(leaf.public_key()), files, hash_type,
                certificate_subject=leaf.subject.rfc4514_string(),
                certificate_fingerprint="sha256:" + leaf.fingerprint(hashes.SHA256()).hex(),
            )
        return SignatureInfo("sigstore", None, files, hash_type)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise SignatureError(
            f"the signature file {SIGNATURE_NAME} is unreadable (truncated or not a model-signing "
            "signature)", reason="unreadable",
        ) from exc


def read_signature(bundle_dir: PathLike) -> SignatureInfo | None:
    """The bundle's signature claims, or ``None`` if it has no ``model.sig`` (for ``inspect``)."""
    path = Path(bundle_dir) / SIGNATURE_NAME
    if not path.is_file():
        return None
    return parse_signature(path.read_bytes())


# --- signing ----------------------------------------------------------------------------


def _hashing_config() -> Any:
    """Sign every file but the signature itself: git files too (a bundle has none legitimately)."""
    return _lib("hashing").Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False)


def sign_bundle(
    bundle_dir: PathLike,
    private_key: PathLike,
    *,
    certificate: PathLike | None = None,
    chain: Sequence[PathLike] = (),
    password: str | None = None,
) -> SignatureInfo:
    """Verify the bundle's integrity, then write ``model.sig`` (replacing an older one).

    With ``certificate`` (the key's signing certificate, PEM) and ``chain`` (intermediate and
    root certificates), the signature carries the certificate chain instead of a key hint.
    """
    root = Path(bundle_dir)
    verify_bundle(root, read_manifest(root))  # never sign a bundle that is already broken
    key_path = Path(private_key)
    check_private_key(key_path, password)
    config = _lib("signing").Config().set_hashing_config(_hashing_config())
    if certificate is not None and password:
        raise ConfigError("model_signing cannot sign with a certificate and an encrypted key: "
                          "use an unencrypted key (kept on the signing machine) for --cert")
    try:
        if certificate is None:  # the library hands the password to cryptography, which wants bytes
            config.use_elliptic_key_signer(private_key=key_path,
                                           password=password.encode() if password else None)
        else:
            config.use_certificate_signer(
                private_key=key_path, signing_certificate=Path(certificate),
                certificate_chain=[Path(c) for c in chain],
            )
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"cannot sign with {key_path.name!r}: {exc}") from exc
    # written beside the bundle, then moved in: a half-written model.sig is never visible
    with tempfile.TemporaryDirectory(prefix=".packserve-sign-", dir=root.parent) as tmp:
        staged = Path(tmp) / SIGNATURE_NAME
        config.sign(root, staged)
        os.replace(staged, root / SIGNATURE_NAME)
    info = read_signature(root)
    assert info is not None
    return info


def check_private_key(private_key: PathLike, password: str | None = None) -> None:
    """Clear messages for the usual mistakes, before any work (``pack`` checks first)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(private_key)
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise ConfigError(f"private key {path.name!r}: {exc} (CLI: the password comes from "
                          "$PACKSERVE_SIGNING_KEY_PASSWORD)") from exc
    except ValueError as exc:
        raise ConfigError(
            f"{path.name!r} is not a PEM private key (or its password is wrong)"
        ) from exc
    _check_curve(key.public_key(), f"private key {path.name!r}")


# --- verifying ---------------------------------------------------------------------------


def verify_signature(
    bundle_dir: PathLike, trusted: Sequence[PathLike | TrustAnchor]
) -> SignatureInfo:
    """Check ``model.sig`` against the trusted keys/CAs and every file of the bundle.

    Raises :class:`SignatureMissingError` (no signature) or :class:`SignatureError`
    (unreadable, untrusted signer, bad signature, a file changed, added or removed). Reads
    files only to hash them: nothing is parsed, so it is safe before any runtime sees them.
    """
    anchors = load_trust_anchors(trusted)
    if not anchors:
        raise ConfigError("no trusted key to verify the signature with")
    root = Path(bundle_dir)
    sig_path = root / SIGNATURE_NAME
    if not sig_path.is_file():
        raise SignatureMissingError(f"bundle {root.name!r} is not signed (no {SIGNATURE_NAME})")
    data = sig_path.read_bytes()  # one read: what is parsed is exactly what is verified
    info = parse_signature(data)
    anchor = _check_signature(root, data, info, anchors)
    _check_coverage(root, info)
    return SignatureInfo(**{**info.__dict__, "verified_by": anchor})


def _check_signature(
    root: Path, data: bytes, info: SignatureInfo, anchors: tuple[TrustAnchor, ...]
) -> TrustAnchor:
    verifying = _lib("verifying")
    if info.kind == "sigstore":
        raise SignatureError(
            "the bundle is signed with Sigstore keyless signing; packserve verifies signatures "
            "by keys and certificate chains only (offline)", reason="unsupported",
        )
    if info.kind == "key":
        keys = [a for a in anchors if a.kind == "key"]
        if info.key_fingerprint is not None:
            keys = [a for a in keys if a.fingerprint == info.key_fingerprint]
        if not keys:
            raise SignatureError(f"signed by key {info.key_fingerprint or '(unnamed)'}, which is not trusted",
                                 reason="untrusted_signer")
        configs = [(a, verifying.Config().use_elliptic_key_verifier(public_key=a.path)) for a in keys]
    else:
        cas = [a for a in anchors if a.kind == "certificate"]
        if not cas:
            raise SignatureError(
                f"signed with a certificate ({info.certificate_subject}) but no trusted CA certificate "
                "was given", reason="untrusted_signer",
            )
        config = verifying.Config().use_certificate_verifier(certificate_chain=[a.path for a in cas])
        configs = [(cas[0], config)]
    failure: Exception | None = None
    with tempfile.TemporaryDirectory(prefix="packserve-sig-") as tmp:
        copy = Path(tmp) / SIGNATURE_NAME
        copy.write_bytes(data)
        for anchor, config in configs:
            try:
                config.set_hashing_config(_hashing_config()).verify(root, copy)
                return anchor
            except Exception as exc:  # the library raises ValueError, OpenSSL and crypto errors
                failure = exc
    if failure is not None and str(failure).startswith("Signature mismatch"):
        raise SignatureError(_mismatch(root, info), reason="files_differ",
                             detail_for_logs=str(failure)[:2000])
    if info.kind == "key":
        message = (f"the signature does not verify with key {info.key_fingerprint}: forged, "
                   "corrupted, or made by another key")
    else:
        message = (f"the certificate signature ({info.certificate_subject}) does not verify: its "
                   "chain does not lead to a trusted CA, or the signature is forged or corrupted")
    raise SignatureError(message, detail_for_logs=repr(failure)[:2000])


def _bundle_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() != SIGNATURE_NAME
    }


def _check_coverage(root: Path, info: SignatureInfo) -> None:
    unsigned = sorted(_bundle_files(root) - set(info.files))
    if unsigned:
        raise SignatureError(f"file(s) not covered by the signature: {', '.join(unsigned[:5])}",
                             reason="unsigned_files")


def _mismatch(root: Path, info: SignatureInfo) -> str:
    """Say which files differ; runs only after a failure (hashes the signed files again)."""
    present = _bundle_files(root)
    added = sorted(present - set(info.files))
    removed = sorted(set(info.files) - present)
    parts = []
    if added:
        parts.append(f"file(s) added: {', '.join(added[:5])}")
    if removed:
        parts.append(f"file(s) removed: {', '.join(removed[:5])}")
    if info.hash_type == "sha256":
        changed = sorted(
            n for n in set(info.files) & present if sha256_file(root / n) != info.files[n]
        )
        if changed:
            parts.append(f"file(s) changed: {', '.join(changed[:5])}")
    return "the bundle does not match its signature: " + ("; ".join(parts) or "file contents differ")


__all__ = [
    "SIGNATURE_NAME",
    "SignatureInfo",
    "TrustAnchor",
    "check_private_key",
    "key_fingerprint",
    "load_trust_anchor",
    "load_trust_anchors",
    "parse_signature",
    "read_signature",
    "sign_bundle",
    "trust_summary",
    "verify_signature",
]
