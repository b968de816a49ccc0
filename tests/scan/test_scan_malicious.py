"""Every generated malicious payload is flagged (exit 1 or 2, never 0), without executing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from scan_payloads import PAYLOADS, Payload

from packserve.errors import ExitCode, PackserveError
from packserve.scan import ensure_safe, scan


def test_catalogue_is_large_enough() -> None:
    assert len(PAYLOADS) >= 40
    assert len({p.name for p in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.name)
def test_payload_is_flagged(payload: Payload, tmp_path: Path) -> None:
    path = payload.make(tmp_path)
    report = scan(path)
    assert report.exit_code == ExitCode.UNSAFE, report.to_dict()
    assert not report.clean
    rules = {f.rule for f in report.findings}
    assert rules & set(payload.rules), (payload.rules, report.to_dict())
    with pytest.raises(PackserveError):
        ensure_safe(path)


def test_directory_with_one_bad_file_is_flagged(tmp_path: Path, legit_dir: Path) -> None:
    import shutil

    d = tmp_path / "mixed"
    shutil.copytree(legit_dir, d)
    (d / "innocent_name.txt").write_bytes(PAYLOADS[0].make(tmp_path).read_bytes())
    report = scan(d)
    assert report.exit_code == 1
    assert {Path(f.file).name for f in report.findings} == {"innocent_name.txt"}
