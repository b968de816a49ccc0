"""Session fixtures for the pack tests: models and bundles are built once per session."""

from __future__ import annotations

import pytest
from zoo import Zoo


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("pack-zoo"))


# Torch packer fixtures (issue #3) live in their own module to keep this file's zoo separate.
from torch_fixtures import (  # noqa: E402
    branch_ts_bundle,
    fraud_onnx_bundle,
    fraud_torch,
    fraud_ts_bundle,
    torch_bundles,
    torch_sample,
)

__all__ = [
    "branch_ts_bundle", "fraud_onnx_bundle", "fraud_torch", "fraud_ts_bundle", "torch_bundles",
    "torch_sample", "zoo",
]
