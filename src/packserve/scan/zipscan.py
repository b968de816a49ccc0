"""Zip archives (torch >= 1.6 checkpoints, TorchScript archives, ``.npz``, anything zipped).

Every member is sniffed and scanned by content, whatever its name. Members a scanned pickle
declares as torch storages are raw tensor bytes that torch never unpickles: they are skipped
(CRC-checked only), so a multi-GB checkpoint is scanned in flat memory. Zip-level anomalies
that make different readers see different content are findings.
"""

from __future__ import annotations

import io
import lzma
import posixpath
import struct
import zipfile
import zlib
from typing import Any

from packserve.scan.context import Ctx, ScanHost
from packserve.scan.keras import is_keras_archive, judge_member
from packserve.scan.report import Severity
from packserve.scan.stream import CHUNK, Reader, ScanLimitError, Source

SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
#: what reading a member of a corrupt archive raises: reported as a finding, never a crash
MEMBER_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError,
                 NotImplementedError)


class Slice(io.RawIOBase):
    """A seekable window ``[start, start+length)`` of a seekable file."""

    def __init__(self, f: Source, start: int, length: int) -> None:
        self.f, self.start, self.length, self.p = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.p, io.SEEK_END: self.length}[whence]
        self.p = max(0, base + offset)
        return self.p

    def tell(self) -> int:
        return self.p

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self.length - self.p))
        if n == 0:
            return 0
        self.f.seek(self.start + self.p)
        got = self.f.readinto(memoryview(b)[:n])  # type: ignore[attr-defined]
        self.p += got or 0
        return got or 0


def _size(f: Source) -> int:
    pos = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return end


def _raw(src: Any, offset: int) -> tuple[Any, int]:
    """The underlying file and absolute offset (reads bypass :class:`Slice`'s copies)."""
    while isinstance(src, Slice):
        offset += src.start
        src = src.f
    return src, offset


def _odd_name(name: str) -> str | None:
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "control character in member name"
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "absolute or Windows-style member path"
    if ".." in name.split("/"):
        return "'..' in member path"
    return None


def _local_header(f: Source, base: int, info: zipfile.ZipInfo) -> tuple[int, str | None] | str:
    """(data offset, anomaly) from the member's local header, or a fatal anomaly string."""
    if info.header_offset < 0:
        return "local header offset out of range"
    f.seek(base + info.header_offset)
    hdr = f.read(30)
    if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
        return "local header missing or damaged"
    flags, method = struct.unpack("<HH", hdr[6:10])
    nlen, xlen = struct.unpack("<HH", hdr[26:30])
    raw = f.read(nlen)
    name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    anomaly = None
    if name != info.orig_filename:
        anomaly = f"local header names {name!r}, central directory names {info.orig_filename!r}"
    elif method != info.compress_type:
        anomaly = "local and central headers disagree on the compression method"
    elif (flags & 1) != (info.flag_bits & 1):
        anomaly = "local and central headers disagree on encryption"
    return info.header_offset + 30 + nlen + xlen, anomaly


def _check_layout(
    scanner: ScanHost, src: Any, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], ctx: Ctx
) -> None:
    """Walk the local entries in file order: hidden entries and gaps are findings.

    Streaming readers see every local header; the central directory may list fewer. Entries
    only a streaming reader sees would escape a central-directory-only scan.
    """
    if not infos:
        return
    known = {i.header_offset: i for i in infos}
    pos = min(known)
    if pos < 0:
        return  # reported per member by _local_header
    end = zf.start_dir
    for _ in range(len(infos) * 2 + 16):
        if pos >= end:
            return
        src.seek(pos)
        hdr = src.read(30)
        if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
            scanner.finding(ctx, Severity.MEDIUM, "zip-anomaly", "unreferenced bytes between zip members")
            return
        flags = struct.unpack("<H", hdr[6:8])[0]
        csize, nlen, xlen = struct.unpack("<I", hdr[18:22])[0], *struct.unpack("<HH", hdr[26:30])
        info = known.get(pos)
        if info is None:
            scanner.finding(
                ctx,
                Severity.HIGH,
                "zip-hidden-entry",
                "local zip entry not listed in the central directory (streaming readers see it)",
                offset=pos,
            )
            method = struct.unpack("<H", hdr[8:10])[0]
            if method == zipfile.ZIP_STORED and not flags & 0x08:  # judge its content too
                raw_name = src.read(nlen).decode("utf-8", "replace")
                scanner.scan_stream(
                    src,
                    ctx.child(f"{raw_name} (hidden)"),
                    pos + 30 + nlen + xlen,
                    csize,
                    seekable_file=True,
                )
        else:
            csize = info.compress_size
        pos += 30 + nlen + xlen + csize
        if flags & 0x08:  # data descriptor: optional signature, crc, sizes (zip64: 8-byte sizes)
            src.seek(pos)
            desc = src.read(24)
            skip = 4 if desc[:4] == b"PK\x07\x08" else 0
            zip64 = info is not None and (info.file_size > 0xFFFFFFFF or csize > 0xFFFFFFFF)
            pos += skip + (20 if zip64 else 12)
    if pos < end:  # more local entries than the directory lists, even counting hidden ones
        scanner.finding(ctx, Severity.HIGH, "zip-hidden-entry", "more local zip entries than can be verified")


