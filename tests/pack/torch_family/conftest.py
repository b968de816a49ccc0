"""Session fixtures for the torch packer's tests (issue #3).

Tiny models, each exported once per session (the dynamo ONNX exporter takes seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def torch_sample() -> np.ndarray:
    """200 rows x 15 features, standard normal (the chapter's feature count)."""
    return np.random.default_rng(7).normal(size=(200, 15))


@pytest.fixture(scope="session")
def torch_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torch_bundles")


@pytest.fixture(scope="session")
def fraud_torch():  # type: ignore[no-untyped-def]
    """The chapter's FraudDetector (seeded, untrained), left in *training* mode."""
    pytest.importorskip("torch")
    from torch_family.models import FraudDetector, seeded

    model = seeded(FraudDetector)
    model.train()
    return model


@pytest.fixture(scope="session")
def fraud_onnx_bundle(fraud_torch, torch_sample: np.ndarray, torch_bundles: Path) -> Path:  # type: ignore[no-untyped-def]
    """FraudDetector packed from training mode with format='onnx' (the default)."""
    import packserve

    assert fraud_torch.training
    return packserve.pack(fraud_torch, torch_bundles / "fraud_onnx", sample=torch_sample,
                          name="fraud-torch").path


@pytest.fixture(scope="session")
def fraud_ts_bundle(fraud_torch, torch_sample: np.ndarray, torch_bundles: Path) -> Path:  # type: ignore[no-untyped-def]
    """FraudDetector packed from training mode with format='torchscript' (method auto)."""
    import packserve

    assert fraud_torch.training
    return packserve.pack(fraud_torch, torch_bundles / "fraud_ts", sample=torch_sample,
                          name="fraud-ts", format="torchscript").path


@pytest.fixture(scope="session")
def branch_ts_bundle(torch_sample: np.ndarray, torch_bundles: Path) -> Path:
    """SumBranch (data-dependent `if`) packed with format='torchscript', method='auto'."""
    pytest.importorskip("torch")
    import packserve
    from torch_family.models import SumBranch, seeded

    return packserve.pack(seeded(SumBranch, 1), torch_bundles / "branch_ts", sample=torch_sample,
                          name="branch", format="torchscript", task="regression").path
