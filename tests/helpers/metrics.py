"""Reading a server's ``/metrics`` exposition in tests (one parser, not one per test file)."""

from __future__ import annotations


def sample_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` carrying ``labels`` (all its series when none given)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.split()[-1])
    return total


def sample(text: str, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose label set is exactly ``labels`` (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0][len(name) + 1:] == want:
            return float(line.split()[-1])
    return 0.0
