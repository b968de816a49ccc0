"""The README's end-to-end demo: train -> pack -> scan -> serve -> predict -> bench, then an
image classifier (:mod:`packserve.demo.images`) served and asked about JPEGs.

Everything runs for real on a built-in example (the chapter's XGBoost model on
``make_classification``): the server is a real ``packserve serve`` subprocess on a free
127.0.0.1 port, predictions go over HTTP, and the short bench is open loop (a fixed offered
rate, latency from each request's scheduled send time: the README's question) with
packserve's own load generator. Files go to a temporary folder that is removed at the end
unless ``keep`` (or a ``workdir`` of the caller's). Like the CLI, this module only wires the
layers together.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from packserve.errors import ExitCode, PackserveError

IMAGE_STEP_NEEDS = ("torch", "onnxscript", "PIL")  # step 8 (pack a CNN to ONNX, decode JPEGs)


class _Malicious:
    """The chapter's attack: unpickling this calls ``os.system`` (we only ever *write* it)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo 'You have been compromised'",))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train() -> tuple[Any, np.ndarray, np.ndarray, float, float]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from xgboost import XGBClassifier

    x, y = make_classification(n_samples=5000, n_features=15, n_informative=10, random_state=42)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=42)
    t = time.perf_counter()
    model = XGBClassifier(
        n_estimators=100, max_depth=6, learning_rate=0.1, random_state=42, eval_metric="logloss"
    ).fit(xtr, ytr)
    train_s = time.perf_counter() - t
    acc = float((model.predict(xte) == yte).mean())
    return model, xte, yte, acc, train_s


@contextlib.contextmanager
def _server(bundle: Path, port: int, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    import httpx

    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "packserve", "serve", str(bundle), "--port", str(port),
             "--log-level", "warning", *extra],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise PackserveError(f"the demo server exited early (log: {log})")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise PackserveError(f"the demo server was not ready after 60 s (log: {log})")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _scan_step(con: Console, root: Path, model: Any) -> bool:
    """Scan two pickle files without executing them: the same model as a colleague would send
    it, and the chapter's attack."""
    from packserve.scan import scan

    legacy = root / "legacy_model.pkl"
    legacy.write_bytes(pickle.dumps(model))  # what a colleague would send
    attack = root / "model_from_the_internet.pkl"
    attack.write_bytes(pickle.dumps(_Malicious()))
    con.print(f"{legacy.name}: the model trained in step 1, saved with pickle the way models are "
              "often handed over (the bundle above needs no pickle).\n"
              f"{attack.name}: the chapter's attack, a pickle whose loading runs a shell "
              "command.\nscan reads their opcodes and never executes them:", soft_wrap=True)
    table = Table("file", "verdict", "findings", "first finding")
    table.columns[0].no_wrap = True  # file names are never cut
    table.columns[1].no_wrap = True
    table.columns[3].overflow = "fold"
    ok = True
    for path in (legacy, attack):
        rep = scan(path)
        first = rep.findings[0].reason if rep.findings else ""
        table.add_row(path.name, "clean" if rep.clean else "[red]REFUSED[/]", str(len(rep.findings)), first)
        ok &= rep.clean == (path is legacy)
    con.print(table)
    return ok


def _pack_step(con: Console, root: Path, model: Any, xte: np.ndarray) -> Any:
    """Pack with measured parity; returns the PackResult."""
    import packserve

    t = time.perf_counter()
    res = packserve.pack(model, root / "bundle", sample=xte, name="fraud", force=True)
    pack_s = time.perf_counter() - t
    p = res.manifest.parity
    con.print(f"bundle: {res.path}  ({res.manifest.files['model.onnx'].size / 1024:.0f} KiB, "
              f"opsets {res.manifest.opsets}, packed in {pack_s:.2f} s)", soft_wrap=True)
    con.print(f"parity on {p.rows} held-out rows: label agreement {p.label_agreement:.2%}, "
              f"max |Δprobability| {p.max_abs_diff_probability:.2e} (tolerance {p.tolerance:g}) "
              f"-> {'[green]PASS[/]' if p.passed else '[red]FAIL[/]'}")
    return res


