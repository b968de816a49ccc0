"""The Docker build context: content checks (no container engine here) and its CMD as a process."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import free_port
from packserve import __version__
from packserve.deploy.docker import IMAGE_MODEL_DIR, write_docker
from packserve.deploy.target import ModelRef, Target, inspect_target

ROW = [0.5] * 15


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def context(chapter_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "ctx"
    write_docker(inspect_target(chapter_bundle), out)
    return out


def test_context_layout_and_dockerignore(context: Path, chapter_bundle: Path) -> None:
    assert sorted(p.name for p in context.iterdir()) == [".dockerignore", "Dockerfile", "model"]
    assert sorted(p.name for p in (context / "model").iterdir()) == sorted(
        p.name for p in chapter_bundle.iterdir())
    ignore = (context / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*" and "!model/" in ignore  # allow-list: only the models


def test_dockerfile_content(context: Path) -> None:
    text = (context / "Dockerfile").read_text()
    ins = parse_dockerfile(text)
    words = [w for w, _ in ins]
    base = next(rest for w, rest in ins if w == "FROM")
    assert base == "python:3.11-slim"
    # non-root: a USER with a numeric uid != 0 before CMD, created by useradd
    user = next(rest for w, rest in ins if w == "USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    assert words.index("USER") < words.index("CMD")
    assert any("useradd" in rest for w, rest in ins if w == "RUN")
    # only the needed extras: an ONNX bundle needs none (no torch, no sklearn, no xgboost...)
    installs = [rest for w, rest in ins if w == "RUN" and "pip install" in rest]
    assert installs and all(f"'packserve=={__version__}'" in r for r in installs)
    assert not any(x in text for x in ("torch", "sklearn", "xgboost", "[dev]", "[all]"))
    # bundle copied in, read-only for the user
    copy = next(rest for w, rest in ins if w == "COPY")
    assert copy.endswith(f"model/ {IMAGE_MODEL_DIR}/") and "--chown=root:root" in copy
    assert f"chmod -R a+rX,go-w {IMAGE_MODEL_DIR}" in [rest for w, rest in ins if w == "RUN"][-1]
    assert words.index("COPY") < words.index("USER")  # root writes the models, the user reads them
    env = env_of(ins)
    assert env["PACKSERVE_MODEL_PATH"] == IMAGE_MODEL_DIR and env["PACKSERVE_HOST"] == "0.0.0.0"
    # HEALTHCHECK on readiness, exec form; one server process (no --workers), exec-form CMD
    health = next(rest for w, rest in ins if w == "HEALTHCHECK")
    assert "/health/ready" in health and " CMD [" in health
    assert json.loads(next(rest for w, rest in ins if w == "CMD")) == ["packserve", "serve"]
    assert "--workers" not in text and "EXPOSE" in words
    assert words.count("CMD") == 1 and "ENTRYPOINT" not in words


def test_torchscript_bundles_get_the_torch_extra_from_the_cpu_index(tmp_path: Path) -> None:
    from packserve.deploy.docker import dockerfile

    target = Target(tmp_path, True, (ModelRef("net", "1", "torchscript"),))
    text = dockerfile(target)
    assert f"'packserve[torch]=={__version__}'" in text
    assert "--index-url https://download.pytorch.org/whl/cpu 'torch==2.13.0'" in text


def test_granian_images_get_the_granian_extra_and_run_it(tmp_path: Path) -> None:
    from packserve.deploy.docker import dockerfile

    target = Target(tmp_path, True, (ModelRef("net", "1", "onnx"),))
    ins = parse_dockerfile(dockerfile(target, server="granian"))
    installs = [rest for w, rest in ins if w == "RUN" and "pip install" in rest]
    assert installs == [f"pip install 'packserve[granian]=={__version__}'"]
    assert env_of(ins)["PACKSERVE_SERVER"] == "granian"
    torch = Target(tmp_path, True, (ModelRef("net", "1", "torchscript"),))
    assert f"'packserve[torch,granian]=={__version__}'" in dockerfile(torch, server="granian")
    default = parse_dockerfile(dockerfile(target))  # uvicorn is core: no extra, named anyway
    assert env_of(default)["PACKSERVE_SERVER"] == "uvicorn" and "granian" not in dockerfile(target)


def test_an_unknown_server_is_refused_before_anything_is_written(
        chapter_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    proc = subprocess.run([sys.executable, "-m", "packserve", "deploy", "docker", str(chapter_bundle),
                           "--out", str(out), "--server", "gunicorn"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--server 'gunicorn'" in proc.stderr and "uvicorn, granian" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_image_bundles_get_the_images_extra(tmp_path: Path) -> None:
    """An image bundle (#17) decodes images with Pillow: the image installs ``[images]``."""
    import torch

    from packserve.deploy.docker import dockerfile
    from packserve.pack import pack

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten()).eval()
    out = tmp_path / "cnn"
    pack(model, out, sample=torch.randn(2, 3, 8, 8), name="cnn", task="multiclass",
         classes=["a", "b"], output="logits", preprocess={"resize": [8, 8]})
    target = inspect_target(out)
    assert [m.images for m in target.models] == [True] and target.extras == ("images",)
    assert f"'packserve[images]=={__version__}'" in dockerfile(target)


