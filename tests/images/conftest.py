"""One tiny CNN packed with image preprocessing, once per session (issue #17)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pictures import CLASSES, PREPROCESS

from helpers.server import Server, running_server


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from packserve.pack import pack

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, len(CLASSES)),
    ).eval()
    out = tmp_path_factory.mktemp("images") / "cnn"
    pack(model, out, sample=torch.randn(2, 3, 32, 32), name="cnn", task="multiclass",
         classes=CLASSES, output="logits", preprocess=PREPROCESS)
    return out


@pytest.fixture(scope="session")
def image_server(image_bundle: Path) -> Iterator[Server]:
    with running_server(image_bundle, "--max-body-bytes", "4000000") as srv:
        yield srv
