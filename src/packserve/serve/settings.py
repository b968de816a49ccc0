"""The server's one configuration class.

Every field is settable as an environment variable (``PACKSERVE_<FIELD>``) and mirrored by a
``packserve serve`` flag of the same name (``--max-batch``...). Other layers (batching, V2)
add their fields here rather than inventing a second config object.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from packserve.errors import ConfigError


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class BatchingOverride(BaseModel):
    """Per-model batching settings (``model_batching``); unset fields inherit the global ones."""

    model_config = ConfigDict(extra="forbid")

    batching: bool | None = None
    max_batch_size: int | None = Field(default=None, ge=1)
    max_wait_ms: float | None = Field(default=None, ge=0.0)
    max_queue: int | None = Field(default=None, ge=1)
    timeout_ms: float | None = Field(default=None, ge=0.0)


class ServeSettings(BaseSettings):
    """Configuration of ``packserve serve`` / :func:`packserve.serve.create_app`."""

    model_config = SettingsConfigDict(env_prefix="PACKSERVE_", extra="forbid")

    # --- what to serve and where -------------------------------------------------------
    model_path: Path | None = Field(
        default=None,
        description="one bundle directory, or a repository folder REPO/<name>/<version>/",
    )
    default_model: str | None = Field(
        default=None, description="model answering /predict (default: the only model)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(
        default=1, ge=1,
        description="server processes sharing one socket (a supervisor starts them; /metrics "
        "counts them all; each drains on SIGTERM)",
    )
    server: Literal["uvicorn", "granian"] = Field(
        default="uvicorn",
        description="the HTTP engine: uvicorn, or granian (pip install 'packserve[granian]'); both "
        "keep the same readiness, drain, body-limit and --workers guarantees",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(default=False, description="one JSON line per request on stderr")

    # --- request limits ------------------------------------------------------------------
    max_batch: int = Field(default=1000, ge=1, description="most instances in one batch request")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="larger bodies get 413 while being read"
    )

    # --- inference -------------------------------------------------------------------------
    intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime intra-op threads; 0 = cpus // workers - 1, min 1"
    )
    inference_threads: int = Field(
        default=0, ge=0, description="threads running off-loop inference; 0 = cpus // workers"
    )
    inline_max_ms: float = Field(
        default=0.25,
        ge=0.0,
        description=(
            "calls whose measured cost is below this run on the event loop (a thread hop costs "
            "more than a tiny model's call); anything slower always runs in a thread. 0 = never"
        ),
    )
    require_all_models: bool = Field(
        default=True,
        description="readiness needs every model of a repository (else: >= 1 ready, none loading)",
    )

    # --- admission control (serve/admission.py) ------------------------------------------
    admission_budget_ms: float = Field(
        default=30.0, ge=0.0,
        description="most queueing an accepted prediction may meet: beyond it (the event loop "
        "behind, or a model's accepted work needing longer than this to drain) new requests get "
        "503 + Retry-After at once, before their body is read. 0 = admit everything",
    )
    max_in_flight: int = Field(
        default=0, ge=0,
        description="accepted requests per model (in flight + queued); 0 = sized from the model's "
        "measured per-call cost and admission_budget_ms",
    )
    admission_door: bool = Field(
        default=True,
        description="uvicorn: refuse at the HTTP parser, before any ASGI task exists (a refusal "
        "then costs a fraction; same answer, same metrics); off: every refusal goes through the "
        "app. No effect on granian",
    )

    coalesce: bool = Field(
        default=True,
        description="requests for one model arriving together share one model call, without "
        "waiting (only models whose rows compute identically alone and together; serve/coalesce.py)",
    )

    # --- dynamic batching (serve/batching/) ---------------------------------------------
    batching: bool = Field(
        default=False,
        description="merge concurrent requests to a model into shared model calls (no idle delay)",
    )
    max_batch_size: int = Field(
        default=64, ge=1,
        description="most rows in one merged call; a larger /predict/batch request runs alone, unsplit",
    )
    max_wait_ms: float = Field(
        default=2.0, ge=0.0,
        description=(
            "most time a request is held back for company (only when measured call cost says it pays)"
        ),
    )
    max_queue: int = Field(
        default=256, ge=1, description="requests queued per model; beyond it: 503 + Retry-After at once"
    )
    timeout_ms: float = Field(
        default=0.0, ge=0.0,
        description="a request still queued after this gets 504 and is not computed (every path; a "
        "client's X-Request-Timeout-Ms header may shorten it); 0 = no limit",
    )
    model_batching: dict[str, BatchingOverride] = Field(
        default={},
        description='per-model overrides, JSON: {"fraud": {"max_wait_ms": 0, "max_queue": 64}}',
    )

    @field_validator("model_batching", mode="before")
    @classmethod
    def _overrides_from_json(cls, value: object) -> object:
        """The CLI flag and the env var carry JSON text."""
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        return value

    # --- lifecycle -------------------------------------------------------------------------
    shutdown_grace_s: float = Field(
        default=2.0, ge=0.0, description="after SIGTERM: readiness 503, new requests 503, still listening"
    )
    drain_timeout_s: float = Field(
        default=30.0, gt=0.0, description="most time to finish accepted requests after the grace"
    )

    # --- V2 repository extension and hot reload -------------------------------------------
    repository_api: bool = Field(
        default=False,
        description="enable POST /v2/repository/{index,models/NAME/load,models/NAME/unload} "
        "(requires an API key)",
    )
    repository_poll_s: float = Field(
        default=0.0, ge=0.0,
        description="poll a repository folder every N seconds and hot-load new versions; 0 = off",
    )

    keep_versions: int = Field(
        default=2, ge=0,
        description="ready versions kept loaded per model (newest first); older ones are "
        "retired once their in-flight requests finished. 0 = keep every version",
    )

    # --- signatures (packserve.signing, issue #20) -------------------------------------------
    trusted_keys: Annotated[list[Path], NoDecode] = Field(
        default=[],
        description="serve only bundles signed by one of these keys (EC public key or CA certificate, "
        "PEM; repeatable; env: comma-separated); without it signatures are not checked",
    )

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _paths_from_text(cls, value: object) -> object:
        """Env var and flag: comma-separated paths, or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"not valid JSON ({exc})") from None
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    # --- auth --------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None,
        description="when set, every endpoint but health (and /metrics, see --metrics-auth) needs "
        "it: Authorization: Bearer KEY or X-API-Key: KEY",
    )
    metrics_auth: bool = Field(default=False, description="also require the API key for /metrics")
    public_docs: bool = Field(
        default=False,
        description="serve /docs, /redoc and /openapi.json without the API key (they need it "
        "otherwise; a browser is asked for it as the password of HTTP Basic auth)",
    )
    example_rows: bool = Field(
        default=True,
        description="put each bundle's first example row (real pack-sample data) in the OpenAPI "
        "document; --no-example-rows shows placeholder rows (0 / \"\") instead",
    )

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.api_key is not None and not self.api_key.get_secret_value():
            self.api_key = None
        if self.repository_api and self.api_key is None:
            raise ValueError("repository_api needs an API key (--api-key / PACKSERVE_API_KEY)")
        if self.repository_api and self.workers > 1:
            # a load call would reach one worker only; every worker polls on its own
            raise ValueError(
                "repository_api works with one worker: with --workers > 1 use --repository-poll-s"
            )
        return self

    def resolved_intra_op_threads(self) -> int:
        """Leave one core to the event loop; never oversubscribe with several workers."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, cpu_count() // self.workers - 1)

    def resolved_inference_threads(self) -> int:
        if self.inference_threads:
            return self.inference_threads
        return max(1, cpu_count() // self.workers)

    def require_model_path(self) -> Path:
        if self.model_path is None:
            raise ConfigError("no model path: pass PATH or set PACKSERVE_MODEL_PATH")
        return self.model_path


__all__ = ["ServeSettings", "cpu_count"]
