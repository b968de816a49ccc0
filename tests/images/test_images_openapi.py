"""The OpenAPI document of an image bundle (#17) is its contract: schemathesis against it.

The prediction paths declare every image form (raw image media types, multipart, base64
JSON besides the tensor JSON), ``top_k`` and ``raw``, and the image answers. Schemathesis
sends generated requests of every declared form (its image samples are real 1x1 files, so
the 200 path runs) and checks that no answer is a 5xx, every status is documented and every
answer matches its declared schema.
"""

from __future__ import annotations

import contextlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from helpers.server import Server

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
MEDIA = {"application/json", "multipart/form-data", "image/jpeg", "image/png", "image/webp",
         "image/gif"}


def test_the_document_declares_the_image_forms(image_server: Server) -> None:
    doc = httpx.get(f"{image_server.url}/openapi.json", timeout=30).json()
    validate(doc)
    for path in ("/predict", "/predict/batch", "/models/cnn/predict/batch"):
        op = doc["paths"][path]["post"]
        assert set(op["requestBody"]["content"]) == MEDIA, path
        assert {p["name"] for p in op["parameters"]} >= {"top_k", "raw"}
        assert {"400", "413", "415", "422"} <= set(op["responses"])
    shapes = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    refs = [s["$ref"].rsplit("/", 1)[1] for s in shapes["schema"]["anyOf"]]
    assert any(r.endswith("_ImagePredictResponse") for r in refs)
    assert any(r.endswith("_PredictResponse") and "Image" not in r for r in refs)
    item = next(v for k, v in doc["components"]["schemas"].items() if k.endswith("_ImageBatchItem"))
    assert {"prediction", "probability", "top_k", "outputs"} <= set(item["properties"])


def test_image_operations_keep_their_contract(image_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{image_server.url}/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if not op.path.endswith(("/predict", "/predict/batch")):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                try:
                    case.call_and_validate(checks=CHECKS, timeout=30)
                except (Exception, BaseExceptionGroup) as exc:
                    text = f"{case.method} {case.formatted_path} {case.media_type}: " \
                           f"{str(exc).strip().splitlines()[0][:300]}"
                    if text not in failures:
                        failures.append(text)

            with contextlib.suppress(Unsatisfiable):
                run()
    assert calls > 50
    assert not failures, "\n".join(failures[:40])
    assert "unhandled error" not in image_server.output()
