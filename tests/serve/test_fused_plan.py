"""The fused plan (serve/plan.py) answers exactly as the generic path: same bytes, same errors.

Two apps serve the same bundle; in one every handle's ``plan`` is removed after loading, so it
answers through ``ModelHandle.infer`` -> ``Prediction`` -> ``ResponseEncoder`` and the
decoder's precise path. Hypothesis sends both the same bodies — valid rows, by position and
by name, and bad ones: missing / extra / unknown features, wrong types, null, NaN/Infinity
literals, beyond float32, ragged and nested rows, empty and oversized batches, other
envelopes, escaped keys and odd spacing — and every answer (status, headers, body bytes)
must be identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packserve.serve import create_app
from packserve.serve.app import PackserveApp
from packserve.serve.settings import ServeSettings

MAX_BATCH = 6
F32_MAX = float(np.finfo(np.float32).max)
EDGE = [F32_MAX, -F32_MAX, F32_MAX * (1 + 1e-12), F32_MAX * (1 + 1e-7), 3.5e38, -1e39, 1e308,
        0.0, -0.0, 1e-45, 5e-324, 2**63, -(2**63), 2**64 - 1]

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class Pair:
    """The same bundle served twice: with its fused plan, and through the generic path."""

    def __init__(self, bundle: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.fused = self._app(bundle)
        self.generic = self._app(bundle)
        handle = self.generic.registry.resolve(None, None)
        self.has_plan = self.fused.registry.resolve(None, None).plan is not None
        handle.plan = None
        self.names: list[str] = handle.manifest.feature_names  # type: ignore[union-attr]

    def _app(self, bundle: Path) -> PackserveApp:
        app = create_app(ServeSettings(model_path=bundle, max_batch=MAX_BATCH))
        self.loop.run_until_complete(app.registry.load_all())
        return app

    def ask(self, app: PackserveApp, path: str, body: bytes) -> Answer:
        sent: list[dict[str, Any]] = []
        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1)}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(app(scope, receive, send))
        start, done = sent
        return start["status"], start["headers"], done["body"]

    def same(self, path: str, body: bytes) -> Answer:
        fused, generic = self.ask(self.fused, path, body), self.ask(self.generic, path, body)
        assert fused == generic, (path, body[:300])
        assert fused[0] in (200, 400, 413, 422), fused  # never a 5xx
        return fused

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module", params=["chapter_bundle", "iris_string_bundle", "credit_bundle"])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    p = Pair(request.getfixturevalue(request.param))
    yield p
    p.close()


def values() -> st.SearchStrategy[Any]:
    """Mostly numbers (incl. float32's edges and big ints), sometimes anything else JSON."""
    number = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.sampled_from(EDGE),
    )
    other = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just("1.5"),
                      st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=2),
                      st.just({}), st.just({"a": 1}))
    return st.one_of(number, number, number, number, number, number, other)


@st.composite
def rows(draw: st.DrawFn, names: list[str], strings: frozenset[str]) -> Any:
    n = len(names)

    def value(name: str) -> Any:
        if name in strings and draw(st.integers(0, 4)):
            return draw(st.sampled_from(["paris", "lyon", "nice", "x"]))
        return draw(values())

    kind = draw(st.integers(0, 9))
    if kind <= 5:  # by position, usually the right width
        width = n if draw(st.integers(0, 6)) else draw(st.integers(0, n + 2))
        return [value(names[i % n]) for i in range(width)]
    if kind <= 8:  # by name, sometimes a feature missing or an extra one
        row = {name: value(name) for name in names}
        if draw(st.booleans()) and draw(st.booleans()):
            row.pop(draw(st.sampled_from(names)))
        if draw(st.integers(0, 5)) == 0:
            row[draw(st.sampled_from(["extra", "f0 ", names[0].upper()]))] = 1.0
        return row
    return draw(values())  # not a row at all


