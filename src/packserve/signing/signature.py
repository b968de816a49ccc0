"""What a ``model.sig`` claims (signer, signed files), read but not yet verified (``inspect``)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packserve.errors import SignatureError
from packserve.signing.keys import SIGNATURE_NAME, PathLike, TrustAnchor, _pem_fingerprint


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
