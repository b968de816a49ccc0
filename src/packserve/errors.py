"""packserve's exception hierarchy and its exit codes.

Every error a user can cause carries two numbers: the CLI exit code and the HTTP status.
The CLI maps ``exit_code`` and the server maps ``http_status`` in exactly one place each,
so a new error type never needs a new ``except`` clause anywhere else. Every exit code is a
member of :class:`ExitCode`, defined here once; each means one thing (README: "Exit codes").

Messages must be safe to show to a remote client: no stack traces, no absolute paths of
the serving host. Put host-local detail in ``detail_for_logs`` instead.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The CLI's exit codes, one meaning each (:data:`EXIT_CODES`; README "Exit codes")."""

    OK = 0
    UNSAFE = 1
    USAGE = 2
    MISSING_DEPENDENCY = 3
    PACK_FAILED = 4
    BUNDLE_INVALID = 5
    SIGNATURE_INVALID = 6
    SIGNATURE_MISSING = 7
    SCAN_INCOMPLETE = 8
    NOT_A_PICKLE = 9
    INVALID_INPUT = 10
    FAILED = 11


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "success; for scan: pickle data found and all of it verified safe",
    ExitCode.UNSAFE: "scan: a file is unsafe to load (it has findings)",
    ExitCode.USAGE: "bad arguments, flags or settings",
    ExitCode.MISSING_DEPENDENCY: "an optional dependency is not installed",
    ExitCode.PACK_FAILED: "a model could not be packed (export, sample, parity, output exists)",
    ExitCode.BUNDLE_INVALID: "a bundle is missing, malformed, tampered with or cannot be loaded",
    ExitCode.SIGNATURE_INVALID: "a bundle's signature is bad, unreadable or by an untrusted signer",
    ExitCode.SIGNATURE_MISSING: "a signature is required but the bundle has none",
    ExitCode.SCAN_INCOMPLETE: "scan: something could not be scanned (unreadable, too large, "
    "encrypted, corrupt)",
    ExitCode.NOT_A_PICKLE: "scan: no file given holds pickle data, so nothing was verified",
    ExitCode.INVALID_INPUT: "input rows do not fit the model's signature",
    ExitCode.FAILED: "any other failure (the server, a worker or a demo failed)",
}


def exit_code_help() -> str:
    """The exit-code table as plain text, for ``--help``."""
    return "\n".join(f"{int(code):>3}  {meaning}" for code, meaning in EXIT_CODES.items())


