"""Container formats other than zip: sniffing, compressed streams, tar, npy.

Each function takes the :class:`~packserve.scan.context.ScanHost` and a context and reports into
it. Compressed content is decompressed as a stream under a size cap, never all at once.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from typing import Any

from packserve.scan.context import Ctx, ScanHost
from packserve.scan.report import Severity
from packserve.scan.stream import CHUNK, Reader, ScanLimitError, Source

COMPRESSED = {"gzip", "bz2", "xz", "lzma", "zlib", "joblib-zfile"}
UNVERIFIABLE = {
    "7z": "7z archive (no 7z reader is installed)",
    "lz4": "lz4-compressed stream (no lz4 reader is installed)",
    "rar": "rar archive",
    "zstd": "zstd-compressed stream",
}


def sniff(head: bytes) -> str:
    """Name the format from the first bytes (never from the file name)."""
    if not head:
        return "empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:4] == b"Rar!":
        return "rar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:2] == b"ZF":
        return "joblib-zfile"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head[:1] == b"\x5d" and len(head) >= 13 and _is_lzma_alone(head):
        return "lzma"
    if is_tar_header(head):
        return "tar"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"  # Keras .h5 (see packserve.scan.keras)
    return "pickle"


def _is_lzma_alone(head: bytes) -> bool:
    """``]`` is also EMPTY_LIST: only call it lzma if a decoder accepts the header."""
    try:
        lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(head, max_length=64)
    except lzma.LZMAError:
        return False
    return True


def is_tar_header(head: bytes) -> bool:
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        stored = int(head[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    calc = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    return stored == calc and head[0] != 0


def has_zip_directory(f: Source, start: int, length: int | None) -> bool:
    """Is there a zip end-of-central-directory record near the end (a polyglot)?"""
    try:
        end = f.seek(0, io.SEEK_END) if length is None else start + length
        tail = min(end - start, 65536 + 22)
        f.seek(end - tail)
        data = f.read(tail)
    except OSError:
        return False
    return b"PK\x05\x06" in data


# --- compressed streams (joblib) -----------------------------------------------------------


class _ZlibStream(io.RawIOBase):
    """Streaming zlib decompression as a file (joblib's zlib compressor writes plain zlib)."""

    def __init__(self, r: Reader, skip_header: int = 0) -> None:
        self.r = r
        self.d = zlib.decompressobj()
        self.pending = b""
        if skip_header:
            r.skip(skip_header)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.pending:
            if self.d.eof:
                return 0
            data = self.d.unconsumed_tail or self.r.read(CHUNK)
            if not data:
                raise EOFError("compressed stream ended before its end marker")
            self.pending = self.d.decompress(data, CHUNK)
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _zfile_header(r: Reader) -> int:
    """Legacy joblib 'ZF' header: 'ZF' + hex length (+ optional space)."""
    head = r.peek(2 + 19 + 1)
    return 2 + 19 + (1 if head[21:22] == b" " else 0)


def open_decompressed(kind: str, r: Reader) -> Source:
    src: Any = _ReaderFile(r)
    if kind == "gzip":
        import gzip  # imported here and below only when needed: `packserve scan` starts fast

        return gzip.GzipFile(fileobj=src, mode="rb")
    if kind == "bz2":
        import bz2

        return bz2.BZ2File(src, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(src, mode="rb", format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMAFile(src, mode="rb", format=lzma.FORMAT_ALONE)
    if kind == "zlib":
        return io.BufferedReader(_ZlibStream(r))
    if kind == "joblib-zfile":
        return io.BufferedReader(_ZlibStream(r, skip_header=_zfile_header(r)))
    raise ValueError(kind)


class _ReaderFile(io.RawIOBase):
    """Expose a :class:`Reader` (bounded) as a plain readable file for the decompressors."""

    def __init__(self, r: Reader) -> None:
        self.r = r

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.r.read(len(b))
        b[: len(data)] = data
        return len(data)


def scan_compressed(scanner: ScanHost, kind: str, r: Reader, ctx: Ctx) -> None:
    """Decompress as a stream (size-capped) and scan what is inside."""
    if ctx.member is None:
        scanner.report.files[ctx.file] = f"{kind}-compressed"
    try:
        stream = open_decompressed(kind, r)
        scanner.scan_stream(stream, ctx.child(f"[{kind}]"), 0, None, limit=scanner.max_decompressed)
        # Consume the rest so that corruption at the end is seen too (bounded by the cap).
        inner = Reader(stream, 0, None, limit=scanner.max_decompressed, seekable=False)
        inner.skip(1 << 62)
    except ScanLimitError as exc:
        scanner.error(ctx, f"{kind}: {exc}")
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        scanner.finding(
            ctx,
            Severity.MEDIUM,
            "corrupt-compression",
            f"corrupt {kind} stream ({type(exc).__name__}): cannot be verified",
        )


# --- tar -----------------------------------------------------------------------------------


def scan_tar(
    scanner: ScanHost,
    f: Source,
    r: Reader,
    ctx: Ctx,
    start: int,
    length: int | None,
    seekable: bool,
) -> None:
    """Scan every regular member of a tar archive; links and devices are findings."""
    import tarfile

    src: Any = _ReaderFile(r)
    try:
        with tarfile.open(fileobj=src, mode="r|") as tar:
            for info in tar:
                mctx = ctx.child(info.name)
                if info.isfile():
                    member = tar.extractfile(info)
                    if member is not None:
                        scanner.scan_stream(member, mctx, 0, info.size)
                elif not info.isdir():
                    scanner.finding(
                        mctx,
                        Severity.MEDIUM,
                        "tar-anomaly",
                        "tar member is a link or special file",
                    )
    except tarfile.TarError as exc:
        scanner.finding(ctx, Severity.MEDIUM, "corrupt-tar", f"corrupt tar archive: {exc}")


# --- npy -----------------------------------------------------------------------------------


def scan_npy(scanner: ScanHost, r: Reader, ctx: Ctx) -> None:
    """``.npy``: an object array's data is a pickle (np.load(allow_pickle=True) runs it)."""
    if ctx.member is None:
        scanner.report.files[ctx.file] = "npy"
    head = r.read(8)
    major = head[6] if len(head) > 6 else 0
    if major == 1:
        raw = r.read(2)
        hlen = struct.unpack("<H", raw)[0] if len(raw) == 2 else -1
    elif major in (2, 3):
        raw = r.read(4)
        hlen = struct.unpack("<I", raw)[0] if len(raw) == 4 else -1
    else:
        scanner.finding(ctx, Severity.MEDIUM, "npy", f"unknown .npy format version {major}")
        return
    if hlen < 0 or hlen > 1 << 20:
        scanner.finding(ctx, Severity.MEDIUM, "npy", "malformed .npy header length")
        return
    import ast

    text = r.read(hlen)
    try:
        header = ast.literal_eval(text.decode("latin1"))
        descr = header["descr"]
        shape = tuple(int(x) for x in header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        scanner.finding(ctx, Severity.MEDIUM, "npy", "malformed .npy header")
        return
    import numpy as np
    from numpy.lib import format as npformat

    try:
        dtype = npformat.descr_to_dtype(descr)
    except (ValueError, TypeError, KeyError):
        scanner.finding(ctx, Severity.MEDIUM, "npy", "malformed .npy dtype")
        return
    if dtype.hasobject:
        scanner.scan_pickles(r, ctx.child("[object array]"), must_be_pickle=True)
        return
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if r.skip(nbytes) < nbytes:
        scanner.finding(ctx, Severity.MEDIUM, "npy", "truncated .npy data")
    elif not r.at_end():
        scanner.finding(ctx, Severity.MEDIUM, "data-after-stop", "data after the .npy array")


__all__ = [
    "COMPRESSED",
    "UNVERIFIABLE",
    "has_zip_directory",
    "is_tar_header",
    "open_decompressed",
    "scan_compressed",
    "scan_npy",
    "scan_tar",
    "sniff",
]