def _predict_step(con: Console, url: str, model: Any, xte: np.ndarray) -> bool:
    """Single and batch predictions over HTTP against the native model, and one bad request."""
    import httpx

    rows = xte[:5]
    native = model.predict_proba(rows)[:, 1]
    single = httpx.post(f"{url}/predict", json={"features": rows[0].tolist()}).json()
    batch = httpx.post(
        f"{url}/predict/batch", json={"instances": [{"features": r.tolist()} for r in rows]}
    ).json()
    pt = Table("row", "prediction", "P(class 1) served", "P(class 1) native", "|Δ|")
    ok = True
    for i, pred in enumerate(batch["predictions"]):
        served = pred["probabilities"]["1"]
        pt.add_row(str(i), str(pred["prediction"]), f"{served:.6f}", f"{native[i]:.6f}",
                   f"{abs(served - native[i]):.1e}")
        ok &= abs(served - native[i]) <= 1e-5
    con.print(f"POST /predict -> {single}")
    con.print(pt)
    bad = httpx.post(f"{url}/predict", json={"features": [1.0] * 14})
    con.print(f"a bad request (14 features) -> HTTP {bad.status_code}: {bad.json()}")
    return ok and bad.status_code == 422


def _bench_step(con: Console, url: str, pid: int, bundle: Path, root: Path, *, rate: float,
                seconds: float, kept: bool) -> bool:
    """Open loop: ``rate`` requests/s whatever the server does, latency from each request's
    scheduled send time; the HTML report goes next to the bundle."""
    from packserve.bench import render_table, run_bench, write_html

    result = run_bench(url, rate=rate, duration=seconds, pid=pid, bundle=bundle)
    con.print(render_table(result))
    report = write_html(result, root / "bench-report.html")
    con.print(f"HTML report: {report}" + ("" if kept else " (removed with the folder at the end; "
              "--keep keeps it)"), soft_wrap=True)
    return result.phase.error_count == 0


def _lower_priority() -> None:  # pragma: no cover - runs in the child before exec
    os.nice(10)


@contextlib.contextmanager
def _image_builder(root: Path) -> Iterator[subprocess.Popen[bytes] | None]:
    """Build and pack the image step's CNN in a background process at low priority while the
    tabular steps run: importing torch and exporting to ONNX take seconds that the steps'
    waits (server start, the open-loop bench, the drain) hide. Killed if still running.
    None when torch, onnxscript or Pillow is not installed (the step is then skipped)."""
    if any(importlib.util.find_spec(m) is None for m in IMAGE_STEP_NEEDS):
        yield None
        return
    with (root / "images-build.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "packserve.demo.images", str(root)],
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_lower_priority)  # only os.nice: fork-safe
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _image_step(con: Console, root: Path, builder: subprocess.Popen[bytes] | None) -> bool:
    """The colour CNN (:mod:`packserve.demo.images`, packed by ``builder``) with its
    preprocessing and class names, served by its own server, asked about JPEGs (raw body,
    multipart) and compared with ``packserve.load`` in-process."""
    import httpx

    if builder is None:
        con.print("skipped: needs torch, onnxscript and Pillow "
                  "(pip install 'packserve[torch,images]')")
        return True

    import packserve
    from packserve.bundle import read_manifest
    from packserve.demo import images as di

    if builder.wait(timeout=300) != 0:
        con.print(f"[red]building the image model failed[/] (log: {root / 'images-build.log'})")
        return False
    built = json.loads((root / "colours.json").read_text())
    bundle = Path(built["path"])
    pre = read_manifest(bundle).preprocess
    assert pre is not None and pre.crop is not None
    con.print(f"a CNN (3 conv layers, 10 colour classes; weights set in code: it scores the "
              f"picture's mean colour, built in {built['build_s'] * 1000:.0f} ms), packed to "
              f"ONNX in {built['pack_s']:.2f} s (in a background process since step 1) with "
              f"its preprocessing in the manifest (resize {pre.resize}, center crop "
              f"{pre.crop[0]}x{pre.crop[1]}, ImageNet mean/std, {pre.layout}) and its class "
              "names. JPEGs of other sizes, never seen, asked over HTTP:", soft_wrap=True)
    asked = di.questions()
    local = packserve.load(bundle)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _server(bundle, port, root / "server-images.log", "--shutdown-grace-s", "0"):
        raw = httpx.post(f"{url}/predict?top_k=3", content=asked["orange"],
                         headers={"Content-Type": "image/jpeg"}, timeout=30)
        files = [("file", (f"{c}.jpg", asked[c], "image/jpeg")) for c in ("blue", "green")]
        multi = httpx.post(f"{url}/predict", files=files, timeout=30)
    ok = raw.status_code == 200 and multi.status_code == 200
    served = [raw.json()] + multi.json()["predictions"] if ok else []
    table = Table("request", "picture", "served label", "P(label)", "in-process", "|Δ|")
    for (how, colour), pred in zip([("raw image/jpeg", "orange"), ("multipart 1/2", "blue"),
                                    ("multipart 2/2", "green")], served, strict=False):
        probs = local.predict_images(asked[colour]).probabilities
        want = float(probs[0].max()) if probs is not None else float("nan")
        diff = abs(pred["probability"] - want)
        table.add_row(how, colour, pred["prediction"], f"{pred['probability']:.4f}",
                      f"{want:.4f}", f"{diff:.1e}")
        ok &= pred["prediction"] == colour and diff <= 1e-5
    con.print(table)
    if served:
        top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in served[0]["top_k"])
        con.print(f"POST /predict?top_k=3 (the orange JPEG) -> top 3: {top}")
    return ok and len(served) == 3


