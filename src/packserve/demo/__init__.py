"""``packserve demo run``: train -> pack -> scan -> serve -> predict -> bench, as a report.

``run`` holds the steps and the report; ``images`` the image step's colour CNN, packed in a
background process (``python -m packserve.demo.images OUT``) while the other steps run.
"""

from __future__ import annotations

from packserve.demo.run import run_demo

__all__ = ["run_demo"]
