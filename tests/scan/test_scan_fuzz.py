"""Fuzz: random and mutated bytes never crash or hang the scanner, and it never fails open.

The differential check: whenever the scanner calls a stream *clean*, a real unpickler (C and
pure-Python) run on the same bytes with a recording ``find_class`` (which resolves nothing and
returns an inert stub) must only ever ask for globals the policy allows.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import time
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scan_payloads import BENIGN, EVIL, P4, SG, STOP, call, joblib_bytes, torch_zip

from packserve.errors import ExitCode
from packserve.scan import ScanReport, scan_bytes
from packserve.scan.policy import is_allowed, plausible_module


class Stub:
    """Inert stand-in for any class or function: accepts everything, does nothing."""

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def __call__(self, *a: Any, **k: Any) -> Stub:
        return Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, x: Any) -> None:
        pass

    def extend(self, x: Any) -> None:
        pass

    def __setitem__(self, k: Any, v: Any) -> None:
        pass

    def add(self, x: Any) -> None:
        pass


def requested_globals(data: bytes) -> set[tuple[str, str]]:
    """Globals a real unpickler asks for on ``data`` (resolving none of them)."""
    seen: set[tuple[str, str]] = set()

    def make(base: type) -> Any:
        class Recording(base):  # type: ignore[misc, valid-type]
            def find_class(self, module: str, name: str) -> Any:
                seen.add((module, name))
                return Stub

            def persistent_load(self, pid: Any) -> Any:
                return Stub()

        return Recording

    for base in (pickle.Unpickler, pickle._Unpickler):  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):  # malformed input is expected
            make(base)(io.BytesIO(data)).load()
    return seen


def check(data: bytes) -> ScanReport:
    t0 = time.perf_counter()
    report = scan_bytes(data, "fuzz")
    assert time.perf_counter() - t0 < 5.0
    assert report.exit_code in (ExitCode.OK, ExitCode.UNSAFE, ExitCode.SCAN_INCOMPLETE, ExitCode.NOT_A_PICKLE)
    assert not report.errors or report.exit_code not in (ExitCode.OK, ExitCode.NOT_A_PICKLE)
    if report.clean:
        asked = requested_globals(data)
        bad = {g for g in asked if plausible_module(g[0]) and not is_allowed(*g)}
        assert not bad, f"scanner said clean but an unpickler asks for {bad}"
    return report


SEEDS = [
    BENIGN,
    EVIL,
    pickle.dumps(np.arange(6.0).reshape(2, 3), protocol=2),
    pickle.dumps({"a": [1, 2, (3, "x")], "b": np.float32(2)}, protocol=5),
    P4 + call(SG("builtins", "set"), "ab") + STOP,
    torch_zip(BENIGN),
    joblib_bytes({"a": np.arange(4.0)}),
    joblib_bytes({"a": np.arange(4.0)}, compress=3),
]

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_after_proto(data: bytes) -> None:
    check(b"\x80\x04" + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        else:
            j = draw(st.integers(0, len(data) - 1))
            data[i:i] = data[j : j + 12]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_real_files(data: bytes) -> None:
    check(data)


def test_seeds_themselves() -> None:
    assert check(BENIGN).clean
    assert check(EVIL).exit_code == 1


NAMES = [
    ("os", "system"),
    ("builtins", "eval"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("numpy", "dtype"),
    ("mymod", "X"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("collections", "OrderedDict.fromkeys"),
]


@st.composite
def opcode_streams(draw: st.DrawFn) -> bytes:
    """Structured streams: plausible opcode sequences, so the stack and memo get exercised."""
    import struct

    out = bytearray()
    if draw(st.booleans()):
        out += b"\x80" + bytes([draw(st.integers(0, 5))])
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.integers(0, 17))
        mod, name = draw(st.sampled_from(NAMES))
        if kind == 0:
            out += b"c" + mod.encode() + b"\n" + name.encode() + b"\n"
        elif kind == 1:
            for s in (mod, name):
                out += b"\x8c" + bytes([len(s)]) + s.encode()
            out += b"\x93"
        elif kind == 2:
            out += b"i" + mod.encode() + b"\n" + name.encode() + b"\n"
        elif kind == 3:
            out += draw(st.sampled_from([b"q", b"h"])) + bytes([draw(st.integers(0, 4))])
        elif kind == 4:
            out += b"\x94"
        elif kind == 5:
            n = draw(st.integers(0, 64))
            out += b"\x95" + struct.pack("<Q", n)
        elif kind == 6:
            s = draw(st.sampled_from([mod, name, "x"]))
            out += b"\x8c" + bytes([len(s)]) + s.encode()
        elif kind == 7:
            out += b"B" + struct.pack("<I", len(EVIL)) + EVIL
        elif kind == 8:
            out += b"S'" + mod.encode() + b"'\n"
        elif kind == 9:
            out += b"g" + str(draw(st.integers(0, 4))).encode() + b"\n"
        elif kind == 10:
            out += b"p" + str(draw(st.integers(0, 4))).encode() + b"\n"
        elif kind == 11:
            out += bytes([draw(st.integers(0, 255))])
        else:
            out += draw(
                st.sampled_from(
                    [
                        b"(",
                        b"t",
                        b")",
                        b"]",
                        b"}",
                        b"R",
                        b"\x81",
                        b"b",
                        b"o",
                        b"a",
                        b"e",
                        b"s",
                        b"u",
                        b"N",
                        b"K\x01",
                        b"2",
                        b"0",
                        b"1",
                        b"\x85",
                        b"\x86",
                        b"\x87",
                        b"l",
                        b"d",
                        b".",
                    ]
                )
            )
    if draw(st.booleans()):
        out += b"."
    return bytes(out)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(opcode_streams())
def test_structured_streams_never_fail_open(data: bytes) -> None:
    check(data)


CONTAINER_SEEDS = [
    torch_zip(BENIGN),
    torch_zip(BENIGN, [("archive/extra.pkl", BENIGN)]),
    joblib_bytes({"a": np.arange(4.0)}, compress=("gzip", 3)),
]


@st.composite
def mutated_containers(draw: st.DrawFn) -> bytes:
    import gzip
    import zipfile

    from scan_payloads import npy_object, tar_bytes, zip_bytes

    seeds = [
        *CONTAINER_SEEDS,
        zip_bytes([("a.pkl", BENIGN)], zipfile.ZIP_DEFLATED),
        tar_bytes([("x", BENIGN)]),
        gzip.compress(BENIGN),
        npy_object(BENIGN),
    ]
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[i] = draw(st.integers(0, 255))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_containers())
def test_mutated_containers_never_break_the_scanner(data: bytes) -> None:
    report = scan_bytes(data, "fuzz")
    assert not any("could not parse" in e.reason for e in report.errors), report.errors
