"""``packserve sign`` and ``packserve verify``: bundle signatures (OpenSSF model signing).

Exit codes come from the errors: 0 verified/signed, 2 bad key or arguments, 3 the
``signing`` extra is missing, 5 bad bundle, 6 signature invalid, 7 signature missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from packserve.cli.console import out

PASSWORD_ENV = "PACKSERVE_SIGNING_KEY_PASSWORD"  # noqa: S105 - the name of an env var


def sign_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory to sign (model.sig is written into it)."),
    key: Path = typer.Option(..., "--key", "-k", help="EC private key (PEM; P-256/384/521). An "
                             f"encrypted key reads its password from ${PASSWORD_ENV}."),
    cert: Path | None = typer.Option(None, "--cert", help="Sign with a certificate chain: the "
                                     "key's signing certificate (PEM)."),
    chain: list[Path] = typer.Option([], "--chain", help="Intermediate/root certificates (PEM) "
                                     "to embed with --cert; repeatable."),
) -> None:
    """Sign a bundle offline: model.sig in the OpenSSF model-signing format (every file)."""
    from packserve.errors import ConfigError
    from packserve.signing import sign_bundle

    if chain and cert is None:
        raise ConfigError("--chain needs --cert (the signing certificate)")
    info = sign_bundle(bundle, key, certificate=cert, chain=chain,
                       password=os.environ.get(PASSWORD_ENV) or None)
    who = f"certificate {info.certificate_subject}, " if info.kind == "certificate" else ""
    out().print(f"signed {bundle} ({len(info.files)} files) by {who}key {info.key_fingerprint}",
                highlight=False, soft_wrap=True)


def verify_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    key: list[Path] = typer.Option(..., "--key", "-k", help="Trusted EC public key or CA "
                                   "certificate (PEM); repeatable: any one of them may have signed."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify a bundle's signature and files (exit 6 invalid, 7 unsigned, 5 bad bundle)."""
    from packserve.bundle import read_manifest, verify_bundle
    from packserve.signing import verify_signature

    info = verify_signature(bundle, key)  # first: nothing is trusted before the signature
    manifest = verify_bundle(bundle, read_manifest(bundle))
    anchor = info.verified_by
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle), "name": manifest.name, "version": manifest.version,
                               "signature": info.to_dict()}, indent=2))
        return
    by = f" via CA {anchor.path.name}" if anchor is not None and anchor.kind == "certificate" else ""
    out().print(
        f"verified: {manifest.name} {manifest.version} — {len(info.files)} files signed by key "
        f"{info.key_fingerprint}{by}", highlight=False, soft_wrap=True)


def signature_line(bundle: Path, keys: list[Path]) -> tuple[str, Exception | None]:
    """``inspect``'s signature status: (text, the error to exit with, if any)."""
    from packserve.errors import SignatureError
    from packserve.signing import read_signature, verify_signature

    try:
        info = verify_signature(bundle, keys) if keys else read_signature(bundle)
    except SignatureError as exc:
        return f"[bold red]{exc.message}[/]", exc
    if info is None:
        return "none (unsigned)", None
    who = (f"certificate {info.certificate_subject} ({info.certificate_fingerprint}), "
           if info.kind == "certificate" else "")
    if info.kind == "sigstore":
        return "Sigstore keyless (not verifiable offline by packserve)", None
    if info.verified_by is not None:
        return f"[green]valid[/], signed by {who}key {info.key_fingerprint}", None
    return f"present, by {who}key {info.key_fingerprint} — not verified (pass --key)", None


__all__ = ["sign_cmd", "signature_line", "verify_cmd"]