def run_demo(workdir: Path | None = None, *, bench_seconds: float = 3.0, bench_rate: float = 200.0,
             keep: bool = False, console: Console | None = None) -> int:
    """Run the whole demo, printing a report. Returns the process exit code (0 = all good).

    Files go to ``workdir`` (kept), or to a temporary folder removed at the end unless ``keep``.
    """
    con = console or Console()
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="packserve-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    remove = workdir is None and not keep
    try:
        ok = _run(con, root, bench_seconds=bench_seconds, bench_rate=bench_rate, kept=not remove)
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)
    where = (f"{root} (temporary, removed; --keep keeps it)" if remove else str(root))
    con.print(f"\nworking directory: {where}", soft_wrap=True)
    con.print("[bold green]demo OK[/]" if ok else "[bold red]demo found a problem (see above)[/]")
    return ExitCode.OK if ok else ExitCode.FAILED


def _run(con: Console, root: Path, *, bench_seconds: float, bench_rate: float, kept: bool) -> bool:
    with _image_builder(root) as builder:
        return _steps(con, root, builder, bench_seconds=bench_seconds, bench_rate=bench_rate,
                      kept=kept)


def _steps(con: Console, root: Path, builder: subprocess.Popen[bytes] | None, *,
           bench_seconds: float,
           bench_rate: float, kept: bool) -> bool:
    con.rule("[bold]1. train[/] the chapter's XGBoost model")
    model, xte, _yte, acc, train_s = _train()
    con.print(f"XGBClassifier(100 trees, depth 6) on make_classification(5000 x 15): "
              f"test accuracy {acc:.4f}, trained in {train_s:.2f} s")
    con.rule("[bold]2. pack[/] to ONNX with measured parity")
    res = _pack_step(con, root, model, xte)
    ok = res.manifest.parity.passed
    con.rule("[bold]3. scan[/] legacy pickle files without loading them")
    ok &= _scan_step(con, root, model)

    con.rule("[bold]4. serve[/] the bundle over HTTP (a real packserve server)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _server(res.path, port, root / "server.log") as proc:
        con.print(f"serving at {url}  (pid {proc.pid}; docs at {url}/docs)")
        con.rule("[bold]5. predict[/] over HTTP, compared with the native model")
        ok &= _predict_step(con, url, model, xte)
        con.rule(f"[bold]6. bench[/] open loop: {bench_rate:g} req/s offered for {bench_seconds:g} s, "
                 "/predict")
        ok &= _bench_step(con, url, proc.pid, res.path, root, rate=bench_rate, seconds=bench_seconds,
                          kept=kept)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
    con.rule("[bold]7. shutdown[/]")
    con.print(f"SIGTERM -> server drained and exited with code {code}")
    con.rule("[bold]8. images[/] a CNN with its preprocessing in the bundle, JPEGs over HTTP")
    ok &= _image_step(con, root, builder)
    return ok and code == 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_demo())
