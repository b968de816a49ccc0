"""Keys, certificates and fingerprints: what a signer holds and what a verifier trusts.

Only EC keys (P-256/384/521) sign model files; a fingerprint is ``sha256:`` of the key's PEM
SubjectPublicKeyInfo, the key hint ``model_signing`` writes into a signature.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packserve.errors import ConfigError, MissingDependencyError

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
