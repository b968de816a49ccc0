"""A forward-only byte reader with a hard end, cheap one-byte reads and seek-based skipping.

The opcode walker reads pickles through this class so that a multi-GB payload (a BINBYTES8
tensor, a joblib array, a zip member of raw storage) is *skipped*, never read into memory,
and so that a member of a container can never read past its own end.
"""

from __future__ import annotations

import io
from typing import Protocol

CHUNK = 1 << 20


class Source(Protocol):
    """What the scanner reads from: a file, a zip member, a decompressor."""

    def read(self, n: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def seekable(self) -> bool: ...


class ScanLimitError(Exception):
    """A decompression or size cap was hit: the content could not be fully verified."""


class Reader:
    """Read ``length`` bytes of ``f`` starting at ``start`` (absolute, if ``f`` is seekable).

    ``pos`` is relative to ``start``. Reads past the end return short data, like a file.
    """

    def __init__(
        self,
        f: Source,
        start: int = 0,
        length: int | None = None,
        *,
        limit: int | None = None,
        seekable: bool | None = None,
    ) -> None:
        """``seekable=False`` for decompressors: their ``seek`` re-reads from the start."""
        self.f = f
        if seekable is None:
            try:
                seekable = bool(f.seekable())
            except (AttributeError, OSError, ValueError):
                seekable = False
        self.seekable = seekable
        if self.seekable:
            f.seek(start)
        self.start = start
        self.length = length
        self.limit = limit  # cap on bytes consumed from a non-seekable (decompressed) stream
        self.buf = b""
        self.i = 0
        self.base = 0  # relative offset of buf[0]
        self.eof = False
        self.read_end = 0  # relative offset of the next byte the source will give

    @property
    def pos(self) -> int:
        return self.base + self.i

    def remaining(self) -> int | None:
        return None if self.length is None else max(0, self.length - self.pos)

    def _raw_read(self, n: int) -> bytes:
        consumed = self.read_end
        if self.length is not None:
            n = min(n, self.length - consumed)
        if self.limit is not None and consumed + n > self.limit:
            n = self.limit - consumed
            if n <= 0:
                raise ScanLimitError(f"content exceeds the size cap of {self.limit} bytes")
        if n <= 0:
            return b""
        data = self.f.read(n) or b""
        self.read_end += len(data)
        return data

    def _fill(self, n: int) -> int:
        """Make at least ``n`` bytes available after ``i`` if the source has them."""
        avail = len(self.buf) - self.i
        if avail >= n or self.eof:
            return avail
        parts = [self.buf[self.i :]]
        self.base += self.i
        self.i = 0
        while avail < n:
            data = self._raw_read(max(CHUNK, n - avail))
            if not data:
                self.eof = True
                break
            parts.append(data)
            avail += len(data)
        self.buf = b"".join(parts)
        return avail

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if self._fill(n) < n:
            data = self.buf[self.i :]
            self.i = len(self.buf)
            return data
        data = self.buf[self.i : self.i + n]
        self.i += n
        return data

    def read_byte(self) -> int:
        """Next byte, or -1 at the end."""
        if self.i < len(self.buf) or self._fill(1) >= 1:
            b = self.buf[self.i]
            self.i += 1
            return b
        return -1

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self.buf[self.i : self.i + n]

    def readline(self, max_len: int = 1 << 16) -> bytes | None:
        """Bytes up to and including ``\\n``; ``None`` if there is none within ``max_len``.

        After ``None``, :meth:`line_too_long` tells a line longer than ``max_len`` from data
        that ends without a newline. Each byte is searched once and the buffer grows
        geometrically, so a line of many megabytes costs linear time.
        """
        searched = self.i
        while True:
            j = self.buf.find(b"\n", searched, self.i + max_len)
            if j >= 0:
                line = self.buf[self.i : j + 1]
                self.i = j + 1
                return line
            have = len(self.buf) - self.i
            if have >= max_len or self.eof:
                return None
            if self._fill(min(max_len, max(have + CHUNK, 2 * have))) <= have:
                return None
            searched = self.i + have

    def line_too_long(self, max_len: int) -> bool:
        """After :meth:`readline` returned ``None``: was the line longer than ``max_len``?"""
        return len(self.buf) - self.i >= max_len

    def skip(self, n: int) -> int:
        """Advance ``n`` bytes without keeping them; returns how many were really skipped."""
        if n <= 0:
            return 0
        avail = len(self.buf) - self.i
        if n <= avail:
            self.i += n
            return n
        target = self.pos + n
        if self.length is not None:
            target = min(target, self.length)
        if self.seekable:
            end = self._size()
            if end is not None:
                target = min(target, end - self.start)
            self.f.seek(self.start + target)
            skipped = target - self.pos
            self.buf, self.i, self.base = b"", 0, target
            self.read_end = target
            if self.length is not None and target >= self.length:
                self.eof = True
            return skipped
        skipped = avail
        self.base += len(self.buf)
        self.buf, self.i = b"", 0
        while skipped < n:
            data = self._raw_read(min(CHUNK, n - skipped))
            if not data:
                self.eof = True
                break
            skipped += len(data)
            self.base += len(data)
        return skipped

    def at_end(self) -> bool:
        return self._fill(1) == 0

    def _size(self) -> int | None:
        try:
            cur = self.f.tell()
            end = self.f.seek(0, io.SEEK_END)
            self.f.seek(cur)
            return int(end)
        except (OSError, ValueError, AttributeError):
            return None


def bytes_reader(data: bytes) -> Reader:
    return Reader(io.BytesIO(data), 0, len(data))


__all__ = ["Reader", "ScanLimitError", "Source", "bytes_reader"]
