"""When to draw a progress bar: when asked for and someone is watching.

A bar drawn into a log file or a CI transcript is thousands of carriage returns; tqdm's own
``disable=None`` hides it there, but also in Jupyter, whose output stream is not a terminal
and where readers do want it. So: a terminal, or a Jupyter kernel.
"""

from __future__ import annotations

import sys


def shown(progress: bool) -> bool:
    """Whether to draw a bar: ``progress`` and (stderr is a terminal or this is a kernel)."""
    if not progress:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return "ipykernel" in sys.modules or bool(isatty and isatty())
