"""Verify a bundle's ``model.sig`` against trusted keys/CAs and every file present (offline)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from packserve.bundle import sha256_file
from packserve.errors import ConfigError, SignatureError, SignatureMissingError
from packserve.signing.keys import SIGNATURE_NAME, PathLike, TrustAnchor, _lib, load_trust_anchors
from packserve.signing.sign import _hashing_config
from packserve.signing.signature import SignatureInfo, parse_signature


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
