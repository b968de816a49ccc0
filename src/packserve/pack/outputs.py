"""What a neural net's single raw output *means*, recorded as the manifest's OutputSpec
(the torch and the Keras/SavedModel families).

A tensor of shape (n, 1) could be a probability, a logit or a price; only the caller knows
for sure. packserve infers what is unambiguous — a model that ends in ``nn.Sigmoid`` with
one output column is a binary classifier emitting probabilities; one that ends in
``nn.Softmax`` / ``nn.LogSoftmax`` emits class probabilities / log-probabilities — and asks
(``task=``, ``output=``) for the rest with an error that says what it saw. The family says
what the final layer is (``last``); torch's :func:`~packserve.pack.families.torch.common.final_layer`
finds it with forward hooks.
"""

from __future__ import annotations

import numpy as np

from packserve.bundle import Label, OutputSpec
from packserve.errors import ConfigError

#: the name of the single output in the artifact (torch names it so at export)
OUTPUT_NAME = "output"
TASKS = ("binary", "multiclass", "regression")
OUTPUTS = ("probability", "logits")
PROBA_SLACK = 1e-5


def _width(out: np.ndarray) -> int:
    if out.ndim == 1:
        return 1
    if out.ndim == 2:
        return int(out.shape[1])
    raise ConfigError(
        f"the model returns a {out.ndim}-D tensor of shape {list(out.shape)}; packserve serves "
        "models whose output is (n,), (n, 1) or (n, k)"
    )


def output_spec(
    out: np.ndarray,
    last: str | None,
    *,
    task: str | None,
    output: str | None,
    classes: list[Label] | None,
    threshold: float,
) -> tuple[OutputSpec, list[str]]:
    """Build the OutputSpec from the eager sample output and the caller's declarations."""
    notes: list[str] = []
    width = _width(out)
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")
    if output is not None and output not in OUTPUTS:
        raise ConfigError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
    implied = {"Sigmoid": "probability", "Softmax": "probability", "LogSoftmax": "logits"}.get(
        last or ""
    )
    if task is None:
        if last == "Sigmoid" and width == 1:
            task = "binary"
        elif last in ("Softmax", "LogSoftmax") and width >= 2:
            task = "binary" if width == 2 else "multiclass"
        else:
            raise ConfigError(
                f"cannot tell what the model's output means (last layer: {last or 'not a module'}, "
                f"{width} output column(s)): pass task='binary' | 'multiclass' | 'regression' "
                "and, for classifiers, output='probability' | 'logits'"
            )
        notes.append(f"task={task!r} inferred from the final nn.{last} layer")
    if task == "regression":
        if output is not None or classes is not None:
            raise ConfigError("output= and classes= apply to classifiers, not task='regression'")
        spec = OutputSpec(task="regression", postprocess="identity", value_output=OUTPUT_NAME,
                          names=[OUTPUT_NAME])
        return spec, notes

    if output is None:
        if implied is None or (last == "Sigmoid" and width != 1):
            raise ConfigError(
                f"task={task!r}: say whether the model's {width} output column(s) are "
                "output='probability' or output='logits' (the last layer is "
                f"{last or 'not a module'}, so packserve cannot tell)"
            )
        output = implied
        notes.append(f"output={output!r} inferred from the final nn.{last} layer")
    elif implied is not None and output != implied:
        raise ConfigError(
            f"output={output!r} contradicts the model's final nn.{last} layer, which makes its "
            f"output {implied}: applying the wrong transform would corrupt every prediction"
        )
    if task == "binary" and width not in (1, 2):
        raise ConfigError(f"task='binary' needs 1 or 2 output columns; the model has {width}")
    if task == "multiclass" and width < 2:
        raise ConfigError(
            "task='multiclass' needs one output column per class; the model has 1 "
            "(use task='binary' for a single sigmoid column)"
        )
    n_classes = max(width, 2)
    if classes is None:
        classes = list(range(n_classes))
    else:
        classes = [c.item() if hasattr(c, "item") else c for c in classes]
        if len(classes) != n_classes or len(set(map(str, classes))) != n_classes:
            raise ConfigError(f"classes= needs {n_classes} distinct labels, got {classes!r}")
    if output == "probability":
        _check_probabilities(out, width)
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if width == 1:
        post = "sigmoid_probability" if output == "probability" else "sigmoid_logit"
    else:
        post = "probabilities" if output == "probability" else "softmax"
        if threshold != 0.5:
            raise ConfigError("threshold= applies to single-column (sigmoid) binary models")
    spec = OutputSpec(task=task, postprocess=post, probability_output=OUTPUT_NAME,  # type: ignore[arg-type]
                      classes=classes, threshold=threshold, names=[OUTPUT_NAME])
    return spec, notes


def _check_probabilities(out: np.ndarray, width: int) -> None:
    v = np.asarray(out, dtype=np.float64)
    if v.size and (v.min() < -PROBA_SLACK or v.max() > 1 + PROBA_SLACK):
        raise ConfigError(
            f"output='probability' but the model returned values in [{v.min():.3g}, {v.max():.3g}]"
            " on the sample; these look like logits: pass output='logits'"
        )
    if width >= 2 and v.size:
        sums = v.reshape(v.shape[0], -1).sum(axis=1)
        if np.max(np.abs(sums - 1.0)) > 1e-3:
            raise ConfigError(
                "output='probability' but the model's rows do not sum to 1 on the sample "
                f"(max |sum - 1| = {np.max(np.abs(sums - 1.0)):.3g}); pass output='logits'"
            )


__all__ = ["OUTPUTS", "OUTPUT_NAME", "TASKS", "output_spec"]
