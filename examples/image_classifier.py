"""An image classifier with its preprocessing in the bundle: pack, serve, POST a JPEG (#17).

    python examples/image_classifier.py [OUT_DIR]

A small CNN (3 conv layers, 10 classes) learns the dominant colour of 32x32 pictures in a
second of training on pictures built in code (no downloads). It is packed with the
preprocessing it was trained with (resize the shorter side to 36, center crop 32, ImageNet
mean/std, NCHW) and the class names, served by a real ``packserve serve``, and asked over HTTP
about JPEGs it has never seen: one as a raw ``image/jpeg`` body, two as a multipart upload.
The server decodes and preprocesses as the manifest says; the answers must equal
``packserve.load(bundle).predict_images`` on the same bytes, and name the right colours.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from torch import nn

import packserve

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220),
           "yellow": (240, 220, 30), "cyan": (40, 210, 220), "magenta": (210, 40, 200),
           "white": (245, 245, 245), "black": (15, 15, 15), "orange": (250, 140, 20),
           "purple": (110, 40, 160)}
CLASSES = list(COLOURS)
PREPROCESS = {"resize": 36, "crop": [32, 32], "interpolation": "bilinear",
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def picture(colour: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A picture mostly of ``colour``: a shaded background, a stripe of another colour, noise."""
    base = np.asarray(COLOURS[colour], np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 + 0.15 * np.sin(x / w * rng.uniform(1, 6) + y / h * rng.uniform(1, 6))
    img = base * shade[..., None]
    other = np.asarray(COLOURS[CLASSES[rng.integers(len(CLASSES))]], np.float32)
    top = int(rng.integers(0, h - h // 8))
    img[top:top + h // 8] = other  # a thin distractor stripe
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_and_train(seed: int = 0) -> tuple[nn.Module, float]:
    """The CNN and its training accuracy after a short training on generated 32x32 tensors
    (normalised with PREPROCESS's mean/std, as the server will)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a model this small trains faster on one thread than on several
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(CLASSES)),
    )
    labels = np.repeat(np.arange(len(CLASSES)), 24)
    pixels = np.stack([picture(CLASSES[i], 32, 32, rng) for i in labels]).astype(np.float32)
    mean, std = np.asarray(PREPROCESS["mean"]), np.asarray(PREPROCESS["std"])
    x = torch.from_numpy(((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        perm = torch.randperm(len(y))[:64]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[perm]), y[perm]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    return model, acc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(bundle: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "packserve", "serve", str(bundle),
                             "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def main(out_dir: Path) -> None:
    model, acc = build_and_train()
    print(f"trained a 3-conv CNN on generated colour pictures: train accuracy {acc:.2%}")
    sample = torch.randn(4, 3, 32, 32)
    res = packserve.pack(model, out_dir / "colours", sample=sample, name="colours",
                         task="multiclass", classes=CLASSES, output="logits",
                         preprocess=PREPROCESS, force=True)
    print(f"packed: {res.path}  preprocess={res.manifest.preprocess}")
    rng = np.random.default_rng(42)  # pictures the model has not seen, other sizes than 32x32
    asked = {"orange": jpeg(picture("orange", 300, 200, rng)),
             "blue": jpeg(picture("blue", 180, 320, rng)),
             "green": jpeg(picture("green", 240, 240, rng))}
    local = packserve.load(res.path)
    proc, url = serve(res.path)
    ok = True
    try:
        raw = httpx.post(f"{url}/predict?top_k=3", content=asked["orange"],
                         headers={"Content-Type": "image/jpeg"}, timeout=30)
        one = raw.json()
        top = [(t["label"], round(t["probability"], 3)) for t in one["top_k"]]
        print(f"POST /predict (raw image/jpeg, an orange picture) -> HTTP {raw.status_code}: "
              f"{one['prediction']}; top 3 {top}")
        want = local.predict_images(asked["orange"]).probabilities[0]
        ok &= raw.status_code == 200 and one["prediction"] == "orange"
        ok &= abs(one["probability"] - float(want.max())) <= 1e-5
        files = [("file", (f"{c}.jpg", asked[c], "image/jpeg")) for c in ("blue", "green")]
        multi = httpx.post(f"{url}/predict", files=files, timeout=30)
        preds = multi.json()["predictions"]
        print(f"POST /predict (multipart, 2 files) -> HTTP {multi.status_code}: "
              f"{[p['prediction'] for p in preds]}")
        local2 = local.predict_images([asked["blue"], asked["green"]]).probabilities
        ok &= multi.status_code == 200 and [p["prediction"] for p in preds] == ["blue", "green"]
        ok &= all(abs(p["probability"] - float(q.max())) <= 1e-5
                  for p, q in zip(preds, local2, strict=True))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"served answers equal packserve.load(...).predict_images and name the colours: "
          f"passed={ok}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
