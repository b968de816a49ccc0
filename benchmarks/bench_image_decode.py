"""One request's images: decoded one after the other vs in parallel (issue #17). Not a test.

    python benchmarks/bench_image_decode.py [--images 16] [--rounds 30] [--size 500x375]

Packs a tiny CNN with an ImageNet-style spec (resize 256, crop 224, mean/std, NCHW float32),
generates ``--images`` JPEGs of ``--size`` in code, and times what the server does with the
images of one request before the model runs: ``ImageRequestDecoder.feeds`` (decode +
preprocess, off the event loop, in the decode pool), in interleaved rounds in one run:

* ``sequential`` (the baseline, Session 3's behaviour): ``parallel=False``, one pool thread
  decodes the images one after the other;
* ``parallel``: the default, every image its own task in the bounded pool (as many threads
  as CPUs this process may use, at most 8).

Both produce the same tensor (checked). CPU is the process's CPU time over all threads
during the call (median): parallel decoding should add none, only spread it over cores. The
host is shared: read the ratios, not the times; on a saturated host (load above the CPU
count) no pool can help, and the minimum over rounds shows what the CPUs give when free.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from packserve.serve.payloads.images import ImageRequestDecoder, decode_threads

SPEC = {"resize": 256, "crop": [224, 224], "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def bundle(folder: Path) -> Path:
    import torch

    import packserve

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()
    return packserve.pack(model, folder / "cnn", sample=torch.randn(2, 3, 224, 224), name="cnn",
                          task="multiclass", classes=["a", "b", "c"], output="logits",
                          preprocess=SPEC).path


def jpegs(n: int, w: int, h: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([x / w * 255, y / h * 255, ((x * (i + 1) + y) % 97) * 2.6], axis=-1)
        noise = rng.normal(0, 12, base.shape)
        buf = io.BytesIO()
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


async def timed(decoder: ImageRequestDecoder, blobs: list[bytes]) -> tuple[float, float, np.ndarray]:
    """(wall seconds, process CPU seconds over all threads, the tensor)."""
    c0, t0 = time.process_time(), time.perf_counter()
    feeds = await decoder.feeds(blobs)
    return time.perf_counter() - t0, time.process_time() - c0, next(iter(feeds.values()))


async def main(args: argparse.Namespace) -> None:
    import packserve

    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = packserve.load(bundle(Path(tmp))).manifest
    blobs = jpegs(args.images, w, h)
    seq = ImageRequestDecoder(manifest, "1", max_batch=1000, parallel=False)
    par = ImageRequestDecoder(manifest, "1", max_batch=1000)
    *_, a = await timed(seq, blobs)  # warm: imports, pool threads
    *_, b = await timed(par, blobs)
    assert np.array_equal(a, b), "parallel decoding changed the tensor"
    times: dict[str, list[float]] = {"sequential": [], "parallel": []}
    cpu: dict[str, list[float]] = {"sequential": [], "parallel": []}
    for r in range(args.rounds):  # interleaved, alternating which goes first
        order = [("sequential", seq), ("parallel", par)]
        for name, dec in order if r % 2 == 0 else order[::-1]:
            wall, used, _ = await timed(dec, blobs)
            times[name].append(wall)
            cpu[name].append(used)
    kb = sum(map(len, blobs)) / len(blobs) / 1024
    print(f"{args.images} JPEGs {w}x{h} (~{kb:.0f} KB each) -> [{args.images}, 3, 224, 224] float32; "
          f"pool threads {decode_threads()}, CPUs usable {len(os.sched_getaffinity(0))}, "
          f"{args.rounds} interleaved rounds")
    base = statistics.median(times["sequential"])
    fast = min(times["sequential"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<10} median {med * 1e3:7.1f} ms  min {min(ts) * 1e3:7.1f}  "
              f"p10 {np.percentile(ts, 10) * 1e3:7.1f}  "
              f"p90 {np.percentile(ts, 90) * 1e3:7.1f}  ({med / args.images * 1e3:.2f} ms/image, "
              f"median x{base / med:.2f}, min x{fast / min(ts):.2f} vs sequential); "
              f"CPU {statistics.median(cpu[name]) * 1e3:.1f} ms")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--size", default="500x375")
    asyncio.run(main(p.parse_args()))
