"""``packserve serve``: its flags are generated from ServeSettings (pydantic-settings).

This module is imported only when ``serve`` runs or shows its help: building the flags needs
pydantic, which other commands never pay for.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import typer

#: list-valued settings: field -> its repeatable flag (the env var takes a comma-separated list)
REPEATABLE = {"trusted_keys": "--trusted-key"}


def _serve_signature() -> tuple[inspect.Signature, dict[str, Any]]:
    """``packserve serve`` flags generated from ServeSettings: one flag per field, always in sync.

    Flags default to None so that only flags actually given override ``PACKSERVE_*`` env vars.
    """
    from pathlib import Path as _Path

    from packserve.serve.settings import ServeSettings  # light: pydantic-settings only

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "path", kw, default=typer.Argument(
                None, help="a bundle, or a repository folder REPO/<name>/<version>/ "
                "(default: PACKSERVE_MODEL_PATH)", show_default=False),
            annotation=Optional[_Path],  # noqa: UP045 - typer reads this at runtime
        )
    ]
    for name, field in ServeSettings.model_fields.items():
        if name == "model_path":
            continue
        ann = field.annotation
        kind: Any = bool if ann is bool else int if ann is int else float if ann is float else str
        flag = "--" + name.replace("_", "-")
        decl = f"{flag}/--no-{name.replace('_', '-')}" if kind is bool else flag
        if name in REPEATABLE:  # list fields: one value per flag, the flag named in the singular
            kind, decl = list[str], REPEATABLE[name]
        default = field.default if field.default is not None else None
        # parentheses, not brackets: rich would read "[default: x]" as markup and drop it
        shown = "" if name == "api_key" or default in (None, []) else f" (default: {default})"
        params.append(
            inspect.Parameter(
                name, kw,
                default=typer.Option(None, decl, help=(field.description or "") + shown,
                                     show_default=False, metavar="PEM" if name in REPEATABLE else None),
                annotation=Optional[kind],  # noqa: UP045
            )
        )
    sig = inspect.Signature(params)
    return sig, {p.name: p.annotation for p in params}


def serve(**flags: Any) -> None:
    """Serve a bundle or a repository of bundles over HTTP (predict, batch, health, metrics)."""
    from packserve.errors import ConfigError
    from packserve.serve.settings import ServeSettings

    path = flags.pop("path", None)
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    if path is not None:
        given["model_path"] = path
    try:
        settings = ServeSettings(**given)
    except ValueError as exc:  # pydantic ValidationError: name the flag, not the internals
        first = exc.errors()[0] if hasattr(exc, "errors") else {}
        loc = ".".join(str(x) for x in first.get("loc", ())) or "settings"
        raise ConfigError(f"--{loc.replace('_', '-')}: {first.get('msg', exc)}") from None
    settings.require_model_path()
    if settings.workers > 1:  # a supervisor + N single-process servers on one socket (#9)
        from packserve.serve.workers import run_workers

        code = run_workers(settings)
        if code:
            raise typer.Exit(code)
        return
    from packserve.serve.lifecycle import run

    code = run(settings)
    if code:
        raise typer.Exit(code)


serve.__signature__, serve.__annotations__ = _serve_signature()  # type: ignore[attr-defined]


__all__ = ["serve"]
