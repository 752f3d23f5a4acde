"""A module no worker may import on behalf of a task record (DESIGN §13, trust boundary).

Importing it leaves the file named by ``FAULT_IMPORT_MARKER``; calling ``run`` leaves
``FAULT_RUN_MARKER``. A poison task naming ``tests.faults.poison_module:run`` must end
FAILED with neither file created.
"""

from __future__ import annotations

import os

_marker = os.environ.get("FAULT_IMPORT_MARKER")
if _marker:
    with open(_marker, "w") as _f:
        _f.write(f"imported by pid {os.getpid()}\n")


def run(*args: object) -> None:
    path = os.environ.get("FAULT_RUN_MARKER")
    if path:
        with open(path, "w") as f:
            f.write(f"run by pid {os.getpid()} with {args!r}\n")
