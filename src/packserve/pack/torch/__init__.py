"""``pack.torch``: torch.nn.Module -> ONNX or TorchScript bundle, fidelity proved.

One module per job: :mod:`.pack` (the table-model flow and dispatch), :mod:`.nd` (N-d /
integer-id tensor models), :mod:`.tensor` (tensor samples), :mod:`.export` (the exporters),
:mod:`.fidelity` (probes vs the eager model), :mod:`.outputs` (output spec), :mod:`.common`
(shared helpers) and :mod:`.info` (``inspect`` rows). Importing this package never imports
torch itself; the exporters import it on first use.
"""

from __future__ import annotations

from packserve.pack.torch.pack import FORMATS, METHODS, eval_mode, pack_model

__all__ = ["FORMATS", "METHODS", "eval_mode", "pack_model"]
