"""Scan a path: sniff each file's content, walk every pickle it holds, judge every global.

Containers are recognised by their bytes, never by extension. Every pickle stream goes through
:mod:`packserve.scan.pickle.opcodes`; every global through :mod:`packserve.scan.policy`. Anything the
scanner cannot make sense of is a finding or an error, never silently clean.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packserve.scan import formats, hooks
from packserve.scan.context import Ctx, StorageInfo
from packserve.scan.pickle.opcodes import GlobalRef, WalkResult, walk
from packserve.scan.policy import judge, plausible_module
from packserve.scan.report import Finding, ScanError, ScanReport, Severity
from packserve.scan.stream import Reader, ScanLimitError, Source, bytes_reader

MAX_DEPTH = 4  # containers inside containers
MAX_PICKLES = 1000  # pickles in a row in one stream
DEFAULT_MAX_DECOMPRESSED = 8 << 30
ZIP_IN_STREAM_CAP = 512 << 20  # a zip inside a tar/compressed stream is buffered up to this
POLYGLOT_PROBE = 1 << 16  # leading bytes of a non-pickle container also walked as a pickle
NOT_A_PICKLE = "not a pickle format"
PICKLE_NAMES = (".pkl", ".pickle", "_pkl", ".joblib")  # container members loaders unpickle


class Scanner:
    """One scan: accumulates a :class:`ScanReport`."""

    def __init__(self, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, verify_crc: bool = True):
        self.report = ScanReport()
        self.max_decompressed = max_decompressed
        self.verify_crc = verify_crc
        self.walked = 0  # pickle streams walked so far: a file with none holds no pickle data

    # --- reporting -------------------------------------------------------------------------

    def finding(
        self,
        ctx: Ctx,
        severity: Severity,
        rule: str,
        reason: str,
        *,
        offset: int | None = None,
        module: str | None = None,
        name: str | None = None,
    ) -> None:
        self.report.findings.append(
            Finding(ctx.file, ctx.member, offset, module, name, severity, reason, rule)
        )

    def error(self, ctx: Ctx, reason: str) -> None:
        self.report.errors.append(ScanError(ctx.file, ctx.member, reason))

    def note_verified(self) -> None:
        """Data a loader would run (a pickle, a Keras config) was found and judged."""
        self.walked += 1

    # --- entry points ----------------------------------------------------------------------

    def scan_path(self, path: str | os.PathLike[str]) -> ScanReport:
        p = Path(path)
        if not p.is_dir():
            self.scan_file(p)
            return self.report
        seen: set[str] = set()
        count = 0
        # Every file, whatever its name; symlinked directories are followed once (no loops).
        for root, dirs, names in os.walk(p, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs.sort()
            for name in sorted(names):
                self.scan_file(Path(root) / name)
                count += 1
        if count == 0:
            self.report.files[str(p)] = "empty directory"
            self.report.not_pickle.append(str(p))
        return self.report

    def scan_file(self, path: Path) -> None:
        ctx = Ctx(str(path))
        with self.top_level(ctx):
            self._scan_file(path, ctx)

    @contextlib.contextmanager
    def top_level(self, ctx: Ctx) -> Iterator[None]:
        """Scan one file; if it held no pickle data and nothing was reported, it is listed as
        not a pickle format (never as clean)."""
        before = (self.walked, len(self.report.findings), len(self.report.errors))
        yield
        if (self.walked, len(self.report.findings), len(self.report.errors)) == before:
            self.report.not_pickle.append(ctx.file)

    def _scan_file(self, path: Path, ctx: Ctx) -> None:
        if path.is_symlink() and not path.exists():
            self.error(ctx, "broken symbolic link")
            return
        if path.exists() and not path.is_file():
            self.error(ctx, "not a regular file")
            return
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self.report.bytes_scanned += size
                self.scan_stream(f, ctx, 0, size, seekable_file=True)
        except FileNotFoundError:
            self.error(ctx, "no such file")
        except PermissionError:
            self.error(ctx, "permission denied")
        except IsADirectoryError:
            self.error(ctx, "is a directory")
        except ScanLimitError as exc:
            self.error(ctx, str(exc))
        except OSError as exc:
            self.error(ctx, f"cannot read: {exc.strerror or type(exc).__name__}")
        except Exception as exc:  # fail closed: a parser bug must never read as "clean"
            self.error(ctx, f"scanner could not parse this file ({type(exc).__name__})")

    # --- dispatch by content ---------------------------------------------------------------

    def scan_stream(
        self,
        f: Source,
        ctx: Ctx,
        start: int,
        length: int | None,
        *,
        seekable_file: bool = False,
        limit: int | None = None,
        reader: Reader | None = None,
    ) -> None:
        """Sniff ``length`` bytes of ``f`` from ``start`` and scan them as what they are."""
        if ctx.depth > MAX_DEPTH:
            self.finding(ctx, Severity.MEDIUM, "nesting", "containers nested too deeply to verify")
            return
        r = reader or Reader(f, start, length, limit=limit, seekable=seekable_file)
        head = r.peek(512)
        kind = formats.sniff(head)
        if ctx.member is None:
            self.report.files[ctx.file] = kind
        if kind == "empty":
            return
        if kind != "pickle":
            self.probe_polyglot(r.peek(POLYGLOT_PROBE), ctx, kind)
        if kind == "zip":
            from packserve.scan.zipscan import scan_zip

            if seekable_file:
                scan_zip(self, f, ctx, start, length)
                return
            # A zip inside a stream (tar member, compressed file): zip needs random access.
            data = r.read(ZIP_IN_STREAM_CAP + 1)
            if len(data) > ZIP_IN_STREAM_CAP:
                self.error(ctx, "zip inside a stream is too large to verify in memory")
                return
            scan_zip(self, io.BytesIO(data), ctx, 0, None)
            return
        if kind == "npy":
            formats.scan_npy(self, r, ctx)
            return
        if kind == "hdf5":
            from packserve.scan.keras import scan_h5

            if seekable_file and start == 0 and ctx.member is None:
                scan_h5(self, f, ctx)
                return
            data = r.read(ZIP_IN_STREAM_CAP + 1)
            if len(data) > ZIP_IN_STREAM_CAP:
                self.error(ctx, "HDF5 file inside a container is too large to verify in memory")
                return
            scan_h5(self, io.BytesIO(data), ctx)
            return
        if kind == "tar":
            formats.scan_tar(self, f, r, ctx, start, length, seekable_file)
            return
        if kind in formats.COMPRESSED:
            formats.scan_compressed(self, kind, r, ctx)
            return
        if kind in formats.UNVERIFIABLE:
            self.finding(
                ctx,
                Severity.MEDIUM,
                "unverifiable",
                f"{formats.UNVERIFIABLE[kind]}: contents cannot be verified",
            )
            return
        self.scan_pickles(r, ctx)
        if seekable_file and ctx.member is None and formats.has_zip_directory(f, start, length):
            from packserve.scan.zipscan import scan_zip

            self.finding(
                ctx,
                Severity.HIGH,
                "polyglot",
                "file is both a pickle/data stream and a zip archive (loaders disagree)",
            )
            scan_zip(self, f, ctx, start, length, polyglot=True)

    def probe_polyglot(self, head: bytes, ctx: Ctx, kind: str) -> None:
        """A container's first bytes read as pickle opcodes by ``pickle.load`` (a polyglot).

        A tar header, for one, starts with a free-form name: it can hold a whole pickle. If the
        bytes name any global the policy refuses, or form a complete pickle naming globals, it
        is a finding, whatever the container holds.
        """
        res = walk(bytes_reader(head))
        bad = [g for g in res.globals if plausible_module(g.module) and judge(g.module, g.name) is not None]
        if bad or (res.ok and res.globals):
            self.finding(
                ctx,
                Severity.HIGH,
                "polyglot",
                f"the {kind} header is also a pickle that names globals (loaders disagree)",
                offset=0,
            )
            self.judge(res, ctx)

    # --- pickles ---------------------------------------------------------------------------

    def scan_pickles(self, r: Reader, ctx: Ctx, *, must_be_pickle: bool = False) -> list[StorageInfo]:
        """Walk every pickle in a row from the reader's position; returns declared storages."""
        first = self.walk_one(r, ctx, must_be_pickle=must_be_pickle)
        if first is None:
            if ctx.member is None:
                self.report.files[ctx.file] = NOT_A_PICKLE
            elif ctx.member.endswith(PICKLE_NAMES):  # a loader would unpickle it by its name
                self.error(ctx, "named as a pickle but is not one (corrupt): cannot verify")
            return []
        storages = self.storages(first)
        if not first.ok or r.at_end():
            return storages
        if first.value == hooks.TORCH_LEGACY_MAGIC:
            if ctx.member is None:
                self.report.files[ctx.file] = "torch legacy"
            return hooks.scan_torch_legacy(self, r, ctx)
        self.finding(
            ctx,
            Severity.MEDIUM,
            "data-after-stop",
            "data after STOP (a second loader or reader may interpret it)",
            offset=first.end,
        )
        count = 1
        while not r.at_end():
            if count >= MAX_PICKLES:
                self.error(ctx, f"more than {MAX_PICKLES} pickles in a row: the rest was not verified")
                break
            res = self.walk_one(r, ctx)
            count += 1
            if res is None or not res.ok:
                break
            storages.extend(self.storages(res))
        return storages

    def walk_one(self, r: Reader, ctx: Ctx, *, must_be_pickle: bool = False) -> WalkResult | None:
        """Walk and judge one pickle; ``None`` if the bytes are not a pickle at all."""
        res = walk(r, on_build=lambda w, obj: hooks.joblib_hook(self, w, obj, ctx))
        if not res.ok and not res.looks_like_pickle and not must_be_pickle:
            return None
        self.note_verified()
        self.judge(res, ctx)
        return res

    def judge(self, res: WalkResult, ctx: Ctx) -> None:
        seen: set[tuple[str, str]] = set()
        for g in res.globals:
            verdict = judge(g.module, g.name, torchscript=ctx.torchscript)
            if verdict is None or (g.module, g.name) in seen:
                continue
            seen.add((g.module, g.name))
            self.finding(
                ctx,
                verdict.severity,
                verdict.rule,
                f"{g.opcode} {g.module}.{g.name}: {verdict.reason}",
                offset=g.offset,
                module=g.module,
                name=g.name,
            )
        for i in res.issues:
            if i.rule == "resource-limit":  # not a verdict on the file: we could not finish
                self.error(ctx, f"{i.reason} (offset {i.offset}): too large to verify")
                continue
            self.finding(ctx, i.severity, i.rule, i.reason, offset=i.offset, module=i.module, name=i.name)
        for pid in res.persids:
            if _storage_pid(pid) is None:
                self.finding(
                    ctx,
                    Severity.MEDIUM,
                    "persistent-id",
                    "persistent id that is not a torch storage: the loader decides what it is",
                    offset=res.start,
                )
        for off, data in res.nested:
            self.scan_nested(data, ctx.child(f"@{off}"))

    def scan_nested(self, data: bytes, ctx: Ctx) -> None:
        """A byte string inside a pickle that is itself a pickle: judge it too."""
        if ctx.depth > MAX_DEPTH:
            self.finding(ctx, Severity.MEDIUM, "nesting", "pickles nested too deeply to verify")
            return
        res = walk(bytes_reader(data))
        if not res.ok and not res.globals:
            return  # looked like a pickle by its first bytes only; a real loader stops too
        if res.globals or res.issues:  # globals before a stop are imported all the same
            self.judge(res, ctx)

    def storages(self, res: WalkResult) -> list[StorageInfo]:
        out = []
        for pid in res.persids:
            info = _storage_pid(pid)
            if info is not None:
                out.append(info)
        return out


