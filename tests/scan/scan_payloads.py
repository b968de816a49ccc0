"""Malicious payloads, generated in code (never downloaded), and byte-level pickle builders.

Each ``Payload`` writes one file into a directory and says which rule(s) must be reported.
Nothing here is ever unpickled by the tests except in the demo's child process.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- opcode builders -------------------------------------------------------------------------

P2 = b"\x80\x02"
P4 = b"\x80\x04"
MARK, TUPLE, REDUCE, STOP, BUILD = b"(", b"t", b"R", b".", b"b"
EMPTY_DICT, EMPTY_TUPLE, NONE = b"}", b")", b"N"


def G(module: str, name: str) -> bytes:  # GLOBAL (text)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def U(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def SU(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def BB(data: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(data)) + data


def SG(module: str, name: str) -> bytes:  # STACK_GLOBAL from two strings
    return SU(module) + SU(name) + b"\x93"


def PUT(i: int) -> bytes:
    return b"q" + bytes([i])


def GET(i: int) -> bytes:
    return b"h" + bytes([i])


def call(head: bytes, *args: str) -> bytes:
    """``head`` pushes a callable; call it with string args via REDUCE."""
    return head + MARK + b"".join(U(a) for a in args) + TUPLE + REDUCE


def frame(body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return b"\x95" + struct.pack("<Q", n) + body


EVIL = P2 + call(G("os", "system"), "true") + STOP
BENIGN = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)


# --- containers ------------------------------------------------------------------------------


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, body in members:
            zf.writestr(name, body)
    return buf.getvalue()


def torch_zip(data_pkl: bytes, extra: list[tuple[str, bytes]] | None = None) -> bytes:
    return zip_bytes([("archive/data.pkl", data_pkl), ("archive/version", b"3\n"), *(extra or [])])


def legacy_torch(main: bytes, *, sys_info: bytes | None = None, tail: bytes = b"") -> bytes:
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    return (
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + (sys_info if sys_info is not None else pickle.dumps(info, protocol=2))
        + main
        + pickle.dumps([], protocol=2)
        + tail
    )


def npy_object(pickled: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pickled


def tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def patch_zip_local_name(data: bytes, old: bytes, new: bytes) -> bytes:
    """Rename a member in its *local* header only (same length)."""
    assert len(old) == len(new)
    i = data.index(b"PK\x03\x04")
    j = data.index(old, i)
    return data[:j] + new + data[j + len(new) :]


def hide_member(data: bytes, name: bytes) -> bytes:
    """Drop ``name``'s central-directory record: only streaming readers still see it."""
    eocd = data.rindex(b"PK\x05\x06")
    count, cd_size, cd_off = struct.unpack("<HIi", data[eocd + 10 : eocd + 20])
    cd = data[cd_off : cd_off + cd_size]
    out, i = b"", 0
    while i < len(cd):
        nlen, xlen, clen = struct.unpack("<HHH", cd[i + 28 : i + 34])
        rec = cd[i : i + 46 + nlen + xlen + clen]
        if cd[i + 46 : i + 46 + nlen] != name:
            out += rec
        i += len(rec)
    tail = data[eocd : eocd + 22]
    tail = tail[:8] + struct.pack("<HHIi", count - 1, count - 1, len(out), cd_off) + tail[20:]
    return data[:cd_off] + out + tail


def joblib_bytes(obj: object, compress: object = 0) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=compress)
    return buf.getvalue()


class Evil:
    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, ("true",))


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    name: str
    make: Callable[[Path], Path]
    rules: tuple[str, ...]  # at least one of these rules must be reported


def raw(name: str, data: bytes | Callable[[], bytes], *rules: str, fname: str = "") -> Payload:
    def make(d: Path) -> Path:
        p = d / (fname or f"{name}.bin")
        p.write_bytes(data() if callable(data) else data)
        return p

    return Payload(name, make, rules or ("dangerous-global",))


def _ts_injected(d: Path, which: str) -> bytes:
    """A real TorchScript archive with one pickle member replaced by an evil one."""
    import warnings

    import torch

    src = d / "ts_src.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 1)).save(str(src))
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename.endswith(which):
                # data.pkl stays a valid pickle with one global added; others become EVIL
                injected = body[:2] + G("builtins", "eval") + b"0" + body[2:]
                body = injected if which == "data.pkl" else EVIL
            zout.writestr(info, body)
    src.unlink()
    return out.getvalue()


