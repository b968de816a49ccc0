"""Session fixtures for the pack tests: models and bundles are built once per session (the torch
family's own fixtures are in torch_family/conftest.py)."""

from __future__ import annotations

import pytest
from zoo import Zoo


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("pack-zoo"))


__all__ = ["zoo"]
