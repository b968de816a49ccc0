"""Images/s of an image bundle, batching on vs off, and where the time goes (issue #17).

    python benchmarks/bench_images.py [--duration 4] [--rounds 3] [--conns 1,16] [--no-pin]
                                      [--split-rounds 200] [--split-only] [--multipart 16]

The model: a small CNN built in code (3 conv layers 3 -> 16 -> 32 -> 64, stride 2, global
average pool, linear -> 10 classes; deterministic init), packed with an ImageNet-style spec
(resize shorter side 256 bilinear, center crop 224, ImageNet mean/std, NCHW float32) and
10 class names through ``pack(..., preprocess=..., classes=...)``.

The requests: 32 generated 500x375 JPEGs (quality 90; ImageNet's typical photo size), one
image per request as a raw ``image/jpeg`` body, sent by ``packserve bench``'s own load
generator (closed loop) at each connection count.

1. In-process split (this process pinned to the server's CPU, no server running yet): per
   image, interleaved over the images for ``--split-rounds`` rounds: Pillow decode
   (``runtime.images.decode``: limits, checks, EXIF), preprocess (resize + crop + normalise),
   model (ONNX Runtime, one image; and per image in a batch of 16). Next to them, in the same
   loop, the libjpeg-turbo binding ``simplejpeg`` (if installed): its decode to a NumPy array
   and the same preprocess on it, with the max pixel difference against Pillow's decode.
2. Servers: ``packserve serve`` with batching off and with ``--batching`` (defaults), each
   admitting everything (``--admission-budget-ms 0``: every request is computed, so images/s
   compare the same work) and with the default admission budget (which sheds part of a
   16-connection closed loop with 503s: errors are counted, not in images/s); pinned to CPU 0;
   the generator pinned to CPU 1 (when there are two or more CPUs). For each round, each
   connection count, every server back to back (adjacent runs share the machine's noise).
   Also ``--multipart`` N images per request (one multipart upload, ``/predict/batch``) at
   one connection: the client batches, the model runs N at once. Prints medians and the
   per-round on/off ratio.

A measurement, not a test: it reports, it never fails on a number. The host is a shared
2-core machine: read ratios within one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import Server, serve_cmd, start

IMAGENET = {"resize": 256, "crop": [224, 224], "interpolation": "bilinear",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CLASSES = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SOURCE = (375, 500)  # (height, width) of the generated photos
ADMIT_ALL = ["--admission-budget-ms", "0"]
#: (name, serve flags): batching off / on, admitting everything (every request computed:
#: the throughput comparison) and with the default admission budget (30 ms: sheds with 503)
VARIANTS = [("off", ["--no-batching", *ADMIT_ALL]), ("on", ["--batching", *ADMIT_ALL]),
            ("off/default-admission", ["--no-batching"]),
            ("on/default-admission", ["--batching"])]


def build_bundle(workdir: Path) -> Path:
    import torch
    from torch import nn

    import packserve

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)),
    ).eval()
    res = packserve.pack(model, workdir / "cnn224", sample=torch.randn(2, 3, 224, 224),
                         name="cnn224", task="multiclass", classes=CLASSES, output="logits",
                         preprocess=IMAGENET)
    return res.path


def ms(samples: list[float]) -> str:
    """Median and p10 (on a shared machine the p10 is the step's cost when a core was free)."""
    p10 = statistics.quantiles(samples, n=10)[0] if len(samples) > 1 else samples[0]
    return f"{statistics.median(samples) * 1000:.2f} ms | {p10 * 1000:.2f} ms"


def split(bundle: Path, jpegs: list[bytes], rounds: int) -> None:
    """Decode / preprocess / model per image, interleaved; Pillow vs simplejpeg decoding."""
    from PIL import Image

    import packserve
    from packserve.bundle import read_manifest
    from packserve.runtime.images import ImagePipeline, decode, preprocess

    manifest = read_manifest(bundle)
    spec = manifest.preprocess
    assert spec is not None
    predictor = packserve.load(bundle)
    pipe = ImagePipeline(manifest)
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    batch16 = pipe.feeds(jpegs[:16])
    one = pipe.feeds(jpegs[:1])
    def raw(d: bytes) -> Any:
        return d

    def decoded(d: bytes) -> Any:
        return decode(d, spec)

    # name -> (untimed preparation of the JPEG bytes, the timed step on its result)
    steps: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], Any]]] = {
        "plain Pillow open+convert+load": (
            raw, lambda d: Image.open(io.BytesIO(d)).convert("RGB").load()),
        "decode (Pillow, packserve checks)": (raw, lambda d: decode(d, spec)),
        "preprocess (resize+crop+normalise)": (decoded, lambda img: preprocess(img, spec)),
        "model, 1 image": (raw, lambda d: predictor.run(one)),
        "model, batch of 16 (per image)": (raw, lambda d: predictor.run(batch16)),
        "Pillow decode + preprocess": (raw, lambda d: preprocess(decode(d, spec), spec)),
    }
    if simplejpeg is not None:
        sj = simplejpeg
        steps["decode (simplejpeg -> array)"] = (raw, lambda d: sj.decode_jpeg(d, "RGB"))
        steps["decode (simplejpeg fastdct+fastupsample)"] = (raw, lambda d: sj.decode_jpeg(
            d, "RGB", fastdct=True, fastupsample=True))
        steps["simplejpeg decode + preprocess"] = (raw, lambda d: preprocess(
            Image.fromarray(sj.decode_jpeg(d, "RGB")), spec))
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(3):  # warm-up
        predictor.run(batch16)
    for r in range(rounds):
        data = jpegs[r % len(jpegs)]
        for name, (prepare, fn) in steps.items():
            arg = prepare(data)
            t = time.perf_counter()
            fn(arg)
            dt = time.perf_counter() - t
            times[name].append(dt / 16 if "16" in name else dt)
    print(f"\nin-process split, {len(jpegs[0]) // 1024} KiB {SOURCE[1]}x{SOURCE[0]} JPEG -> "
          f"224x224 (median of {rounds} interleaved rounds, this process on one CPU):")
    print("| step | per image, median | p10 |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {ms(ts)} |")
    if simplejpeg is not None:
        diffs = []
        for data in jpegs:
            a = np.asarray(decode(data, spec), np.int16)
            b = simplejpeg.decode_jpeg(data, "RGB").astype(np.int16)
            c = simplejpeg.decode_jpeg(data, "RGB", fastdct=True, fastupsample=True)
            diffs.append((int(np.abs(a - b).max()), int(np.abs(a - c.astype(np.int16)).max())))
        print(f"max |pixel diff| vs Pillow over {len(jpegs)} images: simplejpeg default "
              f"{max(d[0] for d in diffs)}, fastdct+fastupsample {max(d[1] for d in diffs)}")
        print(f"simplejpeg {simplejpeg.__version__}")
    from PIL import features

    print(f"Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}")


