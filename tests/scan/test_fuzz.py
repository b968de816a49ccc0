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
    assert report.exit_code in (0, 1, 2)
    assert not report.errors or report.exit_code != 0
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
