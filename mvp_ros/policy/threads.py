"""`default_threads`: how many torch CPU threads training and its benchmark use when not told."""
from __future__ import annotations

import os


def default_threads() -> int:
    """One torch thread per core, unless OMP_NUM_THREADS names a number (on a CPU shared with other
    work one thread can be much faster than two that wait for each other)."""
    requested = os.environ.get("OMP_NUM_THREADS", "")
    return int(requested) if requested.isdigit() and int(requested) > 0 else os.cpu_count() or 1
