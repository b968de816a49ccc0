"""The README demo end to end (in-process, short bench): order, wording, open loop, clean-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from packserve.demo import run as demo


@pytest.mark.slow  # trains 100 trees, packs, starts a real server: ~30 s on 2 cores
def test_demo_runs_in_the_readme_order_and_removes_its_folder() -> None:
    con = Console(record=True, width=80, color_system=None)
    code = demo.run_demo(bench_seconds=1.0, bench_rate=50.0, console=con)
    text = con.export_text()
    assert code == 0, text
    names = r"\d\. (train|pack|scan|serve|predict|bench|shutdown|images)\b"
    steps = [m.group(1) for m in re.finditer(names, text)]
    assert steps == ["train", "pack", "scan", "serve", "predict", "bench", "shutdown", "images"]
    # the image step (#17): colour pictures come back as their colours, served == in-process
    images = text.split("8. images")[1]
    for how, colour in (("raw image/jpeg", "orange"), ("multipart 1/2", "blue"),
                        ("multipart 2/2", "green")):
        row = re.search(rf"{re.escape(how)}\W+{colour}\W+(\w+)\W+([\d.]+)\W+([\d.]+)", images)
        assert row is not None and row.group(1) == colour, images
        assert row.group(2) == row.group(3)
    for name in ("legacy_model.pkl", "model_from_the_internet.pkl"):  # whole, at 80 columns
        assert re.search(rf"(?m)^\W*{re.escape(name)}\s", text), name
    assert "saved with pickle the way models are often handed over" in re.sub(r"\s+", " ", text)
    assert "open loop: 50 req/s offered" in text and "open loop, 50 req/s offered" in text
    assert "…" not in text.split("3. scan")[1].split("4. serve")[0]
    where = re.search(r"working directory: (\S+) \(temporary, removed", text)
    assert where is not None, text
    assert not Path(where.group(1)).exists()
    assert "demo OK" in text


def test_keep_and_workdir_keep_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Path] = []

    def fake_run(con: Console, root: Path, **_: object) -> bool:  # the steps, without the work
        (root / "bench-report.html").write_text("<html></html>")
        made.append(root)
        return True

    monkeypatch.setattr(demo, "_run", fake_run)
    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    assert demo.run_demo(console=quiet) == 0 and not made[-1].exists()
    assert demo.run_demo(keep=True, console=quiet) == 0 and made[-1].exists()
    import shutil

    shutil.rmtree(made[-1])
    assert demo.run_demo(tmp_path / "mine", console=quiet) == 0
    assert (tmp_path / "mine" / "bench-report.html").exists()


def test_image_step_is_skipped_without_its_extras(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No torch/onnxscript/Pillow: no background build is started and step 8 says why."""
    monkeypatch.setattr(demo, "IMAGE_STEP_NEEDS", ("torch", "no_such_module_for_the_demo"))
    con = Console(record=True, width=100, color_system=None)
    with demo._image_builder(tmp_path) as builder:
        assert builder is None
        assert demo._image_step(con, tmp_path, builder) is True
    assert not (tmp_path / "images-build.log").exists()
    assert "skipped: needs torch, onnxscript and Pillow" in con.export_text()
