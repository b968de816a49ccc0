"""Format knowledge that lives *inside* pickle streams.

- joblib (uncompressed or after decompression) writes raw numpy array bytes right after each
  ``NumpyArrayWrapper`` BUILD, in the middle of the opcode stream; object arrays are a nested
  pickle at that point. We compute the exact byte count from the wrapper's state and skip it.
- legacy torch files (``_use_new_zipfile_serialization=False``) are five pickles in a row
  followed by raw storage records whose sizes the pickles declare.

Every mismatch is a finding: we never guess where opcodes resume.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from packserve.scan.context import Ctx, ScanHost, StorageInfo
from packserve.scan.pickle.machine import WalkState
from packserve.scan.pickle.opcodes import Walker
from packserve.scan.pickle.values import DictV, GlobalRef, Malformed, Obj
from packserve.scan.policy import judge, plausible_module
from packserve.scan.report import Severity
from packserve.scan.stream import Reader, bytes_reader

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
PLAIN_VIEW_BYTES = 1 << 16  # how much array data is also read as opcodes (plain-pickle view)

STORAGE_ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QUInt8Storage": 1,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}


_SIMPLE_DTYPE = re.compile(r"[<>|=]?([biufcmMSUV])(\d+)|[|=]?(\?)")


def _dtype_info(dtype: Any) -> tuple[int, bool] | None:
    """(itemsize, hasobject) from a pickled ``numpy.dtype`` reduce, without trusting it."""
    if not (isinstance(dtype, Obj) and isinstance(dtype.func, GlobalRef)):
        return None
    if dtype.func.name != "dtype" or not dtype.func.module.startswith("numpy"):
        return None
    args = dtype.args
    if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
        return None
    code = args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    hasobject = code.startswith("O") or bool(flags & 1)
    if hasobject:
        return 0, True
    if len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5], False
    simple = _SIMPLE_DTYPE.fullmatch(code)
    if simple:  # most dtypes: no numpy import (it costs more than scanning a small file)
        kind, size = simple.group(1), int(simple.group(2) or 1)  # "?" (bool): one byte
        return (size * 4 if kind == "U" else size), False
    import numpy as np

    try:
        return int(np.dtype(code).itemsize), False
    except (TypeError, ValueError):
        return None


def joblib_hook(scanner: ScanHost, w: WalkState, obj: Obj, ctx: Ctx) -> None:
    """After BUILD of a NumpyArrayWrapper: consume its array bytes exactly like joblib does."""
    f = obj.func
    if not (isinstance(f, GlobalRef) and (f.module, f.name) == JOBLIB_WRAPPER):
        return
    state = obj.state
    if not isinstance(state, DictV):
        raise Malformed("joblib array wrapper without a state dict", "joblib")
    shape = state.get("shape")
    info = _dtype_info(state.get("dtype"))
    if info is None or not isinstance(shape, tuple) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise Malformed("joblib array wrapper with an unverifiable shape or dtype", "joblib")
    itemsize, hasobject = info
    if w.frame_end is not None:
        if w.r.pos != w.frame_end:
            w.issue(
                Severity.HIGH,
                "frame",
                "joblib array data inside a FRAME (joblib reads it from after the frame)",
            )
        w.frame_end = None
    if hasobject:
        at = w.r.pos
        res = scanner.walk_one(w.r, ctx.child(f"[joblib object array @{at}]"), must_be_pickle=True)
        if res is None or not res.ok:
            raise Malformed("joblib object array: nested pickle is malformed", "joblib")
        return
    if any(k == "numpy_array_alignment_bytes" and v is not None for k, v in state.items):
        pad = w.r.read_byte()
        if pad < 0 or w.r.skip(pad) < pad:
            raise Malformed("joblib array padding truncated", "truncated")
    count = 1
    for x in shape:
        count *= x
    nbytes = count * itemsize
    head = w.r.read(min(nbytes, PLAIN_VIEW_BYTES))
    if len(head) < min(nbytes, PLAIN_VIEW_BYTES) or w.r.skip(nbytes - len(head)) < nbytes - len(head):
        raise Malformed("joblib array data truncated", "truncated")
    _plain_view(scanner, w, head, ctx)


def _plain_view(scanner: ScanHost, w: WalkState, head: bytes, ctx: Ctx) -> None:
    """What plain ``pickle.load`` (not joblib) would do: read the array bytes as opcodes.

    A file can be a joblib file for joblib and a different pickle for everyone else. The
    plain view continues with a copy of the current stack and memo; any global it can reach
    that the policy refuses is a finding.
    """
    side = Walker(bytes_reader(head))
    side.stack = list(w.stack)
    side.metastack = [list(m) for m in w.metastack]
    side.memo = dict(w.memo)
    res = side.walk()
    for g in res.globals:
        if not plausible_module(g.module):
            continue
        verdict = judge(g.module, g.name)
        if verdict is not None:
            scanner.finding(
                ctx,
                verdict.severity,
                "joblib-polyglot",
                f"joblib array bytes read as opcodes by a plain unpickler name "
                f"{g.module}.{g.name}: {verdict.reason}",
                offset=w.r.pos,
                module=g.module,
                name=g.name,
            )


def scan_torch_legacy(scanner: ScanHost, r: Reader, ctx: Ctx) -> list[StorageInfo]:
    """Pickles 2-5 of a legacy torch file, then exactly the declared storage records."""
    storages: list[StorageInfo] = []
    keys: Any = None
    for _ in range(4):
        res = scanner.walk_one(r, ctx, must_be_pickle=True)
        if res is None or not res.ok:
            return storages
        storages.extend(scanner.storages(res))
        keys = res.value
    by_key = {s.key: s for s in storages}
    if not (isinstance(keys, list) and all(isinstance(k, str) and k in by_key for k in keys)):
        scanner.finding(
            ctx,
            Severity.HIGH,
            "torch-legacy",
            "legacy torch file: storage key list does not match the declared storages",
            offset=r.pos,
        )
        return storages
    for key in keys:
        at = r.pos
        raw = r.read(8)
        size = STORAGE_ELEMENT_SIZE.get(by_key[key].type_name)
        if len(raw) < 8 or size is None:
            scanner.finding(
                ctx,
                Severity.HIGH,
                "torch-legacy",
                "legacy torch file: truncated or unknown storage record",
                offset=at,
            )
            return storages
        (count,) = struct.unpack("<q", raw)
        nbytes = count * size
        if count < 0 or r.skip(nbytes) < nbytes:
            scanner.finding(
                ctx,
                Severity.HIGH,
                "torch-legacy",
                "legacy torch file: storage record runs past the end",
                offset=at,
            )
            return storages
    if not r.at_end():
        scanner.finding(
            ctx,
            Severity.MEDIUM,
            "data-after-stop",
            "legacy torch file: data after the last storage record",
            offset=r.pos,
        )
        for _ in range(100):  # whatever follows is judged too, if it is a pickle
            res = scanner.walk_one(r, ctx)
            if res is None or not res.ok or r.at_end():
                break
    return storages


__all__ = ["JOBLIB_WRAPPER", "STORAGE_ELEMENT_SIZE", "TORCH_LEGACY_MAGIC", "joblib_hook", "scan_torch_legacy"]