def scan_zip(
    scanner: ScanHost,
    f: Source,
    ctx: Ctx,
    start: int,
    length: int | None,
    *,
    polyglot: bool = False,
) -> None:
    """Scan a zip archive: archive-level checks, then every member by content."""
    if ctx.member is None and not polyglot:
        scanner.report.files[ctx.file] = "zip"
    whole = start == 0 and (length is None or length == _size(f))
    src: Any = f if whole else Slice(f, start, length or 0)
    opened = _open(scanner, src, ctx)
    if opened is None:
        return
    zf, infos = opened
    _check_archive(scanner, infos, ctx, polyglot=polyglot)
    torchscript = _is_torchscript([i.filename for i in infos])
    members: list[tuple[zipfile.ZipInfo, int, Ctx]] = []
    for info in infos:
        mctx = ctx.child(info.filename, torchscript=torchscript)
        data_offset = _check_member(scanner, src, info, mctx)
        if data_offset is not None:
            members.append((info, data_offset, mctx))
    _check_layout(scanner, src, zf, infos, ctx)
    if is_keras_archive([i.filename for i in infos]):
        if ctx.member is None and not polyglot:
            scanner.report.files[ctx.file] = "keras"
        members = _keras_members(scanner, zf, src, members)
    _scan_members(scanner, zf, src, members)


def _open(scanner: ScanHost, src: Any, ctx: Ctx) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]] | None:
    """The archive and its central directory, or ``None`` (reported) if it is corrupt."""
    try:
        zf = zipfile.ZipFile(src)
        return zf, zf.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as exc:
        scanner.finding(ctx, Severity.HIGH, "corrupt-zip", f"corrupt zip archive: {exc}")
        return None


def _check_archive(scanner: ScanHost, infos: list[zipfile.ZipInfo], ctx: Ctx, *, polyglot: bool) -> None:
    """Archive-wide anomalies: duplicate names, bytes before the first member."""
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        scanner.finding(
            ctx, Severity.HIGH, "zip-anomaly", "duplicate member names (readers pick different ones)"
        )
    if infos and min(i.header_offset for i in infos) > 0 and not polyglot:
        scanner.finding(ctx, Severity.MEDIUM, "zip-anomaly", "data before the first zip member")


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n or n.startswith("code/") for n in names) and any(
        posixpath.basename(n) == "constants.pkl" for n in names
    )


def _check_member(scanner: ScanHost, src: Any, info: zipfile.ZipInfo, mctx: Ctx) -> int | None:
    """Header checks for one member: its data offset if it can be scanned, else ``None``."""
    odd = _odd_name(info.filename)
    if odd:
        scanner.finding(mctx, Severity.MEDIUM, "zip-anomaly", odd)
    if info.is_dir():
        return None
    if info.flag_bits & 1:
        scanner.error(mctx, "encrypted member (password-protected zip): cannot verify")
        return None
    if info.compress_type not in SUPPORTED_METHODS:
        scanner.finding(
            mctx,
            Severity.MEDIUM,
            "unverifiable",
            f"unsupported compression method {info.compress_type}",
        )
        return None
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        scanner.finding(mctx, Severity.HIGH, "zip-anomaly", "stored member with two sizes")
        return None
    local = _local_header(src, 0, info)
    if isinstance(local, str):
        scanner.finding(mctx, Severity.HIGH, "zip-anomaly", local)
        return None
    data_offset, anomaly = local
    if anomaly:
        scanner.finding(mctx, Severity.HIGH, "zip-anomaly", anomaly)
    return data_offset


