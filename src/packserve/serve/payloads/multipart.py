"""``multipart/form-data`` uploads of image bundles, parsed while the body streams in.

The parsing is python-multipart's (the maintained parser Starlette and FastAPI use); this
module decides which parts are images and enforces the limits as bytes arrive, so a hostile
upload is refused at the first byte that breaks a limit, not after the whole body was held:

* every file part (a ``filename`` in its Content-Disposition, or an ``image/*`` Content-Type)
  is an image, in order; other fields are skipped without being kept;
* one more file than ``max_files`` (the server's ``--max-batch``): 422 at that part's headers;
* more than ``MAX_OTHER_PARTS`` parts that are not files: 400 (parsing them costs event-loop
  time, and no client needs them);
* a file over ``max_file_bytes`` (the bundle's ``max_bytes``): 413 at the byte that crosses it;
* a part with too many or too long headers, a broken or missing boundary, a body that ends
  before the closing boundary, no file part at all: 400.

The body as a whole stays under ``--max-body-bytes`` (:func:`~packserve.serve.http.body_chunks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packserve.errors import (
    BadRequestError,
    ImageTooLargeError,
    InputError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartParser

MAX_PART_HEADERS = 8  # Content-Disposition, Content-Type, a few more: a client needs no more
MAX_HEADER_BYTES = 4096
#: form fields besides the files: each part costs parser work on the event loop (~8 µs), so a
#: body of tiny fields (80,000 in 4 MB: 0.7 s) is refused instead of parsed
MAX_OTHER_PARTS = 64


def _lib() -> Any:
    """python-multipart, imported on the first upload (``packserve[images]``): a server
    without it still serves every other request."""
    try:
        import python_multipart.multipart as lib
    except ImportError as exc:  # pragma: no cover - a dependency of the images extra
        raise MissingDependencyError("python-multipart", "images") from exc
    return lib


def _options(value: bytes) -> dict[bytes, bytes]:
    _, options = _lib().parse_options_header(value)
    return dict(options)


def boundary_of(content_type: bytes) -> bytes:
    """The ``boundary`` parameter of a ``multipart/form-data`` Content-Type (400 if none)."""
    options = _options(content_type)
    boundary = options.get(b"boundary", b"")
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary parameter")
    if len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise BadRequestError("multipart boundary is longer than 70 characters")
    return boundary


class FileParts:
    """Feed it chunks (:meth:`write`), then :meth:`files`: the images, in order."""

    def __init__(self, boundary: bytes, *, max_files: int, max_file_bytes: int) -> None:
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self._files: list[bytes] = []
        self._part: list[bytes] | None = None  # the file part being read (None: not a file)
        self._size = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._done = False
        self._others = 0
        lib = _lib()
        self._error: type[Exception] = lib.FormParserError
        try:
            self._parser: MultipartParser = lib.MultipartParser(
                boundary,
                {
                    "on_part_begin": self._begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
                max_header_count=MAX_PART_HEADERS,
                max_header_size=MAX_HEADER_BYTES,
            )
        except self._error:
            raise BadRequestError("invalid multipart boundary") from None

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except self._error as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else "parse error"
            raise BadRequestError(f"malformed multipart/form-data body: {reason}") from None

    def files(self) -> list[bytes]:
        """The file parts, once the whole body was written (400 if it was incomplete)."""
        if not self._done:
            raise BadRequestError("multipart body is incomplete (no closing boundary)")
        if not self._files:
            raise BadRequestError("multipart/form-data body holds no file part")
        return self._files

    # --- parser callbacks ------------------------------------------------------------------

    def _begin(self) -> None:
        self._headers.clear()
        self._part = None
        self._size = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((bytes(self._field).strip().lower(), bytes(self._value).strip()))
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        if not self._is_file():
            self._others += 1
            if self._others > MAX_OTHER_PARTS:
                raise BadRequestError(
                    f"more than {MAX_OTHER_PARTS} multipart fields that are not files"
                )
            return
        if len(self._files) >= self.max_files:
            raise InputError(
                f"more than {self.max_files} images: over this server's batch limit",
                where="images",
            )
        self._part = []

    def _is_file(self) -> bool:
        for name, value in self._headers:
            if name == b"content-disposition":
                if b"filename" in _options(value):
                    return True
            elif name == b"content-type" and value.lower().startswith(b"image/"):
                return True
        return False

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part is None:
            return  # a plain form field: not kept
        self._size += end - start
        if self._size > self.max_file_bytes:
            raise ImageTooLargeError(
                f"image {len(self._files)}: more than the limit of {self.max_file_bytes} bytes"
            )
        self._part.append(data[start:end])

    def _part_end(self) -> None:
        if self._part is not None:
            self._files.append(b"".join(self._part))
        self._part = None

    def _end(self) -> None:
        self._done = True


__all__ = ["FileParts", "boundary_of"]
