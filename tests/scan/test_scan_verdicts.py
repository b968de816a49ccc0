"""What a scan calls a file, and its exit code (issue #14, #13, #21): harmless stdlib names are
allowed, an encrypted zip could not be scanned, a file with no pickle data is "not a pickle
format" (never clean), and every exit code means one thing."""

from __future__ import annotations
import __future__

import collections.abc
import io
import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

from scan_payloads import EVIL, encrypted_zip
from typer.testing import CliRunner

from packserve.cli import app
from packserve.errors import EXIT_CODES, ExitCode, PackserveError
from packserve.scan import scan, scan_bytes

README = Path(__file__).resolve().parents[2] / "README.md"
PNG = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + b"\x00" * 17
ONNX_LIKE = b"\x08\x07\x12\x07pytorch\x1a\x052.1.0:\x8a\x01\n"  # a protobuf ModelProto head


def test_harmless_stdlib_names_are_allowed() -> None:
    objs = [collections.abc.Iterable, collections.abc.Mapping, len, [len, max, sorted]]
    for obj in [*objs, __future__.annotations]:
        # a _Feature instance needs copyreg._reconstructor below protocol 2 (judged on its own)
        for proto in (0, 2, 4, 5) if obj in objs else (2, 4, 5):
            report = scan_bytes(pickle.dumps(obj, protocol=proto))
            assert report.findings == [], (obj, proto, report.to_dict())
    for bad in (getattr, eval, open, __import__):
        assert scan_bytes(pickle.dumps(bad, protocol=4)).findings, bad


def test_an_encrypted_zip_could_not_be_scanned_it_is_not_a_finding() -> None:
    report = scan_bytes(encrypted_zip(), "locked.zip")
    assert report.findings == [] and report.errors
    assert "encrypted" in report.errors[0].reason
    assert report.exit_code == ExitCode.SCAN_INCOMPLETE


def test_files_without_pickle_data_are_not_called_clean(tmp_path: Path) -> None:
    files = {
        "image.png": PNG,
        "table.csv": b"id,name,score\n1,ann,0.5\n2,bob,0.7\n",
        "model.onnx": ONNX_LIKE,
        "noise.bin": bytes(range(256)) * 4,
        "empty": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        report = scan(tmp_path / name)
        assert report.not_pickle == [str(tmp_path / name)], name
        assert report.exit_code == ExitCode.NOT_A_PICKLE, name
    # next to a verified pickle they are listed, and the repository scan passes
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    report = scan(tmp_path)
    assert report.exit_code == ExitCode.OK and report.clean
    assert sorted(Path(p).name for p in report.not_pickle) == sorted(files)
    assert report.summary() == f"1 file(s) verified, {len(files)} not a pickle format"
    (tmp_path / "evil.csv").write_bytes(EVIL)
    assert scan(tmp_path).exit_code == ExitCode.UNSAFE


def test_a_zip_holding_a_corrupt_pickle_could_not_be_scanned() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x89PNG not a pickle")
        zf.writestr("archive/version", b"3\n")
    report = scan_bytes(buf.getvalue(), "m.zip")
    assert report.findings == [] and report.exit_code == ExitCode.SCAN_INCOMPLETE
    assert report.errors[0].member == "archive/data.pkl"
    docs = io.BytesIO()
    with zipfile.ZipFile(docs, "w") as zf:
        zf.writestr("word/document.xml", b"<w:document/>")
    assert scan_bytes(docs.getvalue(), "a.docx").exit_code == ExitCode.NOT_A_PICKLE


def test_scan_cli_wording_and_counts(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(pickle.dumps([1], protocol=2))
    (tmp_path / "b.pkl").write_bytes(pickle.dumps([2], protocol=4))
    (tmp_path / "c.csv").write_bytes(b"x,y\n1,2\n")
    r = CliRunner().invoke(app, ["scan", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "clean: clean" not in r.stdout
    assert r.stdout.splitlines()[-1] == "clean: 2 file(s) verified, 1 not a pickle format"
    assert f"not a pickle format: {tmp_path / 'c.csv'}" in r.stdout
    only_csv = CliRunner().invoke(app, ["scan", str(tmp_path / "c.csv"), "--json"])
    assert only_csv.exit_code == ExitCode.NOT_A_PICKLE
    assert '"not_pickle"' in only_csv.stdout


def test_every_exit_code_is_distinct_and_documented_once() -> None:
    codes = [int(c) for c in ExitCode]
    assert len(set(codes)) == len(codes) and set(EXIT_CODES) == set(ExitCode)
    seen = {}
    stack: list[type[PackserveError]] = [PackserveError]
    while stack:
        cls = stack.pop()
        seen[cls.__name__] = cls.exit_code
        stack.extend(cls.__subclasses__())
    assert all(isinstance(c, ExitCode) for c in seen.values()), seen
    assert [n for n, c in seen.items() if c == ExitCode.UNSAFE] == ["UnsafeFileError"]
    text = README.read_text()
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|$", text.split("## Exit codes")[1], re.M))
    assert {int(k): v for k, v in table.items()} == {int(c): m for c, m in EXIT_CODES.items()}
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    for code, meaning in EXIT_CODES.items():
        assert f"{int(code):>3}  {meaning}" in listing


def test_a_long_list_of_non_pickles_is_cut_in_text_and_whole_in_json(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(pickle.dumps([1], protocol=4))
    for i in range(25):
        (tmp_path / f"t{i:02d}.csv").write_bytes(b"a,b\n")
    r = CliRunner().invoke(app, ["scan", str(tmp_path)])
    assert r.exit_code == ExitCode.OK
    assert r.stdout.count("not a pickle format: ") == 20 and "... and 5 more" in r.stdout
    assert r.stdout.splitlines()[-1] == "clean: 1 file(s) verified, 25 not a pickle format"
    body = CliRunner().invoke(app, ["scan", str(tmp_path), "--json"]).stdout
    assert len(json.loads(body)["not_pickle"]) == 25
