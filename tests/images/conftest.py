"""One tiny CNN packed with image preprocessing, once per session (issue #17)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pictures import CLASSES, PREPROCESS

from helpers.server import Server, running_server


@pytest.fixture(scope="session")
def tiny_cnn() -> Any:
    """A 4-class CNN over 3x32x32 logits, built once per session."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, len(CLASSES)),
    ).eval()


@pytest.fixture(scope="session")
def cnn_sample() -> Any:
    import torch

    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_cnn: Any, cnn_sample: Any) -> Path:
    from packserve.pack import pack

    out = tmp_path_factory.mktemp("images") / "cnn"
    pack(tiny_cnn, out, sample=cnn_sample, name="cnn", task="multiclass",
         classes=CLASSES, output="logits", preprocess=PREPROCESS)
    return out


@pytest.fixture(scope="session")
def image_server(image_bundle: Path) -> Iterator[Server]:
    with running_server(image_bundle, "--max-body-bytes", "4000000") as srv:
        yield srv
