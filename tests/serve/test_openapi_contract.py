"""The OpenAPI document is the contract (issue #15): schemathesis against a real server.

Every operation of ``/openapi.json`` is called with generated requests — ones that fit the
schema and ones that do not — with and without the API key. No answer may be a 5xx, and
every status code must be listed for its operation. Bounded: a few examples per operation
and mode (derandomized, so a run is repeatable), every failure reported at the end.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

from helpers.server import running_server

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

KEY = "contract-key"
AUTH = {"X-API-Key": KEY}
CHECKS = [not_a_server_error, status_code_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 12}


def _run(case: schemathesis.Case, headers: dict[str, str] | None) -> str | None:
    try:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of failures
        return f"{case.method} {case.formatted_path}: {str(exc).strip().splitlines()[0][:300]}"
    return None


def test_every_answer_is_documented_and_none_is_a_5xx(chapter_bundle: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(chapter_bundle, repo / "fraud" / "1")
    failures: list[str] = []
    calls = 0
    with running_server(repo, "--repository-api", "--default-model", "fraud",
                        env={"PACKSERVE_API_KEY": KEY}) as srv:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json", headers=AUTH)
        for result in schema.get_all_operations():
            op = result.ok()
            if "repository/models" in op.path and op.path.endswith("/unload"):
                continue  # would unload the model every other operation is exercised on
            for mode, n in EXAMPLES.items():
                @given(case=op.as_strategy(generation_mode=mode), keyed=st.booleans())
                @settings(max_examples=n, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                def run(case: schemathesis.Case, keyed: bool) -> None:
                    nonlocal calls
                    calls += 1
                    failure = _run(case, AUTH if keyed else None)
                    if failure is not None and failure not in failures:
                        failures.append(failure)

                with contextlib.suppress(Unsatisfiable):  # nothing to negate: no inputs
                    run()
        # the unload operation last, once: documented answers there too
        for result in schema.get_all_operations():
            op = result.ok()
            if op.path.endswith("/unload"):
                failure = _run(op.Case(path_parameters={"name": "fraud"}), AUTH)
                if failure is not None:
                    failures.append(failure)
    assert calls > 100
    assert not failures, "\n".join(failures[:40])