def _is_pickle_name(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith((".pkl", ".pickle", "_pkl"))


def _scan_members(
    scanner: ScanHost, zf: zipfile.ZipFile, src: Any, members: list[tuple[zipfile.ZipInfo, int, Ctx]]
) -> None:
    """Pickles first (by name), so the storages they declare are known; then the rest."""
    storage_members: set[str] = set()
    ordered = sorted(members, key=lambda m: not _is_pickle_name(m[0]))
    for info, data_offset, mctx in ordered:
        # Raw tensor bytes torch never unpickles are skipped; a pickle-named member never is.
        if info.filename in storage_members and not _is_pickle_name(info):
            _check_crc(scanner, zf, src, info, data_offset, mctx, storage=True)
            continue
        storages = _scan_member(scanner, zf, src, info, data_offset, mctx)
        folder = posixpath.dirname(info.filename)
        for s in storages:
            for sub in ("data", "constants", ".data"):
                storage_members.add(posixpath.join(folder, sub, s.key))
        _check_crc(scanner, zf, src, info, data_offset, mctx, storage=False)


def _keras_members(
    scanner: ScanHost, zf: zipfile.ZipFile, src: Any, members: list[tuple[zipfile.ZipInfo, int, Ctx]]
) -> list[tuple[zipfile.ZipInfo, int, Ctx]]:
    """A ``.keras`` archive: judge ``config.json``; HDF5 weights are arrays (CRC-checked only).

    Returns the members left to scan by content (metadata, assets).
    """
    rest = []
    for info, data_offset, mctx in members:
        if info.filename == "config.json":
            judge_member(scanner, zf, info, mctx)
            _check_crc(scanner, zf, src, info, data_offset, mctx, storage=False)
        elif info.filename.endswith(".h5"):
            _check_crc(scanner, zf, src, info, data_offset, mctx, storage=True)
        else:
            rest.append((info, data_offset, mctx))
    return rest


def _scan_member(
    scanner: ScanHost,
    zf: zipfile.ZipFile,
    src: Any,
    info: zipfile.ZipInfo,
    data_offset: int,
    mctx: Ctx,
) -> list[Any]:
    """Scan one member by content; returns the torch storages its pickle declares."""
    before = len(scanner.report.findings)
    if info.compress_type == zipfile.ZIP_STORED:
        r = Reader(src, data_offset, info.file_size)
        kind_is_pickle = _is_plain(r)
        if kind_is_pickle:
            return scanner.scan_pickles(r, mctx)
        scanner.scan_stream(src, mctx, data_offset, info.file_size, seekable_file=True)
        return []
    try:
        with zf.open(info) as stream:
            r = Reader(stream, 0, info.file_size, limit=scanner.max_decompressed, seekable=False)
            if _is_plain(r):
                return scanner.scan_pickles(r, mctx)
            scanner.scan_stream(stream, mctx, 0, info.file_size, reader=r)
    except ScanLimitError as exc:
        scanner.error(mctx, str(exc))
    except MEMBER_ERRORS as exc:
        if len(scanner.report.findings) == before:
            scanner.finding(mctx, Severity.HIGH, "corrupt-zip", f"member cannot be decompressed: {exc}")
    return []


def _is_plain(r: Reader) -> bool:
    from packserve.scan.formats import sniff

    return sniff(r.peek(512)) == "pickle"


def _check_crc(
    scanner: ScanHost,
    zf: zipfile.ZipFile,
    src: Any,
    info: zipfile.ZipInfo,
    data_offset: int,
    mctx: Ctx,
    *,
    storage: bool,
) -> None:
    """Read the member in chunks and compare its CRC (flat memory; off for storages if asked)."""
    if storage and not scanner.verify_crc:
        return
    crc = 0
    total = 0
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            raw, offset = _raw(src, data_offset)
            raw.seek(offset)
            left = info.file_size
            while left > 0:
                chunk = raw.read(min(CHUNK * 8, left))
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                total += len(chunk)
                left -= len(chunk)
        else:
            with zf.open(info) as stream:
                stream._expected_crc = None  # type: ignore[attr-defined]  # we compare ourselves
                while chunk := stream.read(CHUNK * 8):
                    crc = zlib.crc32(chunk, crc)
                    total += len(chunk)
                    if total > scanner.max_decompressed:
                        scanner.error(mctx, "member exceeds the decompression size cap")
                        return
    except MEMBER_ERRORS as exc:
        scanner.finding(mctx, Severity.HIGH, "corrupt-zip", f"member cannot be read: {exc}")
        return
    if total != info.file_size:
        scanner.finding(mctx, Severity.HIGH, "zip-anomaly", "member size differs from its header")
    elif crc != info.CRC:
        scanner.finding(mctx, Severity.HIGH, "zip-crc", "CRC mismatch (readers disagree)")


__all__ = ["Slice", "scan_zip"]
