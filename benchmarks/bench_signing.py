"""What enforcing signatures costs at load time (issue #20). Not a test: prints a table.

    python benchmarks/bench_signing.py [--mib 1,64] [--rounds 3]

For bundles whose artifact is the chapter-sized model (small) and synthetic artifacts of
``--mib`` MiB (random bytes with a consistent manifest: nothing here opens the artifact), it
times, in interleaved rounds within one run:

* ``verify_bundle`` — the sha256 check every load already does (the baseline);
* ``verify_signature`` — what ``--trusted-key`` adds before it (model_signing hashes every
  file again and checks the ECDSA signature);
* ``sign_bundle`` — once per bundle at pack time (includes its own integrity check).

The ``model_signing`` import (sigstore, ~1 s of CPU) is paid once per process and reported
separately. The host has 2 cores shared with other work: read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from packserve.bundle import MANIFEST_NAME, sha256_file, verify_bundle


def make_keys(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = folder / "key.pem", folder / "key.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def small_bundle(folder: Path) -> Path:
    from sklearn.datasets import make_classification
    from xgboost import XGBClassifier

    import packserve

    x, y = make_classification(n_samples=2000, n_features=15, n_informative=10, random_state=0)
    model = XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1).fit(x, y)
    return packserve.pack(model, folder / "small", sample=x[:200], name="fraud").path


def big_bundle(src: Path, dst: Path, mib: int) -> Path:
    """The small bundle with its artifact replaced by ``mib`` MiB of random bytes (re-hashed)."""
    shutil.copytree(src, dst)
    art = dst / "model.onnx"
    rng = np.random.default_rng(0)
    with art.open("wb") as fh:
        for _ in range(mib):
            fh.write(rng.bytes(1 << 20))
    m = json.loads((dst / MANIFEST_NAME).read_text())
    m["files"]["model.onnx"] = {"sha256": sha256_file(art), "size": art.stat().st_size}
    (dst / MANIFEST_NAME).write_text(json.dumps(m, indent=2))
    return dst


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import model_signing.signing, model_signing.verifying; " \
           "print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", default="1,64", help="synthetic artifact sizes in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from packserve.signing import sign_bundle, verify_signature

    with tempfile.TemporaryDirectory(prefix="bench-signing-") as tmp:
        root = Path(tmp)
        priv, pub = make_keys(root)
        bundles = {"chapter xgboost": small_bundle(root)}
        for mib in (int(m) for m in args.mib.split(",") if m):
            bundles[f"{mib} MiB artifact"] = big_bundle(bundles["chapter xgboost"], root / f"b{mib}", mib)
        for b in bundles.values():
            sign_bundle(b, priv)  # warm: imports, page cache
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):  # interleaved: each round times every bundle and step
            for label, b in bundles.items():
                for step, fn in (("verify_bundle", lambda b=b: verify_bundle(b)),
                                 ("verify_signature", lambda b=b: verify_signature(b, [pub])),
                                 ("sign_bundle", lambda b=b: sign_bundle(b, priv))):
                    t0 = time.perf_counter()
                    fn()
                    times.setdefault((label, step), []).append(time.perf_counter() - t0)
        size = {label: sum(f.stat().st_size for f in b.rglob("*") if f.is_file()) for label, b in
                bundles.items()}
    print(f"model_signing import (fresh process): {import_seconds() * 1000:.0f} ms  "
          f"(cpus: {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}; shared host)")
    print(f"{'bundle':<18} {'size':>10} {'verify_bundle':>14} {'verify_signature':>17} {'ratio':>6} "
          f"{'sign_bundle':>12}   (median of {args.rounds}, ms)")
    for label in bundles:
        base = statistics.median(times[(label, "verify_bundle")]) * 1000
        sig = statistics.median(times[(label, "verify_signature")]) * 1000
        sign = statistics.median(times[(label, "sign_bundle")]) * 1000
        print(f"{label:<18} {size[label] / 2**20:>8.1f}Mi {base:>14.1f} {sig:>17.1f} {sig / base:>6.2f} "
              f"{sign:>12.1f}")


if __name__ == "__main__":
    main()
