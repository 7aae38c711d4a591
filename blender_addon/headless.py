"""``blender -b file.blend -a`` on a farm: the process exit code says whether the neural render worked.

Blender's own exit code after ``-a`` is 0 unless the render was interrupted, and an add-on cannot set it. So when
the hooked neural render of a background animation render fails (pre-flight refused, pass render failed, backend
refused or the job failed or was cancelled), ``judge`` registers an ``atexit`` function that ends the process
with ``EXIT_NEURAL_FAILED`` once Blender has finished its work and finalises Python (every frame, pass and log
line is written by then). The local backend the add-on started is stopped first, since ``os._exit`` skips the
other exit functions. ``failure()`` is the recorded reason (empty while nothing failed).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

import bpy

from . import session
from . import neurender_contract as contract

log = logging.getLogger(__name__)

EXIT_NEURAL_FAILED = 3
"""Exit code of a background render whose neural render failed (Blender itself uses 1 for an interrupted render)."""

_failure = ""


def failure() -> str:
    return _failure


def judge(waited: bool) -> str:
    """After a hooked background render: record a failure unless the job finished (or, without waiting, was at least
    submitted). Returns the failure ('' when it worked)."""
    status = bpy.context.window_manager.neurender
    if waited:
        ok = status.job_state == contract.JOB_DONE and not status.error
    else:
        ok = bool(status.job_id) and status.job_state != contract.JOB_FAILED and not status.error
    if ok:
        return ""
    fail(status.error or f"the neural render ended {status.job_state or 'without a job'}")
    return _failure


def fail(reason: str) -> None:
    global _failure
    if not _failure:
        atexit.register(_exit_failed)
    _failure = reason
    log.error("neurender: the neural render failed (%s); Blender will exit with code %d", reason, EXIT_NEURAL_FAILED)


def reset() -> None:
    """Forget a recorded failure (for a process that goes on rendering after one, e.g. the add-on's tests)."""
    global _failure
    if _failure:
        atexit.unregister(_exit_failed)
    _failure = ""


def _exit_failed() -> None:
    try:
        st = session._state
        if st is not None:
            st.local.stop(timeout=2.0, wait=True)
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
    log.error("neurender: exit code %d: %s", EXIT_NEURAL_FAILED, _failure)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(EXIT_NEURAL_FAILED)