class PackserveError(Exception):
    """Base class: a failure packserve understands and can explain."""

    exit_code: int = ExitCode.FAILED
    http_status: int = 500
    code: str = "error"

    def __init__(self, message: str, *, detail_for_logs: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail_for_logs = detail_for_logs

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe body for an HTTP error response."""
        return {"error": self.code, "message": self.message}


# --- configuration and environment -------------------------------------------------------


class ConfigError(PackserveError):
    """Invalid settings, flags or arguments."""

    exit_code = ExitCode.USAGE
    code = "config_error"


class MissingDependencyError(PackserveError):
    """An optional framework is needed but not installed; names the extra to install."""

    exit_code = ExitCode.MISSING_DEPENDENCY
    code = "missing_dependency"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the optional dependency {package!r}; "
            f"install it with: pip install 'packserve[{extra}]'"
        )
        self.package = package
        self.extra = extra


# --- packing -------------------------------------------------------------------------------


class PackError(PackserveError):
    """A model could not be turned into a bundle."""

    exit_code = ExitCode.PACK_FAILED
    code = "pack_error"


class UnsupportedModelError(PackError):
    """The object is not a model type packserve knows how to export."""

    code = "unsupported_model"


class SampleError(PackError):
    """The sample passed to ``pack`` is unusable (empty, wrong width, non-finite)."""

    code = "bad_sample"


class ParityError(PackError):
    """The exported artifact does not predict what the native model predicts."""

    code = "parity_failed"

    def __init__(self, message: str, *, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class OutputExistsError(PackError):
    """The output directory exists and ``force`` was not given."""

    code = "output_exists"


# --- bundles and loading -------------------------------------------------------------------


class BundleError(PackserveError):
    """A bundle directory is missing, malformed, or from an unknown schema."""

    exit_code = ExitCode.BUNDLE_INVALID
    code = "bundle_error"


class IntegrityError(BundleError):
    """A bundle file is missing, extra, or its sha256/size does not match the manifest."""

    code = "integrity_error"


class SignatureError(BundleError):
    """A bundle's signature is unreadable, by an untrusted signer, or does not match its files.

    ``reason`` is one word from a small fixed set (a metrics label): ``missing``,
    ``unreadable``, ``untrusted_signer``, ``bad_signature``, ``files_differ``,
    ``unsigned_files``, ``unsupported``.
    """

    exit_code = ExitCode.SIGNATURE_INVALID
    code = "signature_invalid"

    def __init__(self, message: str, *, reason: str = "bad_signature",
                 detail_for_logs: str | None = None) -> None:
        super().__init__(message, detail_for_logs=detail_for_logs)
        self.reason = reason


class SignatureMissingError(SignatureError):
    """Signatures are required (a trusted key was given) but the bundle has no ``model.sig``."""

    exit_code = ExitCode.SIGNATURE_MISSING
    code = "signature_missing"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="missing")


# --- scanning ------------------------------------------------------------------------------


class UnsafeFileError(PackserveError):
    """A file was scanned and has findings: it must not be loaded."""

    exit_code = ExitCode.UNSAFE
    http_status = 400
    code = "unsafe_file"

    def __init__(self, message: str, *, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ScanFailedError(PackserveError):
    """A file could not be scanned at all (unreadable, unsupported container)."""

    exit_code = ExitCode.SCAN_INCOMPLETE
    code = "scan_failed"


# --- inference and serving -----------------------------------------------------------------


class InputError(PackserveError):
    """Input rows do not fit the model's signature. ``where`` points at the culprit."""

    exit_code = ExitCode.INVALID_INPUT
    http_status = 422
    code = "invalid_input"

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.where is not None:
            body["where"] = self.where
        return body


class ImageError(InputError):
    """An image that cannot be decoded (truncated, corrupt, animated): 422, never a 500."""

    code = "invalid_image"


class BadRequestError(PackserveError):
    """The request body is not parseable (malformed JSON, wrong envelope)."""

    http_status = 400
    code = "bad_request"


class UnsupportedMediaTypeError(PackserveError):
    http_status = 415
    code = "unsupported_media_type"


class PayloadTooLargeError(PackserveError):
    http_status = 413
    code = "payload_too_large"


class ImageTooLargeError(PayloadTooLargeError):
    """An image over the bundle's byte or pixel limit, refused before it is decoded."""

    code = "image_too_large"


class UnauthorizedError(PackserveError):
    """No valid API key. ``challenges`` become ``WWW-Authenticate`` headers: ``Bearer`` for the
    API, plus ``Basic`` on the docs pages so that a browser asks for the key there."""

    http_status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, challenges: tuple[str, ...] = ("Bearer",)) -> None:
        super().__init__(message)
        self.challenges = challenges


class ModelNotFoundError(PackserveError):
    http_status = 404
    code = "model_not_found"


class ModelNotReadyError(PackserveError):
    http_status = 503
    code = "model_not_ready"


class OverloadedError(PackserveError):
    """The queue is full or the server is draining; the client should retry later."""

    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(PackserveError):
    """A request's deadline passed before it was computed; it was not run."""

    http_status = 504
    code = "deadline_exceeded"


class ShuttingDownError(OverloadedError):
    """The server got SIGTERM and is draining: the request was not run; retry elsewhere."""

    code = "shutting_down"


class RouteNotFoundError(PackserveError):
    """No endpoint at this path (distinct from an unknown *model*)."""

    http_status = 404
    code = "not_found"


class MethodNotAllowedError(PackserveError):
    """The path exists but not for this HTTP method; ``allow`` lists the methods it takes."""

    http_status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...] = ("POST",)) -> None:
        super().__init__(message)
        self.allow = allow


class ModelLoadError(PackserveError):
    """A load request failed (bad version bundle, nothing to load); what served keeps serving."""

    exit_code = ExitCode.BUNDLE_INVALID
    http_status = 400
    code = "model_load_failed"


class InferenceError(PackserveError):
    """The runtime failed while computing a batch. The message never includes internals."""

    http_status = 500
    code = "inference_failed"
