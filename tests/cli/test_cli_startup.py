"""The CLI's start-up path: what `import packserve.cli` and a plain scan import, and the
fast path agreeing with the typer command it shortcuts (speed itself: benchmarks/bench_scan.py)."""

from __future__ import annotations

import inspect
import json
import pickle
import subprocess
import sys
from pathlib import Path

import typer

from packserve.cli import typer_app
from packserve.cli.fastpath import SCAN_FLAGS
from packserve.cli.scan import scan_cmd

HEAVY = ["numpy", "pydantic", "pydantic_settings", "onnx", "onnxruntime", "fastapi", "starlette",
         "torch", "sklearn", "rich", "typer", "packserve.bundle", "packserve.pack", "packserve.serve"]


def _imported(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1].split()


def test_import_packserve_cli_is_light() -> None:
    assert _imported("import packserve, packserve.cli") == []
    assert "pydantic" in _imported("import packserve.bundle")  # the probe sees what it should


def test_scan_of_a_tiny_pickle_imports_no_heavy_module(tmp_path: Path) -> None:
    f = tmp_path / "one.pkl"
    f.write_bytes(pickle.dumps({"a": [1, 2.0, "x"]}, protocol=4))
    code = (
        "from packserve.cli import main\n"
        "try:\n"
        f"    main(['scan', {str(f)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    assert _imported(code) == []


def test_fast_path_flags_are_the_typer_commands_flags() -> None:
    options = {}
    for p in inspect.signature(scan_cmd).parameters.values():
        if isinstance(p.default, typer.models.OptionInfo):
            options[p.default.param_decls[0]] = p.name
    assert options == SCAN_FLAGS


def test_fast_path_and_typer_give_the_same_answer(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps([1, 2], protocol=2))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    for args in (["scan", ok], ["scan", ok, evil, "--json"], ["scan", evil, "--sarif"]):
        argv = [str(a) for a in args]
        fast = subprocess.run([sys.executable, "-m", "packserve", *argv], capture_output=True,
                              text=True)
        slow = CliRunner().invoke(typer_app.app, argv)
        assert fast.returncode == slow.exit_code
        if "--json" in argv:
            assert json.loads(fast.stdout) == json.loads(slow.stdout)
    both = subprocess.run([sys.executable, "-m", "packserve", "scan", str(ok), "--json", "--sarif"],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "mutually exclusive" in both.stderr


def test_lazy_serve_is_listed_with_its_own_short_help() -> None:
    from packserve.cli.serve import serve

    load, short, after = typer_app.LAZY["serve"]
    assert load() is serve
    assert short == inspect.getdoc(serve).splitlines()[0]  # type: ignore[union-attr]
    from typer.testing import CliRunner

    listing = CliRunner().invoke(typer_app.app, ["--help"], env={"COLUMNS": "200"}).stdout
    names = [line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line.strip()]
    assert names.index("serve") == names.index(after) + 1
    assert "--max-batch" in CliRunner().invoke(typer_app.app, ["serve", "--help"]).stdout
