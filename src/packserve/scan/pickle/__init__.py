"""``scan.pickle``: the static pickle walker (every opcode of protocols 0-5, nothing executed).

:mod:`.opcodes` runs the loop, :mod:`.machine` holds the stack/memo state, :mod:`.handlers`
holds the opcode handlers and :mod:`.values` the objects they build.
The container formats around pickles (zip, tar, compressed, Keras) stay one level up in
:mod:`packserve.scan`; they hand each pickle stream to :func:`walk`.
"""

from __future__ import annotations

from packserve.scan.pickle.opcodes import GlobalRef, Walker, WalkResult, WalkState, walk

__all__ = ["GlobalRef", "WalkResult", "WalkState", "Walker", "walk"]
