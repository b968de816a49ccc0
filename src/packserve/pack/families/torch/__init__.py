"""``pack.families.torch``: torch.nn.Module -> ONNX or TorchScript bundle, fidelity proved.

The torch family on the common pack flow. One module per job: :mod:`.family` (the
:class:`~packserve.pack.family.Family`: options, table-or-tensor choice), :mod:`.plan` (the
export and its fidelity proof, shared by both plans), :mod:`.table`
(table models), :mod:`.nd` (N-d / integer-id tensor models), :mod:`.tensor` (tensor
samples), :mod:`.export` (the exporters), :mod:`.fidelity` and :mod:`.probes` (probes vs the
eager model), :mod:`.common` (shared helpers) and :mod:`.info`
(``inspect`` rows). Importing this package never imports torch itself; the exporters import
it on first use.
"""

from __future__ import annotations

from packserve.pack.families.torch.common import FORMATS, METHODS, eval_mode
from packserve.pack.families.torch.family import FAMILY, TorchFamily

__all__ = ["FAMILY", "FORMATS", "METHODS", "TorchFamily", "eval_mode"]
