"""Worker processes that end with the process that started them (corpus builds, demo data, base data)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time


def die_with_parent(parent: int) -> None:
    """End this worker when the process that started it ends (SIGKILL, SIGTERM, a crash): it would otherwise
    wait on its pipe forever. Linux: the kernel's parent-death signal; elsewhere a watchdog thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1: PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before the signal was armed
                    os._exit(1)
                return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="theremin-parent-watch", daemon=True).start()
