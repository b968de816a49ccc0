"""Fail closed wherever the walker gives up: a limit, a stop after a plausible start, a parse
anomaly is a finding or "could not scan", never clean (issue #14). One test per place."""

from __future__ import annotations

import pickle
import zipfile
from io import BytesIO

import pytest
from scan_payloads import EVIL, P4, STOP, G

from packserve.scan import scan_bytes
from packserve.scan.pickle.machine import PICKLE_LIKE_OPS
from packserve.scan.pickle.values import MAX_LINE, SMALL_BYTES

SYSTEM = b"cos\nsystem\n(S'echo pwned'\ntR."  # protocol 0: GLOBAL os.system, REDUCE
PAST = 1 << 16  # longer than the walker's old 64 KiB line limit


def rules(data: bytes) -> set[str]:
    return {f.rule for f in scan_bytes(data).findings}


@pytest.mark.parametrize(
    ("first", "name"),
    [
        (b"I" + b" " * PAST + b"1\n", "INT padded"),
        (b"L" + b" " * PAST + b"1\n", "LONG padded"),
        (b"F" + b" " * PAST + b"1.5\n", "FLOAT padded"),
        (b"S'" + b"a" * PAST + b"'\n", "STRING"),
        (b"V" + b"a" * PAST + b"\n", "UNICODE"),
        (b"I" + b"1" * PAST + b"\n", "INT digits over int()'s limit"),
        (b"(I1\np" + b" " * PAST + b"0\n0", "PUT line"),
        (b"(I1\np0\ng" + b" " * PAST + b"0\n00", "GET line"),
    ],
)
def test_a_long_first_text_line_does_not_hide_what_follows(first: bytes, name: str) -> None:
    """The issue's case: Python's unpickler reads lines of any length and runs os.system."""
    report = scan_bytes(first + SYSTEM)
    assert report.exit_code == 1, (name, report.to_dict())
    assert "dangerous-global" in {f.rule for f in report.findings}, name


def test_a_long_global_name_is_read_whole_and_judged() -> None:
    # dotted names resolve attribute chains (protocol 4 find_class): a long one can be real
    name = ".".join(["__class__"] * (PAST // 9))
    report = scan_bytes(P4 + G("builtins", name) + b")R" + STOP)
    assert report.exit_code == 1
    (f,) = [f for f in report.findings if f.module == "builtins"]
    assert f.name is not None and len(f.name) < 5000 and f.name.endswith("\u2026")


def test_a_long_but_harmless_line_in_a_valid_pickle_is_clean() -> None:
    for value in ("x" * (2 * PAST), ["y" * (SMALL_BYTES + 10), 1.5, 7]):
        report = scan_bytes(pickle.dumps(value, protocol=0), "ok.pkl")
        assert report.clean and report.exit_code == 0, report.to_dict()
        assert report.files["ok.pkl"] == "pickle"


def test_a_line_past_the_hard_limit_is_could_not_scan() -> None:
    report = scan_bytes(b"V" + b"a" * (MAX_LINE + 1) + b"\n" + SYSTEM)
    assert not report.clean and report.exit_code not in (0, 1)
    assert "too large to verify" in report.errors[0].reason


def test_unknown_opcode_after_a_plausible_protocol_0_start_is_a_finding() -> None:
    for start in (b"I1\n", b"L7L\n", b"F2.5\n", b"S'abc'\n"):
        report = scan_bytes(start + b"\xff")
        assert "unknown-opcode" in {f.rule for f in report.findings}, start
        assert report.exit_code == 1


def test_a_long_run_of_opcodes_that_then_stops_is_a_finding() -> None:
    data = b"(" + b"N" * PICKLE_LIKE_OPS + b"\xff"
    assert "unknown-opcode" in rules(data)


def test_a_stop_after_protocol_is_a_finding() -> None:
    assert "unknown-opcode" in rules(b"\x80\x02N\xff")
    assert "truncated" in rules(b"\x80\x02(N")


def test_text_that_is_no_pickle_stays_not_a_pickle() -> None:
    for text in (b"Introduction\nmore\n", b"Version 1.0\nCopyright\n", b"(1, 2)\n", b"I like it\n"):
        report = scan_bytes(text, "t")
        assert report.findings == [] and report.errors == [], text


def test_too_many_pickles_in_a_row_is_could_not_scan() -> None:
    from packserve.scan.scanner import MAX_PICKLES

    report = scan_bytes(b"N." * (MAX_PICKLES + 5))
    assert any("not verified" in e.reason for e in report.errors)
    assert report.exit_code not in (0, 1) or report.findings  # data-after-stop may also be found


def test_a_nested_pickle_that_stops_after_a_global_is_judged() -> None:
    inner = b"\x80\x04" + G("os", "system") + b"\xff."  # stops after importing os.system
    outer = P4 + b"C" + bytes([len(inner)]) + inner + STOP
    assert "dangerous-global" in rules(outer)


def test_a_corrupt_pickle_member_in_a_zip_is_not_clean() -> None:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x89PNG not a pickle")
    report = scan_bytes(buf.getvalue(), "m.zip")
    assert not report.clean and report.errors


def test_known_evil_still_found() -> None:
    assert "dangerous-global" in rules(EVIL)
