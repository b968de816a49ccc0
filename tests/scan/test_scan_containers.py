"""Container handling: caps, skipping raw tensor data, content sniffing, nesting."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
from pathlib import Path

from scan_payloads import BENIGN, EVIL, torch_zip, zip_bytes

from packserve.errors import ExitCode
from packserve.scan import scan, scan_bytes
from packserve.scan.scanner import Scanner


def test_decompression_cap_is_an_error_not_clean(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.joblib"
    bomb.write_bytes(gzip.compress(b"(" + b"N" * (20 << 20)))  # 20 MB of opcodes, tiny file
    report = Scanner(max_decompressed=1 << 20).scan_path(bomb)
    assert report.exit_code == ExitCode.SCAN_INCOMPLETE and not report.clean
    assert "cap" in report.errors[0].reason


def test_extension_is_never_trusted(tmp_path: Path) -> None:
    for name in ("weights.safetensors", "model.onnx", "notes.txt", "noext"):
        p = tmp_path / name
        p.write_bytes(gzip.compress(EVIL))
        assert scan(p).exit_code == 1, name


def test_storage_members_are_skipped_but_crc_checked(tmp_path: Path, legit_dir: Path) -> None:
    src = legit_dir / "state_dict.pt"
    with zipfile.ZipFile(src) as zf:
        storages = [n for n in zf.namelist() if "/data/" in n]
    assert storages
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(storages[0])
    # flip a byte inside the raw tensor data: not a pickle, but the CRC catches it
    nlen, xlen = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    offset = info.header_offset + 30 + nlen + xlen  # torch pads the *local* extra field
    data[offset + 1] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    rules = {f.rule for f in scan(bad).findings}
    assert rules == {"zip-crc"}
    assert scan(bad, verify_crc=False).clean  # opt-out skips the tensor CRC pass


def test_tar_links_are_findings(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    assert "tar-anomaly" in {f.rule for f in scan_bytes(buf.getvalue()).findings}


def test_members_are_reported_with_their_path() -> None:
    data = zip_bytes([("outer/inner.zip", torch_zip(EVIL))])
    (f, *_) = scan_bytes(data, "a.zip").findings
    assert f.file == "a.zip" and f.member == "outer/inner.zip/archive/data.pkl"
    assert f.global_name == "os.system" and f.offset == 2


def test_empty_and_benign_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert scan(tmp_path / "empty").clean
    assert scan_bytes(torch_zip(BENIGN)).clean
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    assert scan(empty_dir).clean


def test_zip_inside_streams_is_scanned() -> None:
    gz = gzip.compress(torch_zip(EVIL))
    assert "dangerous-global" in {f.rule for f in scan_bytes(gz).findings}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        body = torch_zip(EVIL)
        info = tarfile.TarInfo("ckpt.pt")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    assert "dangerous-global" in {f.rule for f in scan_bytes(buf.getvalue()).findings}
    assert scan_bytes(gzip.compress(torch_zip(BENIGN))).clean


def test_value_bomb_is_a_scan_error_not_clean() -> None:
    from packserve.scan.pickle.opcodes import MAX_VALUES

    report = scan_bytes(b"\x80\x04" + b"N" * (MAX_VALUES + 10) + b".")
    assert report.exit_code == ExitCode.SCAN_INCOMPLETE
    assert "too large to verify" in report.errors[0].reason
