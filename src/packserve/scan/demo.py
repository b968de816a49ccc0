"""``packserve demo attack``: the chapter's ``__reduce__`` attack, end to end, harmlessly.

1. build a "model" whose ``__reduce__`` calls ``os.system`` with a command that only creates a
   marker file in a fresh temporary directory;
2. prove it is real: a *child* Python process runs plain ``pickle.loads`` on the bytes and the
   marker appears;
3. scan the same bytes: packserve flags ``os.system``;
4. ask packserve to load them: refused, and the marker is not created.
"""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packserve.errors import UnsafeFileError


class MaliciousModel:
    """The chapter's attack object; the command only touches a marker file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@dataclass
class DemoResult:
    executed_by_pickle: bool
    flagged_by_scan: bool
    refused_by_packserve: bool
    marker_after_packserve: bool

    @property
    def ok(self) -> bool:
        return (
            self.executed_by_pickle
            and self.flagged_by_scan
            and self.refused_by_packserve
            and not self.marker_after_packserve
        )


# Runs in a throw-away child process: this is the unsafe load being demonstrated, on the
# payload this module generated itself (its command only creates a marker in a temp dir).
_CHILD = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"  # safe-load: demo child only


def run_attack_demo(say: Callable[[str], None] = print) -> DemoResult:
    from packserve.scan import scan
    from packserve.scan.loader import loads_checked

    with tempfile.TemporaryDirectory(prefix="packserve-demo-") as tmp:
        marker = Path(tmp) / "pwned"
        command = f"touch {shlex.quote(str(marker))}"
        payload = pickle.dumps(MaliciousModel(command))
        model = Path(tmp) / "model.pkl"
        model.write_bytes(payload)
        say(f"1. built a {len(payload)}-byte 'model' whose __reduce__ runs: {command}")

        subprocess.run([sys.executable, "-c", _CHILD], input=payload, timeout=60, check=False)
        executed = marker.exists()
        say(
            "2. plain pickle.loads in a child process: marker "
            + ("CREATED - the code really ran" if executed else "not created (unexpected)")
        )
        marker.unlink(missing_ok=True)

        report = scan(model)
        for f in report.findings:
            say(f"3. scan: {f.severity.value} at offset {f.offset}: {f.reason}")
        flagged = report.exit_code == 1

        refused = False
        try:
            loads_checked(payload, model.name)
        except UnsafeFileError as exc:
            refused = True
            say(f"4. packserve load: {exc.message}")
        after = marker.exists()
        say(
            "   marker after packserve: "
            + ("CREATED (FAILED)" if after else "not created - nothing was executed")
        )
    return DemoResult(executed, flagged, refused, after)


__all__ = ["DemoResult", "MaliciousModel", "run_attack_demo"]
