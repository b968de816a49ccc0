"""Write a locust scenario for a model, for teams that already run locust.

The scenario is the chapter's (single predict, batch predict, health; weights 3:1:1; users
wait 0.1-0.5 s), but its rows come from the model's signature like ``packserve bench``'s:
example rows resampled and jittered, strings drawn from the values seen. Image bundles
(issue #17) get their own scenario: encoded images embedded in the file, sent raw or as a
multipart batch. The file is standalone: it needs locust, not packserve.
"""

from __future__ import annotations

import base64
import math
import pprint
from pathlib import Path
from typing import Any

from packserve.bench.inputs import Signature, resolve_signature
from packserve.bench.inputs import images as image_inputs
from packserve.bench.inputs.images import ImageSet
from packserve.bench.runner import image_size, predict_path
from packserve.errors import ConfigError

_TEMPLATE = '''"""Locust scenario for model {model_label}, written by `packserve locustfile`.

Run headless:  locust -f {filename} --headless -u 10 -r 2 -t 60s --host {host_hint}
Or with the web UI:  locust -f {filename} --host {host_hint}
Note: locust's users are a closed loop (each waits for its answer); `packserve bench --rate R`
measures open-loop latency at a fixed arrival rate, which is what production traffic does.
"""

import random

from locust import HttpUser, between, task

SIGNATURE = {signature}
PREDICT_PATH = {predict!r}
BATCH_PATH = {batch!r}
HEALTH_PATH = "/health/ready"
BATCH_SIZE = {batch_size}
JITTER = 0.25


def _spread(j):
    col = [r[j] for r in SIGNATURE["examples"]
           if isinstance(r[j], (int, float)) and not isinstance(r[j], bool)]
    if len(col) < 2:
        return abs(col[0]) if col and col[0] else 1.0
    mean = sum(col) / len(col)
    return (sum((v - mean) ** 2 for v in col) / len(col)) ** 0.5 or 1.0


FEATURES = SIGNATURE["features"]
SPREAD = [_spread(j) for j in range(len(FEATURES))]
CHOICES = [sorted({{str(r[j]) for r in SIGNATURE["examples"]}}) for j in range(len(FEATURES))]


def make_row():
    """One realistic row: a jittered example (or N(0, 1) without examples)."""
    base = random.choice(SIGNATURE["examples"]) if SIGNATURE["examples"] else None
    row = []
    for j, feat in enumerate(FEATURES):
        seen = base[j] if base is not None else None
        dtype = feat["dtype"]
        numeric = isinstance(seen, (int, float)) and not isinstance(seen, bool)
        if dtype in ("float32", "float64"):
            mean = seen if numeric else 0.0
            row.append(round(mean + random.gauss(0.0, JITTER * SPREAD[j] if numeric else 1.0), 5))
        elif dtype in ("int64", "int32"):
            row.append(round(seen + random.gauss(0.0, JITTER * SPREAD[j])) if numeric
                       else random.randint(0, 10))
        elif dtype == "bool":
            row.append(random.random() < 0.5 if seen is None else bool(seen))
        else:
            row.append(random.choice(CHOICES[j]) if CHOICES[j] else "v%d" % random.randint(0, 9))
    return row


class InferenceUser(HttpUser):
    """Simulates clients of the model: 3 single predictions : 1 batch : 1 health check."""

{host_line}    wait_time = between(0.1, 0.5)

    @task(3)
    def single_predict(self):
        self.client.post(PREDICT_PATH, json={{"features": make_row()}}, name="predict")

    @task(1)
    def batch_predict(self):
        instances = [{{"features": make_row()}} for _ in range(BATCH_SIZE)]
        self.client.post(BATCH_PATH, json={{"instances": instances}}, name="predict/batch")

    @task(1)
    def health_check(self):
        self.client.get(HEALTH_PATH, name="health")
'''


_TENSOR_PART = '''

TENSORS = {tensors}


def _nested(shape, draw):
    if not shape:
        return draw()
    return [_nested(shape[1:], draw) for _ in range(shape[0])]


def make_inputs():
    """One instance: every input as a nested list (floats N(0, 1), integers in the range
    the model accepts, booleans at random)."""
    out = {{}}
    for t in TENSORS:
        if t["dtype"].startswith("float"):
            draw = lambda: round(random.gauss(0.0, 1.0), 4)  # noqa: E731
        elif t["dtype"] == "bool":
            draw = lambda: random.random() < 0.5  # noqa: E731
        else:
            draw = lambda t=t: random.randint(t["low"], t["high"])  # noqa: E731
        out[t["name"]] = _nested(t["shape"], draw)
    return out


def make_row():  # noqa: F811 - tensor models send inputs, not rows
    return make_inputs()
'''


