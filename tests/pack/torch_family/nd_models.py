"""The seven model kinds of issue #16 (tensor models), tiny, module-level (no fixtures).

Kept apart so a *fresh* process that loads their bundles provably does not import them.
``KINDS`` maps a kind to (model factory, sample factory, pack options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

VOCAB = 100


class SmallCNN(nn.Module):
    """A plain CNN over [N, 3, 32, 32] -> 10 class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))


class BasicBlock(nn.Module):
    """torchvision's resnet BasicBlock: conv-bn-relu-conv-bn + (downsampled) identity."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Like(nn.Module):
    """resnet18's layout (stem, 4 stages x 2 BasicBlocks, avgpool, fc), narrow widths."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []
        cin = widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TextClassifier(nn.Module):
    """int64 token ids [N, 16] -> Embedding -> mean -> 3 class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(tokens).mean(dim=1))


class TwoInputs(nn.Module):
    """forward(x_num, x_cat): 4 floats + 2 categorical ids (one embedding each) -> 1 value."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Embedding(7, 3)
        self.b = nn.Embedding(5, 3)
        self.net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x_num, self.a(x_cat[:, 0]), self.b(x_cat[:, 1])], dim=1)
        return self.net(h)


class GRURegressor(nn.Module):
    """A GRU over [N, 10, 4] -> last hidden state -> 2 values."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(seq)
        return self.head(out[:, -1])


class TwoHeads(nn.Module):
    """Returns a tuple: (class logits [N, 3], an embedding [N, 5])."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 5)
        self.cls = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return self.cls(h), h


class Encoder(nn.Module):
    """nn.TransformerEncoder over [N, 8, 16] (variable length), returning [N, seq, 16]."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


def seeded(cls: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = cls()
    for m in model.modules():  # non-trivial BatchNorm statistics (eval mode uses them)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


KINDS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], Any], dict[str, Any]]] = {
    "cnn": (SmallCNN, lambda s: _rng(s).normal(size=(8, 3, 32, 32)).astype(np.float32),
            {"task": "multiclass", "output": "logits"}),
    "resnet": (ResNet18Like, lambda s: _rng(s).normal(size=(4, 3, 32, 32)).astype(np.float32),
               {"task": "multiclass", "output": "logits"}),
    "text": (TextClassifier, lambda s: _rng(s).integers(0, VOCAB, (16, 16)),
             {"task": "multiclass", "output": "logits", "classes": ["neg", "neu", "pos"]}),
    "two_inputs": (TwoInputs, lambda s: {"x_num": _rng(s).normal(size=(12, 4)).astype(np.float32),
                                         "x_cat": np.stack([_rng(s).integers(0, 7, 12),
                                                            _rng(s + 1).integers(0, 5, 12)], 1)},
                   {"task": "regression"}),
    "gru": (GRURegressor, lambda s: _rng(s).normal(size=(6, 10, 4)).astype(np.float32), {"task": "tensor"}),
    "tuple": (TwoHeads, lambda s: _rng(s).normal(size=(9, 6)).astype(np.float32), {}),
    "transformer": (Encoder, lambda s: _rng(s).normal(size=(4, 8, 16)).astype(np.float32),
                    {"dynamic_axes": {"x": {1: "seq"}}}),
}
