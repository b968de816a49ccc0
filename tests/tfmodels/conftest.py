"""Keras/TensorFlow fixtures (issue #18): TensorFlow is imported once per session and the
models in :mod:`tf_zoo` are built and packed once."""

from __future__ import annotations

import pytest
from tf_zoo import KerasZoo, build


@pytest.fixture(scope="session")
def keras_zoo(tmp_path_factory: pytest.TempPathFactory) -> KerasZoo:
    return build(tmp_path_factory.mktemp("keras-zoo"), tmp_path_factory.mktemp("keras-files"))


__all__ = ["keras_zoo"]