def spell(draw: st.DrawFn, obj: Any) -> bytes:
    """``obj`` as JSON bytes, sometimes with other spacing, an escaped key or a NaN literal."""
    body = orjson.dumps(obj, option=orjson.OPT_INDENT_2 if draw(st.integers(0, 5)) == 0 else 0)
    trick = draw(st.integers(0, 11))
    if trick == 0:
        body = body.replace(b'"features"', b'"feat\\u0075res"', 1)
    elif trick == 1 and b"0.0" in body:
        body = body.replace(b"0.0", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity",
                                                          b"1e400", b"null", b"true"])), 1)
    elif trick == 2:
        body = body.replace(b",", b" , ", 3)
    return body


@st.composite
def single_bodies(draw: st.DrawFn, names: list[str], strings: frozenset[str]) -> bytes:
    envelope = draw(st.integers(0, 12))
    if envelope == 0:
        return spell(draw, {"instances": [{"features": draw(rows(names, strings))}]})
    obj: dict[str, Any] = {"features": draw(rows(names, strings))}
    if envelope == 1:
        obj["extra"] = 1
    return spell(draw, obj)


@st.composite
def batch_bodies(draw: st.DrawFn, names: list[str], strings: frozenset[str]) -> bytes:
    edge = st.sampled_from([0, MAX_BATCH, MAX_BATCH + 1])  # empty, full, oversized
    size = draw(st.integers(1, 4)) if draw(st.integers(0, 5)) else draw(edge)
    clean = draw(st.integers(0, 2)) == 0  # a whole batch of plain numbers: the vectorised check
    instances: list[Any] = []
    for _ in range(size):
        if clean and "string" not in strings:
            row: Any = [draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                       st.integers(-10, 10), st.sampled_from(EDGE)))
                        for _ in names]
        else:
            row = draw(rows(names, strings))
        inst: Any = {"features": row}
        if draw(st.integers(0, 15)) == 0:
            inst = draw(st.sampled_from([{"features": row, "x": 1}, {"feature": row}, row, None]))
        instances.append(inst)
    envelope = draw(st.integers(0, 15))
    if envelope == 0:
        return spell(draw, {"instances": instances, "extra": 1})
    if envelope == 1:
        return spell(draw, {"instances": {"features": instances}})
    return spell(draw, {"instances": instances})


def _strings(pair: Pair) -> frozenset[str]:
    m = pair.generic.registry.resolve(None, None).manifest
    assert m is not None
    return frozenset(f.name for f in m.features if f.dtype == "string")


def test_every_bundle_here_but_one_has_a_plan(pair: Pair) -> None:
    """The comparison is not vacuous: the fused app really takes its plan."""
    assert pair.has_plan or pair.names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_predict_answers_are_identical(pair: Pair, data: st.DataObject) -> None:
    body = data.draw(single_bodies(pair.names, _strings(pair)))
    pair.same("/predict", body)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_batch_answers_are_identical(pair: Pair, data: st.DataObject) -> None:
    body = data.draw(batch_bodies(pair.names, _strings(pair)))
    pair.same("/predict/batch", body)


def test_the_vectorised_check_and_the_precise_path_meet_at_float32s_edge(pair: Pair) -> None:
    """Just beyond float32 is refused with the precise path's message; float32's max is fine."""
    if not pair.has_plan or len(_strings(pair)):
        pytest.skip("a plain-number table model")
    n = len(pair.names)
    ok = pair.same("/predict/batch", orjson.dumps({"instances": [{"features": [F32_MAX] * n}] * 2}))
    assert ok[0] == 200
    over = [1.0] * n
    over[n - 1] = F32_MAX * (1 + 1e-12)
    status, _, body = pair.same("/predict/batch", orjson.dumps(
        {"instances": [{"features": [1.0] * n}, {"features": over}]}))
    assert status == 422 and b"overflows float32" in body and b"instance 1" in body
    status, _, body = pair.same("/predict/batch", orjson.dumps({"instances": [{"features": [True] * n}]}))
    assert status == 422 and b"got a boolean" in body