def _storage_pid(pid: Any) -> StorageInfo | None:
    """``('storage', <torch XStorage>, key, location, numel[, view])`` -> info."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        return None
    stype, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(key, str) or not isinstance(stype, GlobalRef):
        return None
    if isinstance(stype, GlobalRef) and judge(stype.module, stype.name) is not None:
        return None  # the storage type is itself judged as a global
    return StorageInfo(key, stype.name, numel if isinstance(numel, int) else None)


def scan(
    path: str | os.PathLike[str],
    *,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    verify_crc: bool = True,
) -> ScanReport:
    """Scan a file or a directory (every file, whatever its extension)."""
    scanner = Scanner(max_decompressed=max_decompressed, verify_crc=verify_crc)
    return scanner.scan_path(path)


def scan_bytes(
    data: bytes, name: str = "<bytes>", *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> ScanReport:
    """Scan an in-memory file (the restricted loader scans exactly the bytes it loads)."""
    scanner = Scanner(max_decompressed=max_decompressed)
    scanner.report.bytes_scanned = len(data)
    ctx = Ctx(name)
    with scanner.top_level(ctx):
        try:
            scanner.scan_stream(io.BytesIO(data), ctx, 0, len(data), seekable_file=True)
        except ScanLimitError as exc:
            scanner.error(ctx, str(exc))
        except Exception as exc:  # fail closed, as in scan_file
            scanner.error(ctx, f"scanner could not parse this data ({type(exc).__name__})")
    return scanner.report


__all__ = ["Ctx", "Scanner", "StorageInfo", "scan", "scan_bytes"]
