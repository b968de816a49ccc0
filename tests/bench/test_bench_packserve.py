"""bench and locustfile against a real ``packserve serve`` of the chapter model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.server import Server
from packserve.bench import find_max, locustfile_for, run_bench
from packserve.cli import app


def _server_counts(url: str) -> tuple[float, float]:
    """(requests answered 200 on /predict, their summed server-side seconds) from /metrics."""
    import httpx

    ok = total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith('packserve_requests_total{method="POST",route="/predict",status="200"}'):
            ok = float(line.split()[-1])
        elif line.startswith('packserve_request_duration_seconds_sum{route="/predict"}'):
            total = float(line.split()[-1])
    return ok, total


def test_open_loop_against_packserve(packserve_server: Server) -> None:
    ok0, secs0 = _server_counts(packserve_server.url)
    r = run_bench(packserve_server.url, rate=100, duration=2.0)
    ok1, secs1 = _server_counts(packserve_server.url)
    assert r.phase.errors == {}, r.phase.errors
    assert r.phase.ok == r.phase.sent == 200
    assert ok1 - ok0 == 200  # the server counted exactly what we counted
    # the client's latency contains the server's time: its mean can only be larger
    server_mean_ms = (secs1 - secs0) / 200 * 1000
    assert r.latency.mean_ms >= server_mean_ms > 0
    # signature from the server: names from /models, dtypes from the V2 metadata
    assert "server metadata for 'fraud'" in r.signature_source
    assert "dtypes from /v2/models/fraud" in r.signature_source
    mem = r.resources.rss_mib()  # from the server's /metrics process collector
    assert mem is not None and mem["peak"] > 20
    assert r.resources.cpu_cores() is not None


def test_batch_and_named_model_with_bundle_rows(packserve_server: Server,
                                                chapter_bundle: Path) -> None:
    r = run_bench(packserve_server.url, model="fraud", bundle=chapter_bundle, concurrency=4,
                  duration=1.5, batch_size=8)
    assert r.path == "/models/fraud/predict/batch"
    assert r.phase.errors == {} and r.phase.ok > 10
    assert r.rows_per_s == pytest.approx(8 * r.throughput)
    assert r.signature_source == "bundle 'fraud'"


def test_find_max_on_packserve_is_bounded_and_explained(packserve_server: Server) -> None:
    fm = find_max(packserve_server.url, step_duration=0.75, start_rate=400, max_steps=4,
                  slo_p99_ms=250)
    schedule = [100.0, 200.0, 300.0, 360.0]  # 0.25, 0.5, 0.75, 0.9 x start_rate
    rates = [round(s.phase.offered_rate, 1) for s in fm.steps]
    assert rates == sorted(rates)
    ramp = [r for r in rates if r in schedule]
    bisect = [r for r in rates if r not in schedule]
    assert ramp == schedule[:len(ramp)] and ramp  # the schedule, in order, from its start
    if all(fm.passed):  # every one of the 4 steps ran and passed, and no 5th was tried
        assert ramp == schedule and not bisect
        assert "every step up to 4 passed" in fm.stop_reason
    else:  # it stopped at the first failing step, after at most refine=2 bisection steps
        first_fail = min(r for r, ok in zip(rates, fm.passed, strict=True) if not ok)
        assert fm.stop_reason.startswith(f"at {first_fail:g} req/s offered"), fm.stop_reason
        assert len(bisect) <= 2
        assert all(r < max(ramp) for r in bisect)
    if fm.passed[0]:
        assert fm.max_throughput > 0.8 * 100  # 0.25 x 400 offered was sustained


def test_cli_json_and_report(packserve_server: Server, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["bench", packserve_server.url, "-r", "50", "-d", "1s",
                                   "--json", "--report", str(report)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["mode"] == "open" and data["offered_rate"] == 50
    assert data["ok"] == 50 and data["errors"] == {}
    assert set(data["latency"]["percentiles_ms"]) == {"p50", "p90", "p95", "p99", "p99.9"}
    html = report.read_text()
    assert html.count("<svg") >= 3
    for external in ("src=", "href=", "<link", "<script", "@import"):  # self-contained
        assert external not in html


def test_cli_rejects_bad_flags(packserve_server: Server) -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["bench", packserve_server.url, "-r", "5", "-c", "2", "-d", "1s"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(app, ["bench", packserve_server.url, "-d", "soon"])
    assert bad.exit_code == 2 and "duration" in bad.output
    nomodel = runner.invoke(app, ["bench", packserve_server.url, "-m", "nope", "-d", "1s"])
    assert nomodel.exit_code == 2 and "nope" in nomodel.output
    nothing = runner.invoke(app, ["locustfile", "/no/such/bundle"])
    assert nothing.exit_code == 2 and "neither a bundle directory nor a server URL" in nothing.output
    ok = runner.invoke(app, ["locustfile", packserve_server.url])
    assert ok.exit_code == 0 and "class InferenceUser(HttpUser)" in ok.stdout


def test_locustfile_from_server_metadata(packserve_server: Server) -> None:
    text = locustfile_for(packserve_server.url)
    compile(text, "locustfile.py", "exec")
    assert f"host = {packserve_server.url!r}" in text and "'name': 'f14'" in text
    assert "@task(3)" in text and text.count("@task(1)") == 2  # the chapter's 3:1:1


@pytest.mark.slow
def test_generated_locustfile_runs_headless_without_failures(
        packserve_server: Server, chapter_bundle: Path, tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    if locust is None:
        pytest.skip("locust is not installed (it is in the dev extra)")
    text = locustfile_for(str(chapter_bundle), model="fraud")
    lf = tmp_path / "locustfile.py"
    lf.write_text(text)
    proc = subprocess.run(
        [locust, "-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "3s",
         "--host", packserve_server.url, "--only-summary", "--csv", str(tmp_path / "s"),
         "--exit-code-on-error", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with (tmp_path / "s_stats.csv").open() as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert int(rows["Aggregated"]["Request Count"]) > 5
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert {"predict", "health"} <= set(rows)  # the weighted tasks actually ran
