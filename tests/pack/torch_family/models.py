"""Tiny torch models for the torch packer's tests (module-level classes, no fixtures).

Kept in their own module so tests in a *fresh* process can prove that loading a bundle
does not need these classes.
"""

from __future__ import annotations

import torch
from torch import nn


class FraudDetector(nn.Module):
    """The chapter's network: Linear/ReLU/Dropout x2 -> Linear -> Sigmoid, 15 features."""

    def __init__(self, n_features: int = 15, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden // 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SumBranch(nn.Module):
    """Data-dependent control flow: which head runs depends on the batch's sum.

    A trace records only the branch its example took; the other head gives very different
    outputs, so an unfaithful trace is visible on negated inputs.
    """

    def __init__(self, n_features: int = 15) -> None:
        super().__init__()
        self.pos = nn.Linear(n_features, 1)
        self.neg = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.pos(x)
        return -3.0 * self.neg(x) + 1.0


class NormBranch(nn.Module):
    """Branches on the input's norm (magnitude, not sign)."""

    def __init__(self, n_features: int = 15) -> None:
        super().__init__()
        self.lin = nn.Linear(n_features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.norm() > 10.0:
            return self.lin(x) * 0.5
        return self.lin(x) + 2.0


class BatchNormNet(nn.Module):
    """BatchNorm + Dropout: both behave differently in training mode. Outputs logits (n, 3)."""

    def __init__(self, n_features: int = 15, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(16, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SoftmaxNet(nn.Module):
    def __init__(self, n_features: int = 15, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, classes), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Regressor(nn.Module):
    def __init__(self, n_features: int = 15) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AlwaysDropout(nn.Module):
    """Random even in eval mode (hard-coded training=True): must be refused."""

    def __init__(self, n_features: int = 15) -> None:
        super().__init__()
        self.lin = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.lin(nn.functional.dropout(x, 0.5, training=True)))


def seeded(cls: type[nn.Module], seed: int = 0, **kwargs: int) -> nn.Module:
    """Untrained but reproducible weights (enough to test export fidelity)."""
    torch.manual_seed(seed)
    return cls(**kwargs)


class CondBranch(nn.Module):
    """SumBranch rewritten with torch.cond: both branches are captured (ONNX `If`)."""

    def __init__(self, n_features: int = 15) -> None:
        super().__init__()
        self.pos = nn.Linear(n_features, 1)
        self.neg = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(
            x.sum() > 0, lambda t: self.pos(t), lambda t: -3.0 * self.neg(t) + 1.0, (x,)
        )
