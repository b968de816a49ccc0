"""Signing fixtures: keys and CA chain, and the chapter bundle signed by our key."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.signing import Keys, make_keys, signed_copy


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signed_bundle(chapter_bundle: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signed_copy(chapter_bundle, tmp_path_factory.mktemp("signed") / "fraud", keys)


@pytest.fixture
def no_ort_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ONNX Runtime fail the test if anything asks it to open an artifact."""
    import onnxruntime

    calls: list[str] = []

    def trap(path_or_bytes, *args, **kwargs):
        calls.append(str(path_or_bytes))
        raise AssertionError("ONNX Runtime must not open this artifact")

    monkeypatch.setattr(onnxruntime, "InferenceSession", trap)
    return calls
