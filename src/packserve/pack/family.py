"""The packer protocol: what a framework family implements, and the helpers it may use.

A pack has one common flow (:func:`packserve.pack.flow.run`): read the sample, compute the
native predictions, then per attempt stage a directory, export, open the artifact with the
real runtime, measure parity, write the manifest and move the bundle into place. Only the
framework-specific parts differ, and those are the methods of :class:`Family`:

* ``check``       refuse what cannot be packed, before any work (deps, fitted, supported);
* ``read_sample`` the sample in the form the flow and the family read (a :class:`SampleTable`);
* ``native``      the framework's own predictions on that sample (the parity reference);
* ``attempts``    the exports to try in order (e.g. float32, then float64 inputs);
* ``export``      write the artifact into ``job.staging`` and describe it (:class:`Export`).

A new family is one module defining a subclass (and a module-level ``FAMILY`` instance) plus
one :data:`packserve.pack.families.REGISTRY` line. New input kinds (tuples / mappings of
arrays, N-D tensors) come in through ``read_sample``; several named outputs or raw tensor
outputs through :class:`Export`'s ``outputs``; checks of the export's own (e.g. torch's
fidelity probes) through ``Export.checks``; anything else worth recording through
``Export.export`` / ``Export.notes``. A family whose steps share decisions (the output spec
read off the sample) returns a fresh instance per pack from ``resolve``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from packserve.errors import PackError, PackserveError, ParityError
from packserve.pack.build import Export
from packserve.pack.parity import NativeOutput
from packserve.pack.signature import SampleTable, model_width, sample_table

ONNX_ARTIFACT = "model.onnx"


@dataclass(frozen=True)
class Attempt:
    """One export to try. ``name`` is the family's own key; ``label`` is shown to the user
    ("converting (float64 inputs)", "retried with float64 inputs") and empty for the first."""

    name: str = "default"
    label: str = ""


@dataclass(frozen=True)
class ExportJob:
    """Everything :meth:`Family.export` needs for one attempt."""

    model: Any
    sample: SampleTable
    native: NativeOutput
    staging: Path  # empty directory; the artifact goes here (the flow removes it on failure)
    attempt: Attempt
    options: Mapping[str, Any]
    name: str  # the bundle's name
    #: the previous attempt's parity failure, when this attempt is a retry
    previous: ParityError | None = None
    #: a failed check of the export's own (``Export.checks``) is then recorded, not raised
    allow_parity_failure: bool = False


class Family(ABC):
    """One framework's part of a pack (see the module docstring)."""

    #: shown in messages ("unknown option(s) for CatBoost")
    title: ClassVar[str]
    #: family-specific ``pack()`` keywords; ``None`` = the family validates them itself
    options: ClassVar[frozenset[str] | None] = frozenset()
    #: progress line announced before each export; empty: the family announces its own
    step: ClassVar[str] = "converting"
    #: whether the flow measures which features may be missing (``packserve.pack.missing``);
    #: ``False``: the bundle takes no missing values and a sample with some is refused
    missing_values: ClassVar[bool] = True

    def resolve(self, model: Any) -> tuple[Family, Any]:
        """The family and model form that really pack ``model`` (a raw XGBoost Booster is
        handed to the sklearn family as the equivalent estimator). Default: itself."""
        return self, model

    @abstractmethod
    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        """Refuse, with the reason, a model this family cannot pack (before any work):
        missing converter, unfitted, unsupported kind."""

    def read_sample(self, model: Any, sample: Any, feature_names: list[str] | None) -> SampleTable:
        return sample_table(sample, feature_names=feature_names, model=model,
                            expected_width=model_width(model))

    @abstractmethod
    def native(self, model: Any, sample: SampleTable) -> NativeOutput:
        """The model's own predictions on the sample: what the artifact must reproduce."""

    def attempts(self, model: Any, options: Mapping[str, Any]) -> Sequence[Attempt]:
        return (Attempt(),)

    @abstractmethod
    def export(self, job: ExportJob) -> Export:
        """Write the artifact into ``job.staging``; say what it is and how its outputs read."""


# --- helpers a family uses --------------------------------------------------------------------


def dist_version(dist: str) -> str:
    """Installed version of a distribution, for the manifest's ``framework_version``/``converters``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def model_type(model: Any) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def declared_opsets(proto: Any) -> dict[str, int]:
    """The opsets an ONNX model declares (what the manifest's ``opsets`` records; a
    converter may emit a lower opset than the pin when the graph needs nothing newer)."""
    return {d.domain or "": int(d.version) for d in proto.opset_import}


def write_onnx(staging: Path, proto: Any, artifact: str = ONNX_ARTIFACT) -> dict[str, int]:
    """Serialise ``proto`` into the staging directory; return its declared opsets."""
    (staging / artifact).write_bytes(proto.SerializeToString())
    return declared_opsets(proto)


@contextmanager
def converter_errors(what: str) -> Iterator[None]:
    """Turn a converter's own exception into a :class:`PackError` that names it
    (``"{what}: TypeName: message"``, truncated); packserve's own errors pass unchanged."""
    try:
        yield
    except PackserveError:
        raise
    except Exception as exc:
        raise PackError(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from exc


__all__ = [
    "ONNX_ARTIFACT",
    "Attempt",
    "Export",
    "ExportJob",
    "Family",
    "converter_errors",
    "declared_opsets",
    "dist_version",
    "model_type",
    "write_onnx",
]
