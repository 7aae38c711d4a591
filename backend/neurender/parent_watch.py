"""Exit when the process that started us dies: ``neurender serve --exit-with-parent PID``.

A local backend started by the Blender extension must not outlive Blender (a crash, ``kill -9``, a farm job killed
by its manager): nobody would watch its jobs and its port and GPU memory would stay taken. A daemon thread checks
every ``interval`` seconds whether ``pid`` is still alive (POSIX: it is still our parent, so a recycled pid is
not mistaken for it; Windows: the process handle has not signalled), and when it is gone asks the process to stop
like Ctrl-C would (SIGTERM: uvicorn shuts down gracefully, running jobs are left for the job store to resume),
then ends it hard if that has not happened within ``grace`` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)


def _windows_waiter(pid: int) -> Optional[Callable[[float], bool]]:
    """Windows: a function 'wait up to t seconds, True when the process has exited', or None if it is gone."""
    import ctypes

    synchronize, wait_timeout = 0x00100000, 0x00000102
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return None
    return lambda seconds: kernel32.WaitForSingleObject(handle, int(seconds * 1000)) != wait_timeout


def parent_gone(pid: int) -> bool:
    """POSIX: whether ``pid`` is no longer this process's parent (it died and we were re-parented)."""
    return os.getppid() != pid


def watch(pid: int, interval: float = 1.0, grace: float = 10.0,
          stop: Optional[Callable[[], None]] = None) -> threading.Thread:
    """Start the daemon thread watching ``pid``; ``stop`` (default: SIGTERM to ourselves) runs once it is gone."""
    stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))
    waiter = _windows_waiter(pid) if sys.platform == "win32" else None

    def gone_now() -> bool:
        if sys.platform == "win32":
            return waiter is None or waiter(0)
        return parent_gone(pid)

    def run() -> None:
        stopping = threading.Event()
        while not gone_now():
            if waiter is not None:
                waiter(interval)
            else:
                stopping.wait(interval)
        log.warning("the process %d that started this backend is gone; stopping", pid)
        stop()
        stopping.wait(grace)
        log.error("still running %.0f s after the parent died; exiting now", grace)
        os._exit(3)

    thread = threading.Thread(target=run, name="neurender-parent-watch", daemon=True)
    thread.start()
    return thread
