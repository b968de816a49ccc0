"""What real pickles of live objects name: the evidence :mod:`.gen_allowlist` builds lists from.

Objects are pickled (``pickle.dumps``, ``torch.save``) and the bytes walked by the static
walker, so the allowlist holds exactly the globals a real file of that library names.
"""

from __future__ import annotations

import inspect
import io
import pickle
from typing import Any

from packserve.scan.pickle.opcodes import walk
from packserve.scan.stream import bytes_reader

Pair = tuple[str, str]


def observed(*objs: Any) -> set[Pair]:
    """Globals named by the pickles of ``objs`` (protocols 2-5), found by walking, not loading."""
    found: set[Pair] = set()
    for obj in objs:
        for proto in (2, 4, 5):
            data = pickle.dumps(obj, protocol=proto)
            found |= {(g.module, g.name) for g in walk(bytes_reader(data)).globals}
    return found


def observed_torch_save(*objs: Any) -> set[Pair]:
    import zipfile

    import torch

    found: set[Pair] = set()
    for obj in objs:
        for zipped in (True, False):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=zipped)
            raw = buf.getvalue()
            if zipped:
                with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                    for n in zf.namelist():
                        if n.endswith(".pkl"):
                            r = bytes_reader(zf.read(n))
                            found |= {(g.module, g.name) for g in walk(r).globals}
            else:
                r = bytes_reader(raw)
                for _ in range(5):
                    res = walk(r)
                    found |= {(g.module, g.name) for g in res.globals}
    return found


def classes_in(module: Any, base: type | None = None) -> set[Pair]:
    out: set[Pair] = set()
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if obj.__module__.split(".")[0] != module.__name__.split(".")[0]:
            continue
        if base is not None and not issubclass(obj, base):
            continue
        out.add((obj.__module__, obj.__qualname__))
    return out


__all__ = ["Pair", "classes_in", "observed", "observed_torch_save"]
