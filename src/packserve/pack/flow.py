"""The common flow of every pack, written once: a :class:`~packserve.pack.family.Family`
supplies the framework-specific steps, this module runs them in order.

check options and model -> read the sample -> native predictions -> per attempt: stage,
export, open with the real runtime, parity, manifest, atomic write (:func:`build.finish`).
A parity failure moves on to the family's next attempt (the float64 re-export); the last
attempt's failure is raised, naming every attempt's result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from packserve.bundle import refuse_existing
from packserve.errors import OutputExistsError, PackError, ParityError
from packserve.pack import missing
from packserve.pack.build import PackResult, finish, staged
from packserve.pack.family import ExportJob, Family
from packserve.pack.parity import NativeOutput
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable


def _check_options(family: Family, options: Mapping[str, Any]) -> None:
    if family.options is None:
        return
    unknown = set(options) - family.options
    if unknown:
        raise PackError(f"unknown option(s) for {family.title}: {sorted(unknown)}")


def run(
    family: Family,
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    sample: Any,
    name: str,
    version: str,
    feature_names: list[str] | None,
    force: bool,
    allow_parity_failure: bool,
    options: Mapping[str, Any],
    example_rows: bool = True,
) -> PackResult:
    """Pack ``model`` with ``family``; see :func:`packserve.pack.pack` for the contract."""
    family, model = family.resolve(model)
    _check_options(family, options)
    family.check(model, options)
    refuse_existing(out_dir, force=force)  # before the sample's and the export's work
    table = family.read_sample(model, sample, feature_names)

    def native_fn(t: SampleTable) -> NativeOutput:
        return family.native(model, t)

    native = missing.native_or_refuse(native_fn, table, type(model).__name__)
    attempts = list(family.attempts(model, options))
    failures: list[ParityError] = []
    for i, attempt in enumerate(attempts):
        last = i == len(attempts) - 1
        if family.step:
            step(family.step + (f" ({attempt.label})" if attempt.label else ""))
        try:
            with staged(out_dir, force=force) as staging:
                job = ExportJob(
                    model=model, sample=table, native=native, staging=staging, attempt=attempt,
                    options=options, name=name, previous=failures[-1] if failures else None,
                    allow_parity_failure=allow_parity_failure and last,
                )
                exp = family.export(job)
            return finish(
                exp, table, native, staging, out_dir, name=name, version=version,
                allow_parity_failure=allow_parity_failure and last, example_rows=example_rows,
                native_fn=native_fn if family.missing_values else None,
            )
        except ParityError as exc:
            failures.append(exc)
            if last:
                break
        except PackError as exc:
            if not failures or isinstance(exc, OutputExistsError):
                raise
            # A retry that cannot even be exported/loaded: the first failure is the news.
            raise ParityError(
                f"{failures[0].message}; retried with {attempt.label or attempt.name}, which "
                f"failed: {exc.message}", report=failures[-1].report,
            ) from None
    raise _combined(failures, attempts)


def _combined(failures: list[ParityError], attempts: list[Any]) -> ParityError:
    if len(failures) == 1:
        return failures[0]
    retries = "; ".join(
        f"retried with {a.label or a.name}: {f.message}"
        for a, f in zip(attempts[1:], failures[1:], strict=False)
    )
    return ParityError(f"{failures[0].message}; {retries}", report=failures[-1].report)


__all__ = ["run"]
