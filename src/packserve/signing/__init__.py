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

One module per job: :mod:`.keys` (keys, certificates, trust anchors), :mod:`.signature`
(reading ``model.sig``), :mod:`.sign` and :mod:`.verify`.
"""

from __future__ import annotations

from packserve.signing.keys import (
    SIGNATURE_NAME,
    TrustAnchor,
    key_fingerprint,
    load_trust_anchor,
    load_trust_anchors,
    trust_summary,
)
from packserve.signing.sign import check_private_key, sign_bundle
from packserve.signing.signature import SignatureInfo, parse_signature, read_signature
from packserve.signing.verify import verify_signature

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
