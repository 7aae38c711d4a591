"""Network work off Blender's main thread.

A worker thread never touches bpy: it only calls a function (usually a ``client.Client`` method) and puts the
result, or the exception, on a ``queue.Queue``. The main thread drains that queue from a ``bpy.app.timers``
function (or a modal operator's timer) and runs the callbacks there, where bpy may be used. In headless
``blender -b`` timers do not run, so ``Worker(blocking=True)`` runs everything inline instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

from . import neurender_contract as contract

log = logging.getLogger(__name__)

Callback = Callable[[Any, Optional[BaseException]], None]


class Worker:
    def __init__(self, blocking: bool = False):
        self.blocking = blocking
        self.results: "queue.Queue[tuple[Callback, Any, Optional[BaseException]]]" = queue.Queue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[[], Any], callback: Callback) -> None:
        """Run ``fn()`` on a thread; ``callback(result, error)`` later runs on the main thread via ``drain``."""
        if self.blocking:
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the callback
                result, error = None, exc
            callback(result, error)
            return

        def run() -> None:
            try:
                self.results.put((callback, fn(), None))
            except BaseException as exc:  # noqa: BLE001
                self.results.put((callback, None, exc))

        thread = threading.Thread(target=run, name="neurender-worker", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def post(self, callback: Callback, result: Any = None) -> None:
        """From any thread: have ``callback(result, None)`` run on the main thread (inline when blocking)."""
        if self.blocking:
            callback(result, None)
        else:
            self.results.put((callback, result, None))

    def drain(self) -> int:
        """Run pending callbacks on the calling (main) thread; returns how many ran."""
        n = 0
        while True:
            try:
                callback, result, error = self.results.get_nowait()
            except queue.Empty:
                return n
            n += 1
            try:
                callback(result, error)
            except Exception:  # noqa: BLE001 - one broken callback must not stop the drain
                log.exception("neurender callback failed")

    @property
    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads) or not self.results.empty()


class JobWatcher:
    """Polls ``GET /jobs/{id}`` on a thread and posts every snapshot (a Job dict) until the job is final.

    ``on_update(job, error)`` runs on the main thread for each snapshot. ``stop()`` ends the polling.
    """

    def __init__(self, worker: Worker, fetch: Callable[[], dict], on_update: Callback, interval: float = 0.5,
                 keep_trying: bool = False):
        self.worker = worker
        self.fetch = fetch
        self.on_update = on_update
        self.interval = interval
        self.keep_trying = keep_trying
        """After 5 failed polls the error is posted once; with ``keep_trying`` polling goes on (every 5 s at most)
        so a backend that restarts is followed again, except when it answers that the job does not exist (404)."""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.worker.blocking:
            raise RuntimeError("use wait() in blocking mode")
        self._thread = threading.Thread(target=self._loop, name="neurender-job-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        """Still polling on its thread (a watcher that reached a final state, or never started one, is not)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                job = self.fetch()
                failures = 0
            except BaseException as exc:  # noqa: BLE001
                failures += 1
                if failures == 5 and not self._stop.is_set():  # the backend went away: report once
                    self.worker.results.put((self.on_update, None, exc))
                    if not self.keep_trying or getattr(exc, "status", 0) == 404:
                        return
                self._stop.wait(self.interval if failures < 5 else min(5.0, self.interval * (failures - 3)))
                continue
            if self._stop.is_set():  # stopped during the fetch: this snapshot belongs to a job no longer watched
                return
            self.worker.results.put((self.on_update, job, None))
            if job.get("state") in contract.JOB_FINAL_STATES:
                return
            self._stop.wait(self.interval)

    def wait(self, timeout: float = 0.0) -> dict:
        """Blocking poll (headless mode): call ``on_update`` inline until the job is final; returns the last job."""
        deadline = time.monotonic() + timeout if timeout > 0 else None
        failures = 0
        while True:
            try:
                job = self.fetch()
                failures = 0
            except BaseException as exc:  # noqa: BLE001
                failures += 1
                if failures >= 5:
                    self.on_update(None, exc)
                    raise
                time.sleep(self.interval)
                continue
            self.on_update(job, None)
            if job.get("state") in contract.JOB_FINAL_STATES:
                return job
            if self._stop.is_set():
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job.get('id')} did not finish within {timeout:.0f} s")
            time.sleep(self.interval)