# --- load ---------------------------------------------------------------------------------------

Setting = tuple[int, int]  # (connections, images per request)


def load(servers: list[Server], jpegs: Any, conns: list[int], rounds: int, duration: float,
         multipart: int) -> None:
    """Every setting, every server back to back per round; then medians and on/off ratios."""
    from packserve.bench import run_bench

    settings: list[Setting] = [(c, 1) for c in conns] + ([(1, multipart)] if multipart > 1 else [])
    rows: dict[tuple[str, Setting], list[dict[str, float]]] = {}
    for s in servers:  # warm-up
        run_bench(s.url, images=jpegs, concurrency=4, duration=1.0)
    for r in range(rounds):
        for c, b in settings:
            for s in servers:
                res = run_bench(s.url, images=jpegs, concurrency=c, duration=duration,
                                batch_size=b)
                pc = res.latency.percentiles_ms
                row = {"ips": res.images_per_s or 0.0, "p50": pc["p50"], "p99": pc["p99"],
                       "errors": float(res.phase.error_count)}
                rows.setdefault((s.name, (c, b)), []).append(row)
                print(f"  round {r + 1} c={c:<3} b={b:<3} {s.name:<22} {row['ips']:7.1f} images/s"
                      f"  p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  "
                      f"errors {dict(sorted(res.phase.errors.items())) or 0}"
                      + ("" if res.health.ok else "  (generator could not keep up)"), flush=True)
    print("\n| batching | conns | images/request | images/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for (name, (c, b)), rs in rows.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("ips", "p50", "p99")}
        print(f"| {name} | {c} | {b} | {med['ips']:.1f} | {med['p50']:.2f} | {med['p99']:.2f} | "
              f"{int(sum(x['errors'] for x in rs))} |")
    print(f"\nratio batching on / off (images/s; median of {rounds} adjacent rounds [min-max]):")
    for on, off in (("on", "off"), ("on/default-admission", "off/default-admission")):
        for c, b in settings:
            ratio = [x["ips"] / y["ips"] for x, y in zip(rows[(on, (c, b))], rows[(off, (c, b))],
                                                          strict=True) if y["ips"] > 0]
            if ratio:
                print(f"  {on:<22} c={c:<3} b={b:<3} {statistics.median(ratio):.2f}x "
                      f"[{min(ratio):.2f}-{max(ratio):.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="1,16")
    ap.add_argument("--split-rounds", type=int, default=200)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--split-only", action="store_true", help="the in-process split, no servers")
    ap.add_argument("--multipart", type=int, default=16,
                    help="also N images per multipart request at 1 connection (0: skip)")
    args = ap.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    pin_srv, pin_gen = (None, None) if args.no_pin or len(cpus) < 2 else (cpus[0], cpus[1])

    from packserve.bench.inputs import images as image_inputs

    tmp = Path(tempfile.mkdtemp(prefix="bench-images-"))
    servers: list[Server] = []
    try:
        bundle = build_bundle(tmp)
        jpegs = image_inputs.generated(SOURCE, count=32, seed=0)
        print(f"cpus={len(cpus)} pinning="
              + (f"server + split cpu{pin_srv} / generator cpu{pin_gen}" if pin_srv is not None
                 else "off") + f"; requests: {jpegs.source}, mean "
              f"{jpegs.mean_bytes / 1024:.1f} KiB", flush=True)
        if pin_srv is not None:
            os.sched_setaffinity(0, {pin_srv})  # the split runs where the server will run
        split(bundle, [i.data for i in jpegs.images], args.split_rounds)
        if args.split_only:
            return
        pin = str(pin_srv) if pin_srv is not None else None
        for name, flags in VARIANTS:
            servers.append(start(name, serve_cmd(bundle, *flags), pin=pin))
        if pin_gen is not None:
            os.sched_setaffinity(0, {pin_gen})
        for s in servers:  # every server classifies an image before it is measured
            r = httpx.post(s.url + "/predict", content=jpegs.images[0].data,
                           headers={"content-type": "image/jpeg"}, timeout=30)
            assert r.status_code == 200 and r.json()["prediction"] in CLASSES, r.text[:200]
        print(f"\nload: packserve bench, closed loop, {args.duration:g} s per run, one image "
              "per request (raw image/jpeg)", flush=True)
        load(servers, tmp_dir_images(tmp, jpegs), conns, args.rounds, args.duration,
             args.multipart)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def tmp_dir_images(tmp: Path, images: Any) -> Path:
    """The generated JPEGs as files: ``run_bench(images=DIR)`` sends exactly these."""
    folder = tmp / "images"
    folder.mkdir()
    for img in images.images:
        (folder / img.name).write_bytes(img.data)
    return folder


if __name__ == "__main__":
    main()