def ts_payload(name: str, which: str) -> Payload:
    def make(d: Path) -> Path:
        p = d / f"{name}.pt"
        p.write_bytes(_ts_injected(d, which))
        return p

    return Payload(name, make, ("dangerous-global",))


def _crc_broken() -> bytes:
    data = bytearray(torch_zip(BENIGN))
    i = bytes(data).index(BENIGN[-8:])  # flip one byte of the member's content
    data[i] ^= 0x01
    return bytes(data)


def encrypted_zip() -> bytes:
    """A torch zip whose member is flagged encrypted (as a password-protected zip is)."""
    data = bytearray(torch_zip(BENIGN))
    i = bytes(data).index(b"PK\x01\x02")  # central directory flag bits
    data[i + 8] |= 1
    j = bytes(data).index(b"PK\x03\x04")
    data[j + 6] |= 1
    return bytes(data)


def _duplicate() -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zip_bytes([("archive/data.pkl", BENIGN), ("archive/data.pkl", EVIL)])


def _joblib_lying_shape() -> bytes:
    data = joblib_bytes({"a": np.arange(4.0)})
    return data[: len(data) - 20]  # array bytes cut short


def _stack_global_non_str() -> bytes:
    # STACK_GLOBAL whose module operand is computed (str(b'os')) rather than a string literal.
    return (
        P4
        + call(G("builtins", "str"), "os")
        + SU("system")
        + b"\x93"
        + MARK
        + U("true")
        + TUPLE
        + REDUCE
        + STOP
    )


