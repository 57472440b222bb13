"""Test-only crash points: the process SIGKILLs itself where an update says so.

Crash safety (issue 13: a SIGKILL at any point of an update leaves a device that restarts on a
verified model) can only be proved by killing the agent at each step and looking at the disk
afterwards. The updater and the model store call ``crashpoint("<state or step>")`` at every
step; with ``EDGESIGHT_UPDATE_KILL_AT`` unset (always, in production) that is one dict lookup.
SIGKILL, not an exception or ``os._exit``: nothing runs after it (no ``finally``, no atexit, no
buffered write), which is what a power cut or the OOM killer does too.
"""

from __future__ import annotations

import os
import signal
import sys

#: Names the crash point(s) to die at: one name or a comma-separated list.
KILL_AT_ENV = "EDGESIGHT_UPDATE_KILL_AT"


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``$EDGESIGHT_UPDATE_KILL_AT`` names ``name``, else return.

    The variable is read at every call (cheap) so that a test can set it in a child process
    at any time. One line on stderr first says where, so a test can tell this kill from another.
    """
    value = os.environ.get(KILL_AT_ENV)
    if not value or name not in {part.strip() for part in value.split(",")}:
        return
    sys.stderr.write(f"crashpoint: SIGKILL at {name}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