_IMAGE_TEMPLATE = '''"""Locust scenario for image model {model_label}, written by `packserve locustfile`.

Run headless:  locust -f {filename} --headless -u 10 -r 2 -t 60s --host {host_hint}
Images: {source}, embedded below; set PACKSERVE_IMAGES=DIR to send the .jpg/.jpeg/.png/.webp
files of DIR instead. One image per request is a raw body; the batch task uploads BATCH_SIZE
images as multipart/form-data (several files = a batch).
"""

import base64
import os
import random

from locust import HttpUser, between, task

PREDICT_PATH = {predict!r}
BATCH_PATH = {batch!r}
HEALTH_PATH = "/health/ready"
BATCH_SIZE = {batch_size}
MEDIA = {{".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}}
EMBEDDED = {embedded}


def _load():
    folder = os.environ.get("PACKSERVE_IMAGES")
    if not folder:
        return [(name, base64.b64decode(data), media) for name, data, media in EMBEDDED]
    found = []
    for name in sorted(os.listdir(folder)):
        media = MEDIA.get(os.path.splitext(name)[1].lower())
        if media is not None:
            with open(os.path.join(folder, name), "rb") as fh:
                found.append((name, fh.read(), media))
    if not found:
        raise SystemExit(f"PACKSERVE_IMAGES={{folder}} holds no .jpg/.jpeg/.png/.webp files")
    return found


IMAGES = _load()


class ImageUser(HttpUser):
    """Clients of an image model: 3 single images : 1 multipart batch : 1 health check."""

{host_line}    wait_time = between(0.1, 0.5)

    @task(3)
    def single_predict(self):
        _name, data, media = random.choice(IMAGES)
        self.client.post(PREDICT_PATH, data=data, headers={{"Content-Type": media}},
                         name="predict")

    @task(1)
    def batch_predict(self):
        files = [("file", random.choice(IMAGES)) for _ in range(BATCH_SIZE)]
        self.client.post(BATCH_PATH, files=files, name="predict/batch")

    @task(1)
    def health_check(self):
        self.client.get(HEALTH_PATH, name="health")
'''

IMAGE_BATCH_SIZE = 4  # a batch of 20 full-size images is more upload than inference


def render_image_locustfile(images: ImageSet, *, model: str | None = None,
                            host: str | None = None, batch_size: int = IMAGE_BATCH_SIZE,
                            filename: str = "locustfile.py") -> str:
    """A locustfile sending ``images`` (embedded as base64) to an image model."""
    embedded = [(i.name, base64.b64encode(i.data).decode(), i.media_type) for i in images.images]
    return _IMAGE_TEMPLATE.format(
        model_label=repr(model or "default"), filename=filename,
        host_hint=host or "http://127.0.0.1:8000", source=images.source,
        predict=predict_path(model, 1), batch=predict_path(model, 2), batch_size=batch_size,
        embedded=pprint.pformat(embedded, width=100),
        host_line=f"    host = {host!r}\n" if host else "",
    )


def _literal(v: Any) -> Any:
    """A value that is a valid Python literal (NaN/inf cannot be written as one)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def render_locustfile(signature: Signature, *, model: str | None = None,
                      host: str | None = None, batch_size: int = 20,
                      filename: str = "locustfile.py") -> str:
    """The locustfile's source; ``model`` selects ``/models/{model}/...`` paths."""
    sig = {"model": signature.model,
           "features": [{"name": f.name, "dtype": f.dtype} for f in signature.features],
           "examples": [[_literal(v) for v in row] for row in signature.examples]}
    host_line = f"    host = {host!r}\n" if host else ""
    template = _TEMPLATE
    if signature.tensors:  # tensor models: {"inputs": {...}} instead of {"features": [...]}
        tensors = pprint.pformat([t.to_dict() for t in signature.tensors], width=96)
        head, tail = template.split("\n\nclass InferenceUser", 1)
        template = (head + _TENSOR_PART.replace("{tensors}", tensors.replace("{", "{{").replace(
            "}", "}}")) + "\n\nclass InferenceUser" + tail.replace('{{"features": make_row()}}',
                                                                   '{{"inputs": make_row()}}'))
    return template.format(
        model_label=repr(model or signature.model or "default"), filename=filename,
        host_hint=host or "http://127.0.0.1:8000",
        signature=pprint.pformat(sig, width=96, compact=True, sort_dicts=False),
        predict=predict_path(model, 1), batch=predict_path(model, 2), batch_size=batch_size,
        host_line=host_line,
    )


def locustfile_for(bundle_or_url: str, *, model: str | None = None,
                   batch_size: int | None = None, images: str | Path | bool | None = None,
                   count: int = 8) -> str:
    """A locustfile from a bundle directory or from a running server's metadata.

    ``images`` as for :func:`~packserve.bench.runner.run_bench`: an image bundle gets
    ``count`` generated JPEGs of its input size (embedded), a directory embeds its files.
    """
    path = Path(bundle_or_url)
    host: str | None = None
    if path.is_dir():
        sig = resolve_signature("http://unused", bundle=path)
    elif "://" not in bundle_or_url and (path.exists() or "/" in bundle_or_url):
        raise ConfigError(f"{bundle_or_url!r} is neither a bundle directory nor a server URL")
    else:
        sig = resolve_signature(bundle_or_url, model=model)
        host = bundle_or_url.rstrip("/")
    if images is None:
        images = sig.image_size is not None
    if images is not False:
        found = (image_inputs.generated(image_size(sig), count=count) if images is True
                 else image_inputs.from_dir(images))
        return render_image_locustfile(found, model=model, host=host,
                                       batch_size=batch_size or IMAGE_BATCH_SIZE)
    return render_locustfile(sig, model=model, host=host, batch_size=batch_size or 20)


__all__ = ["locustfile_for", "render_image_locustfile", "render_locustfile"]