PAYLOADS: list[Payload] = [
    # call paths
    raw("reduce_global", EVIL),
    raw("reduce_dumps_posix", lambda: pickle.dumps(Evil(), protocol=4)),
    raw("reduce_proto0", lambda: pickle.dumps(Evil(), protocol=0)),
    raw("inst_os_system", b"(S'true'\nios\nsystem\n."),
    raw("obj_popen", P2 + MARK + G("subprocess", "Popen") + U("true") + b"o" + STOP),
    raw("newobj_popen", P2 + G("subprocess", "Popen") + MARK + U("true") + TUPLE + b"\x81" + STOP),
    raw("newobj_ex", P4 + SG("subprocess", "Popen") + MARK + U("true") + TUPLE + EMPTY_DICT + b"\x92" + STOP),
    raw("builtins_eval", P2 + call(G("builtins", "eval"), "1") + STOP),
    raw("builtins_exec", P4 + call(SG("builtins", "exec"), "pass") + STOP),
    raw("builtins_compile", P2 + call(G("builtins", "compile"), "1", "f", "eval") + STOP),
    # module aliases and submodules
    raw("alias___builtin__", P2 + call(G("__builtin__", "eval"), "1") + STOP),
    raw("alias_nt", P2 + call(G("nt", "system"), "true") + STOP),
    raw("alias_posixsubprocess", P2 + call(G("_posixsubprocess", "fork_exec"), "x") + STOP),
    raw("alias_cpickle_loads", P2 + G("cPickle", "loads") + MARK + BB(EVIL) + TUPLE + REDUCE + STOP),
    raw("submodule_urllib", P2 + call(G("urllib.request", "urlopen"), "http://x") + STOP),
    raw("submodule_os_path", P2 + call(G("os.path", "exists"), "/") + STOP),
    raw("shutil_rmtree", P2 + call(G("shutil", "rmtree"), "/tmp/x") + STOP),
    raw("socket_conn", P2 + call(G("socket", "create_connection"), "x") + STOP),
    raw("ctypes_cdll", P2 + call(G("ctypes", "CDLL"), "libc.so.6") + STOP),
    raw("pip_main", P2 + call(G("pip._internal.cli.main", "main"), "install") + STOP),
    raw("io_open", P2 + call(G("_io", "open"), "/tmp/x", "w") + STOP),
    raw("runpy", P2 + call(G("runpy", "run_path"), "/tmp/x.py") + STOP),
    raw("code_interact", P2 + call(G("code", "interact"), "x") + STOP),
    raw("pdb_run", P2 + call(G("pdb", "run"), "1") + STOP),
    raw("timeit", P2 + call(G("timeit", "timeit"), "1") + STOP),
    raw("torch_load_nested", P2 + call(G("torch", "load"), "/tmp/x") + STOP),
    raw("marshal_loads", P2 + G("marshal", "loads") + MARK + BB(b"c") + TUPLE + REDUCE + STOP),
    raw("types_function", P2 + call(G("types", "FunctionType"), "x") + STOP),
    # getters and resolvers
    raw(
        "operator_attrgetter",
        P2 + call(G("_operator", "attrgetter"), "system") + MARK + G("os", "path") + TUPLE + REDUCE + STOP,
    ),
    raw("operator_methodcaller", P2 + call(G("operator", "methodcaller"), "system", "true") + STOP),
    raw(
        "getattr_import_chain",
        P2
        + G("builtins", "getattr")
        + MARK
        + call(G("builtins", "__import__"), "os")
        + U("system")
        + TUPLE
        + REDUCE
        + MARK
        + U("true")
        + TUPLE
        + REDUCE
        + STOP,
        "dangerous-global",
        "computed-call",
    ),
    raw("importlib_import_module", P2 + call(G("importlib", "import_module"), "os") + STOP),
    raw("pkgutil_resolve_name", P2 + call(G("pkgutil", "resolve_name"), "os:system") + STOP),
    raw("pydoc_locate", P2 + call(G("pydoc", "locate"), "os.system") + STOP),
    raw("sys_modules_setitem", P2 + G("sys", "modules") + U("x") + NONE + b"s" + STOP),
    # names
    raw("dotted_global", P2 + call(G("collections", "OrderedDict.fromkeys"), "ab") + STOP, "dotted-name"),
    raw("dotted_stack_global", P4 + call(SG("builtins", "getattr.__self__.eval"), "1") + STOP),
    raw("unknown_global", P2 + call(G("mymodule", "MyModel"), "x") + STOP, "unknown-global"),
    raw("invalid_module", P2 + call(G("os system", "x"), "y") + STOP, "invalid-global"),
    # memo tricks
    raw(
        "memo_fed_stack_global",
        P4
        + SU("os")
        + b"\x94"
        + b"0"
        + SU("system")
        + b"\x94"
        + b"0"
        + GET(0)
        + GET(1)
        + b"\x93"
        + MARK
        + U("true")
        + TUPLE
        + REDUCE
        + STOP,
    ),
    raw("memo_never_stored", P4 + GET(7) + GET(8) + b"\x93" + STOP, "memo"),
    raw("stack_global_non_string", _stack_global_non_str, "stack-global-operand"),
    raw("proto0_strings_stack_global", b"S'os'\nS'system'\n\x93(S'true'\ntR."),
    # BUILD tricks
    raw(
        "build_setattr_on_class",
        P2
        + G("collections", "OrderedDict")
        + NONE
        + EMPTY_DICT
        + U("__reduce__")
        + G("os", "system")
        + b"s"
        + b"\x86"
        + BUILD
        + STOP,
    ),
    raw(
        "build_dunder_on_instance",
        P2
        + G("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + EMPTY_DICT
        + U("__class__")
        + G("collections", "OrderedDict")
        + b"s"
        + BUILD
        + STOP,
        "build-dunder",
    ),
    raw(
        "build_setstate_slot",
        P2
        + G("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + NONE
        + EMPTY_DICT
        + U("__setstate__")
        + NONE
        + b"s"
        + b"\x86"
        + BUILD
        + STOP,
        "build-dunder",
    ),
    # truncation, garbage, unknown opcodes, trailing data
    raw("truncated_after_reduce", P2 + call(G("os", "system"), "true") + b"\xff\xfe garbage"),
    raw("truncated_benign_prefix", BENIGN[: len(BENIGN) // 2], "truncated", "malformed", "frame"),
    raw("unknown_opcode", P4 + b"\xff" + STOP, "unknown-opcode"),
    raw("data_after_stop", BENIGN + EVIL, "dangerous-global"),
    raw("garbage_after_stop", BENIGN + b"\x00\x01junk", "data-after-stop"),
    raw("proto_6", b"\x80\x06" + STOP, "protocol"),
    raw("ext_code", P2 + b"\x82\x01" + MARK + TUPLE + REDUCE + STOP, "extension-code"),
    raw("persid_plain", P2 + b"Pos.system\n" + STOP, "persistent-id"),
    raw("out_of_band_buffer", b"\x80\x05\x97" + STOP, "out-of-band"),
    # FRAME tricks
    raw("frame_too_long", P4 + frame(SG("os", "system") + STOP, 10_000), "frame"),
    raw("frame_straddle", P4 + frame(SU("builtins") + SU("eval"), 5) + b"\x93" + STOP, "frame"),
    raw("frame_nested", P4 + frame(frame(SU("a") + STOP, 3) + b"00", 14), "frame"),
    raw("frame_in_proto2", P2 + frame(G("os", "system") + b"0" + NONE + STOP)),
    # nested pickles
    raw("nested_pickle_loads", P2 + G("_pickle", "loads") + MARK + BB(EVIL) + TUPLE + REDUCE + STOP),
    raw("nested_pickle_bytes_only", P4 + BB(EVIL) + STOP),
    # joblib
    raw("joblib_raw_evil", lambda: joblib_bytes({"a": np.arange(3.0), "x": Evil()})),
    *[
        raw(
            f"joblib_{c}_evil",
            (lambda c=c: joblib_bytes({"x": Evil()}, compress=(c, 3))),
            fname=f"m_{c}.joblib",
        )
        for c in ("zlib", "gzip", "bz2", "xz", "lzma")
    ],
    raw("joblib_object_array_evil", lambda: joblib_bytes({"a": np.array([Evil()], dtype=object)})),
    raw("joblib_truncated_array", _joblib_lying_shape, "truncated"),
    raw("gzip_plain_evil", lambda: gzip.compress(EVIL)),
    raw("bz2_plain_evil", lambda: bz2.compress(EVIL)),
    raw("xz_plain_evil", lambda: lzma.compress(EVIL)),
    raw("zlib_plain_evil", lambda: zlib.compress(EVIL)),
    raw("corrupt_gzip", lambda: gzip.compress(BENIGN)[:-12] + b"\x00" * 4, "corrupt-compression"),
    # zip archives
    raw("torch_zip_evil_data_pkl", lambda: torch_zip(EVIL), fname="model.pt"),
    raw("zip_evil_member_named_version", lambda: torch_zip(BENIGN, [("archive/version2", EVIL)])),
    raw("zip_evil_member_no_name", lambda: zip_bytes([("x", EVIL)])),
    raw("zip_evil_in_data_dir", lambda: torch_zip(BENIGN, [("archive/data/0", EVIL)])),
    raw("zip_evil_deflated", lambda: zip_bytes([("archive/data.pkl", EVIL)], zipfile.ZIP_DEFLATED)),
    raw("zip_odd_name_dotdot", lambda: zip_bytes([("../../evil.pkl", BENIGN)]), "zip-anomaly"),
    raw("zip_odd_name_control", lambda: zip_bytes([("archive/data.pkl\x01", BENIGN)]), "zip-anomaly"),
    raw(
        "zip_local_central_mismatch",
        lambda: patch_zip_local_name(torch_zip(BENIGN), b"archive/data.pkl", b"archive/data.pk_"),
        "zip-anomaly",
    ),
    raw("zip_crc_error", _crc_broken, "zip-crc"),
    raw("zip_duplicate_names", _duplicate, "zip-anomaly"),
    raw(
        "zip_hidden_local_entry",
        lambda: hide_member(torch_zip(BENIGN, [("archive/extra.pkl", EVIL)]), b"archive/extra.pkl"),
        "zip-hidden-entry",
    ),
    raw("zip_nested_zip_evil", lambda: zip_bytes([("inner.zip", torch_zip(EVIL))])),
    raw("polyglot_pickle_then_zip", lambda: EVIL + torch_zip(BENIGN), "polyglot"),
    raw("polyglot_zip_with_prefix", lambda: BENIGN + torch_zip(EVIL), "dangerous-global"),
    raw("npz_object_evil", lambda: zip_bytes([("a.npy", npy_object(EVIL))])),
    ts_payload("torchscript_injected_data_pkl", "data.pkl"),
    ts_payload("torchscript_evil_constants", "constants.pkl"),
    # legacy torch
    raw("legacy_torch_evil_main", lambda: legacy_torch(EVIL)),
    raw("legacy_torch_evil_sys_info", lambda: legacy_torch(BENIGN, sys_info=EVIL)),
    raw("legacy_torch_trailing_pickle", lambda: legacy_torch(BENIGN, tail=EVIL)),
    # npy, tar, 7z
    raw("npy_object_evil", lambda: npy_object(EVIL), fname="arr.npy"),
    raw("npy_object_truncated", lambda: npy_object(EVIL[:-3]), "truncated", "dangerous-global"),
    raw("tar_evil_member", lambda: tar_bytes([("model/data.pkl", EVIL)])),
    raw("tar_gz_evil_member", lambda: tar_bytes([("x", EVIL)], mode="w:gz")),
    raw("tar_header_polyglot", lambda: tar_bytes([("cos\nsystem\n(S'true'\ntR.", BENIGN)]), "polyglot"),
    raw("sevenzip_unverifiable", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 32, "unverifiable"),
]
