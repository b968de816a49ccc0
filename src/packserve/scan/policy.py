"""Default-deny policy for the globals a pickle names.

A global is *allowed* only if its exact ``(module, qualified name)`` is in the allowlist
(``data/*.txt``, generated from the installed libraries by ``python -m
packserve.scan.gen_allowlist``, plus a short hand-reviewed builtins file). Everything else is a
finding: *known dangerous* names get severity ``critical`` and a specific reason; the rest are
*unknown* (``high``). The scanner and the restricted loader both call :func:`is_allowed`, so
they can never disagree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from packserve.scan.report import Severity

# Module aliases a real unpickler resolves to the same thing (pickle's own Python-2 mapping
# in _compat_pickle is applied first; these are C-accelerator and platform twins).
ALIASES: dict[str, str] = {
    "__builtin__": "builtins",
    "__builtins__": "builtins",
    "exceptions": "builtins",
    "posix": "os",
    "nt": "os",
    "posixpath": "os.path",
    "ntpath": "os.path",
    "_operator": "operator",
    "_pickle": "pickle",
    "cPickle": "pickle",
    "_io": "io",
    "_posixsubprocess": "subprocess",
    "_socket": "socket",
    "_thread": "threading",
    "thread": "threading",
    "_functools": "functools",
    "_ctypes": "ctypes",
    "_imp": "importlib",
    "_frozen_importlib": "importlib",
    "_frozen_importlib_external": "importlib",
    "_shutil": "shutil",
    "copy_reg": "copyreg",
    "commands": "subprocess",
    "_sqlite3": "sqlite3",
    "_marshal": "marshal",
}

# Whole modules (and every submodule) whose names are dangerous to resolve in a pickle.
DANGEROUS_MODULES: dict[str, str] = {
    "os": "process, environment and file-system access",
    "subprocess": "runs processes",
    "pty": "spawns shells",
    "sys": "interpreter internals (modules, path, hooks)",
    "importlib": "import machinery",
    "imp": "import machinery",
    "pkgutil": "import machinery / name resolver",
    "zipimport": "import machinery",
    "runpy": "runs modules",
    "code": "interactive code runner",
    "codeop": "compiles code",
    "pdb": "debugger (runs code)",
    "bdb": "debugger (runs code)",
    "trace": "runs code",
    "profile": "runs code",
    "cProfile": "runs code",
    "timeit": "runs code strings",
    "doctest": "runs code strings",
    "idlelib": "runs code",
    "pydoc": "name resolver (locate)",
    "inspect": "introspection and name resolution",
    "types": "builds code and function objects",
    "marshal": "loads code objects",
    "pickle": "nested unpickler",
    "pickletools": "pickle internals",
    "shelve": "nested unpickler",
    "dill": "nested unpickler",
    "cloudpickle": "nested unpickler",
    "joblib": "nested unpickler / file access",
    "copyreg": "pickle extension registry",
    "ctypes": "native code and memory access",
    "cffi": "native code",
    "socket": "networking",
    "ssl": "networking",
    "http": "networking",
    "urllib": "networking",
    "urllib3": "networking",
    "requests": "networking",
    "httpx": "networking",
    "ftplib": "networking",
    "smtplib": "networking",
    "telnetlib": "networking",
    "xmlrpc": "networking",
    "asyncio": "networking and subprocesses",
    "webbrowser": "opens programs",
    "multiprocessing": "spawns processes",
    "concurrent": "runs callables",
    "threading": "runs callables",
    "signal": "process signals",
    "shutil": "file-system writes",
    "tempfile": "file-system writes",
    "io": "file access",
    "pathlib": "file access",
    "glob": "file-system access",
    "fileinput": "file access",
    "sqlite3": "file access",
    "zipfile": "file access",
    "tarfile": "file access",
    "platform": "runs processes (popen)",
    "operator": "attribute/item getters and method callers",
    "functools": "call combinators (partial, reduce)",
    "pip": "installs packages",
    "setuptools": "runs build code",
    "distutils": "runs build code",
    "site": "import path manipulation",
    "builtins": "interpreter builtins",
    "numpy.testing": "runs processes",
    "numpy.f2py": "compiles and runs code",
    "numpy.distutils": "runs build code",
    "numpy.lib.npyio": "file access / nested unpickler",
    "numpy.lib.format": "file access / nested unpickler",
    "torch.hub": "downloads and runs code",
    "torch.serialization": "nested unpickler",
    "torch.jit": "loads code",
    "torch.package": "loads code",
    "torch.utils.cpp_extension": "compiles native code",
}

# Specific names that are dangerous even where the rest of the module is harmless.
DANGEROUS_NAMES: dict[tuple[str, str], str] = {
    ("builtins", "eval"): "evaluates code",
    ("builtins", "exec"): "executes code",
    ("builtins", "compile"): "compiles code",
    ("builtins", "open"): "file access",
    ("builtins", "getattr"): "attribute resolver (reaches any callable)",
    ("builtins", "setattr"): "mutates objects",
    ("builtins", "delattr"): "mutates objects",
    ("builtins", "__import__"): "imports modules",
    ("builtins", "globals"): "interpreter internals",
    ("builtins", "locals"): "interpreter internals",
    ("builtins", "vars"): "interpreter internals",
    ("builtins", "breakpoint"): "runs a debugger",
    ("builtins", "input"): "reads the terminal",
    ("builtins", "help"): "runs pydoc",
    ("builtins", "exit"): "exits the process",
    ("builtins", "quit"): "exits the process",
    ("builtins", "memoryview"): "raw memory access",
    ("builtins", "type"): "builds classes",
    ("builtins", "super"): "attribute resolver",
    ("numpy", "load"): "nested unpickler",
    ("numpy", "fromfile"): "file access",
    ("numpy", "memmap"): "file access",
    ("numpy", "save"): "file writes",
    ("numpy", "savez"): "file writes",
    ("numpy", "tofile"): "file writes",
    ("torch", "load"): "nested unpickler",
    ("torch", "save"): "file writes",
    ("codecs", "open"): "file access",
}


@dataclass(frozen=True)
class Verdict:
    """Why a global is not allowed."""

    severity: Severity
    rule: str
    reason: str


def compat(module: str, name: str) -> tuple[str, str]:
    """The renames a real unpickler applies to protocol 0-2 (Python 2) names."""
    import _compat_pickle  # stdlib table, imports nothing it names

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]  # type: ignore[no-any-return]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def normalize(module: str, name: str) -> tuple[str, str]:
    """:func:`compat`, then our aliases (C twins, platform twins): for judging danger only."""
    module, name = compat(module, name)
    root, _, rest = module.partition(".")
    if module in ALIASES:
        module = ALIASES[module]
    elif root in ALIASES:
        module = ALIASES[root] + "." + rest
    return module, name


def _valid_module(module: str) -> bool:
    return bool(module) and all(part.isidentifier() for part in module.split("."))


def plausible_module(module: str) -> bool:
    """Could ``__import__`` possibly find this name? (Garbage text never imports.)"""
    return _valid_module(module.strip())


@functools.lru_cache(maxsize=1)
def allowlist() -> frozenset[tuple[str, str]]:
    """All ``(module, name)`` pairs from ``data/*.txt`` (``module name`` per line, ``#`` comments)."""
    pairs: set[tuple[str, str]] = set()
    root = Path(__file__).parent / "data"  # package data: plain files (importlib.resources is slow)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".txt"):
            continue
        for raw in entry.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            module, _, name = line.partition(" ")
            if module and name.strip():
                pairs.add((module, name.strip()))
    return frozenset(pairs)


def dangerous_reason(module: str, name: str) -> str | None:
    """Reason if ``module.name`` is known dangerous (after normalisation), else ``None``."""
    nmod, nname = normalize(module, name)
    first = nname.split(".", 1)[0]
    if (nmod, first) in DANGEROUS_NAMES:
        return DANGEROUS_NAMES[(nmod, first)]
    if nmod == "builtins":
        return None  # other builtins are unknown (or allowlisted), not dangerous by module
    parts = nmod.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in DANGEROUS_MODULES:
            return DANGEROUS_MODULES[prefix]
    return None


def is_allowed(module: str, name: str, *, torchscript: bool = False) -> bool:
    """True only for exact allowlisted names (the restricted loader uses this too)."""
    return judge(module, name, torchscript=torchscript) is None


def judge(module: str, name: str, *, torchscript: bool = False) -> Verdict | None:
    """``None`` if the global is allowed, else a :class:`Verdict` (default deny).

    Order: dangerous exact names, malformed/dotted names, the allowlist (exact, or after
    pickle's own Python-2 renames), dangerous modules, TorchScript classes, then unknown.
    """
    nmod, nname = normalize(module, name)
    if (nmod, nname.split(".", 1)[0]) in DANGEROUS_NAMES:
        reason = DANGEROUS_NAMES[(nmod, nname.split(".", 1)[0])]
        return Verdict(Severity.CRITICAL, "dangerous-global", f"known dangerous: {reason}")
    if "." in name:
        danger = dangerous_reason(module, name)
        return Verdict(
            Severity.CRITICAL if danger else Severity.HIGH,
            "dotted-name",
            "dotted name: the unpickler walks attributes (protocol 4+), reaching anything",
        )
    if not name.isidentifier() or not _valid_module(module):
        return Verdict(Severity.HIGH, "invalid-global", "malformed module or name")
    if (module, name) in allowlist() or compat(module, name) in allowlist():
        return None
    danger = dangerous_reason(module, name)
    if danger is not None:
        return Verdict(Severity.CRITICAL, "dangerous-global", f"known dangerous: {danger}")
    if torchscript and (module == "__torch__" or module.startswith("__torch__.")):
        return None  # TorchScript classes are compiled from the archive's code/, not imported
    return Verdict(Severity.HIGH, "unknown-global", "not in the allowlist (default deny)")


__all__ = [
    "ALIASES",
    "DANGEROUS_MODULES",
    "DANGEROUS_NAMES",
    "Verdict",
    "allowlist",
    "compat",
    "dangerous_reason",
    "is_allowed",
    "judge",
    "normalize",
    "plausible_module",
]
