"""Sign a bundle: check the key first, sign every file but ``model.sig``, write it atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packserve.bundle import read_manifest, verify_bundle
from packserve.errors import ConfigError
from packserve.signing.keys import SIGNATURE_NAME, PathLike, _check_curve, _lib, _read
from packserve.signing.signature import SignatureInfo, read_signature


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