def test_a_local_wheel_is_copied_and_installed(chapter_bundle: Path, tmp_path: Path) -> None:
    wheel = tmp_path / f"packserve-{__version__}-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # only copied here, never installed
    out = tmp_path / "ctx"
    write_docker(inspect_target(chapter_bundle), out, wheel=wheel)
    text = (out / "Dockerfile").read_text()
    assert (out / "wheels" / wheel.name).is_file()
    assert f"'/tmp/wheels/{wheel.name}'" in text and "COPY wheels/ /tmp/wheels/" in text


def test_refuses_a_non_empty_folder(chapter_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "packserve", "deploy", "docker", str(chapter_bundle),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "x").read_text() == "keep me"


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_cmd_and_healthcheck_work_as_plain_processes(
        server: str, chapter_bundle: Path, tmp_path: Path, launch: Any) -> None:
    """No container engine here: run the image's CMD with the image's ENV (the model folder
    mapped to the context's copy, a free port) and then its HEALTHCHECK command, on either
    engine (the image of ``--server granian`` installs its extra; this venv has it)."""
    context = tmp_path / "ctx"
    write_docker(inspect_target(chapter_bundle), context, server=server)
    ins = parse_dockerfile((context / "Dockerfile").read_text())
    assert env_of(ins)["PACKSERVE_SERVER"] == server
    env = env_of(ins)
    port = free_port()
    env.update(PACKSERVE_MODEL_PATH=str(context / "model"), PACKSERVE_PORT=str(port))
    cmd = json.loads(next(rest for w, rest in ins if w == "CMD"))
    exe = Path(sys.executable).parent / cmd[0]
    cmd = [str(exe) if exe.exists() else cmd[0], *cmd[1:]]
    health = next(rest for w, rest in ins if w == "HEALTHCHECK")
    check = json.loads(health[health.index(" CMD [") + 5:])
    check[0] = sys.executable
    with launch(cmd, env, url=f"http://127.0.0.1:{port}", ready_path="/health/ready") as srv:
        r = httpx.post(f"{srv.url}/predict", json={"features": ROW})
        assert r.status_code == 200 and r.json()["model_version"] == "1.0.0"
        assert (r.headers.get("server") == "granian") == (server == "granian")
        ok = subprocess.run(check, env={"PACKSERVE_PORT": str(port)}, capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    down = subprocess.run(check, env={"PACKSERVE_PORT": str(port)}, capture_output=True, timeout=30)
    assert down.returncode != 0  # the server is gone: the health check fails
    assert srv.proc.returncode == 0
