"""bench and locustfile against a real ``packserve serve`` of an image bundle (issue #17)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from helpers.server import Server, running_server
from packserve.bench import locustfile_for, run_bench
from packserve.bench.inputs import images as image_inputs
from packserve.cli import app

SIZE = 48  # the preprocessing's output: small, so the test is about bench, not the model
CLASSES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from packserve.pack import pack

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, len(CLASSES)),
    ).eval()
    out = tmp_path_factory.mktemp("bench-images") / "cnn"
    pack(model, out, sample=torch.randn(2, 3, SIZE, SIZE), name="cnn", task="multiclass",
         classes=CLASSES, output="logits",
         preprocess={"resize": SIZE + 8, "crop": [SIZE, SIZE], "mean": [0.5], "std": [0.25]})
    return out


@pytest.fixture(scope="module")
def image_server(image_bundle: Path) -> Iterator[Server]:
    with running_server(image_bundle) as srv:
        yield srv


def _answered(url: str, route: str) -> float:
    """Requests on ``route`` the server answered 200, from its /metrics."""
    want = f'packserve_requests_total{{method="POST",route="{route}",status="200"}}'
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return 0.0


def test_generated_images_are_valid_jpegs_of_the_size() -> None:
    from PIL import Image

    found = image_inputs.generated((30, 40), count=3, seed=1)
    assert len({i.data for i in found.images}) == 3  # distinct bodies, not one cached image
    for img in found.images:
        pic = Image.open(io.BytesIO(img.data))
        assert (pic.format, pic.size, pic.mode) == ("JPEG", (40, 30), "RGB")
        assert img.media_type == "image/jpeg"
    assert found.source == "3 generated 40x30 JPEGs (quality 90)"


def test_multipart_body_is_what_the_server_parses() -> None:
    from packserve.serve.payloads.multipart import FileParts, boundary_of

    imgs = list(image_inputs.generated((8, 8), count=3).images)
    body = image_inputs.multipart(imgs)
    parts = FileParts(boundary_of(image_inputs.MULTIPART_TYPE.encode()), max_files=3,
                      max_file_bytes=1 << 20)
    parts.write(body)
    assert parts.files() == [i.data for i in imgs]


def test_bundle_gets_generated_images_of_its_input_size(image_server: Server,
                                                         image_bundle: Path) -> None:
    before = _answered(image_server.url, "/predict")
    r = run_bench(image_server.url, bundle=image_bundle, concurrency=2, duration=1.5)
    after = _answered(image_server.url, "/predict")
    assert r.phase.errors == {} and r.phase.ok > 5
    assert after - before == r.phase.ok  # every one answered 200 by the image path
    assert r.unit == "images" and r.images_per_s == pytest.approx(r.throughput)
    assert r.signature_source == (f"bundle 'cnn' (image input {SIZE}x{SIZE}); "
                                  f"32 generated {SIZE}x{SIZE} JPEGs (quality 90)")
    d = r.to_dict()
    assert d["unit"] == "images" and d["images_per_s"] == pytest.approx(r.throughput)


def _write_images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (fmt, suffix) in enumerate([("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")]):
        Image.fromarray(image_inputs.picture(60 + 10 * i, 80, rng)).save(folder / f"p{i}{suffix}",
                                                                        fmt)
    (folder / "notes.txt").write_text("not an image: skipped")


def test_cli_images_dir_multipart_batches(image_server: Server, tmp_path: Path) -> None:
    _write_images(tmp_path)
    before = _answered(image_server.url, "/predict/batch")
    report = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["bench", image_server.url, "--images", str(tmp_path),
                                   "-b", "3", "-c", "2", "-d", "1s", "--json", "--report",
                                   str(report)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["path"] == "/predict/batch" and data["errors"] == {} and data["ok"] > 2
    assert _answered(image_server.url, "/predict/batch") - before == data["ok"]
    assert data["images_per_s"] == pytest.approx(3 * data["throughput_rps"])
    assert data["signature_source"].endswith(f"3 images from {tmp_path}")
    assert " images/s)" in report.read_text()


def test_server_metadata_alone_says_image_model(image_server: Server) -> None:
    """No bundle: the V2 metadata's BYTES input marks an image model, its tensor input the
    size; bench then sends generated JPEGs by itself (and --generated-images says so)."""
    for flags in ([], ["--generated-images"]):
        res = CliRunner().invoke(app, ["bench", image_server.url, "-d", "1s", "-c", "1", *flags])
        assert res.exit_code == 0, res.output
        text = " ".join(res.stdout.split())
        assert "/v2/models/cnn (image input 48x48)" in text, text
        assert f"generated {SIZE}x{SIZE} JPEGs" in text and "images/s" in text
        assert " ok, 0 errors (0.00%)" in text
    text = locustfile_for(image_server.url)
    assert "class ImageUser(HttpUser)" in text and f"host = {image_server.url!r}" in text


def test_cli_images_bad_dir(image_server: Server, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["bench", image_server.url, "--images", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "is not a directory" in missing.output
    empty = runner.invoke(app, ["bench", image_server.url, "--images", str(tmp_path)])
    assert empty.exit_code == 2 and "no .jpg, .jpeg, .png or .webp files" in empty.output
    both = runner.invoke(app, ["bench", image_server.url, "--images", str(tmp_path),
                               "--generated-images"])
    assert both.exit_code == 2 and "pick one" in both.output


def test_locustfile_for_image_bundle(image_bundle: Path, tmp_path: Path) -> None:
    text = locustfile_for(str(image_bundle))
    compile(text, "locustfile.py", "exec")
    assert "class ImageUser(HttpUser)" in text and "BATCH_SIZE = 4" in text
    assert f"8 generated {SIZE}x{SIZE} JPEGs" in text
    _write_images(tmp_path)
    own = CliRunner().invoke(app, ["locustfile", str(image_bundle), "--images", str(tmp_path),
                                   "-b", "2"])
    assert own.exit_code == 0 and "p2.webp" in own.stdout and "BATCH_SIZE = 2" in own.stdout


@pytest.mark.slow
def test_image_locustfile_runs_headless_without_failures(
        image_server: Server, image_bundle: Path, tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    if locust is None:
        pytest.skip("locust is not installed (it is in the dev extra)")
    lf = tmp_path / "locustfile.py"
    lf.write_text(locustfile_for(str(image_bundle)))
    before = _answered(image_server.url, "/predict") + _answered(image_server.url,
                                                                 "/predict/batch")
    proc = subprocess.run(
        [locust, "-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "3s",
         "--host", image_server.url, "--only-summary", "--csv", str(tmp_path / "s"),
         "--exit-code-on-error", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with (tmp_path / "s_stats.csv").open() as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    sent = int(rows["predict"]["Request Count"]) + int(rows.get(
        "predict/batch", {"Request Count": "0"})["Request Count"])
    after = _answered(image_server.url, "/predict") + _answered(image_server.url,
                                                                "/predict/batch")
    # the server answered every request locust counted (and maybe in-flight ones it dropped at
    # the stop): the scenario's bodies go through the image path, not into 4xx/5xx
    assert sent > 3 and after - before >= sent
