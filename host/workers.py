"""Worker threads that run the host's analysis beside its I/O path (docs/architecture.md section 7).

A `Worker` is one thread that runs submitted jobs in priority order (lower first, first come first
served within a priority). The daemon keeps one worker per kind of work so that a long job of one
kind never queues a latency-critical job of another: per-pixel g2 (one worker), the shape contexts,
which wait for their refits in the worker processes (another), run-end analyses (a third).
onnxruntime and numba release the GIL, and what holds it for long (scipy fits, figures) runs in the
worker processes of `host.analysis_process`, so the workers and the I/O thread run side by side.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_LAST = float("inf")
"""The priority of the stop marker: after every job submitted before it."""


class Worker:
    """One thread running submitted jobs, lowest priority number first; a job that raises is logged."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._unfinished = 0
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], priority: int = 0) -> None:
        """Run `job()` on this worker's thread after every queued job of a lower or equal priority."""
        with self._lock:
            if self._closing:
                raise RuntimeError(f"worker {self.name} is closed")
            self._unfinished += 1
        self._jobs.put((priority, next(self._order), job))

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._lock:
            return self._unfinished > 0

    def close(self, timeout_s: float) -> bool:
        """Run the queued jobs, then stop; False when they are still running after `timeout_s` s
        (the thread is then abandoned: it is a daemon thread and dies with the process)."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._jobs.put((_LAST, next(self._order), None))
        self._thread.join(timeout=max(0.0, timeout_s))
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                return
            t0 = time.perf_counter()
            try:
                job()
            except Exception as exc:  # a job reports its own failures; this keeps the worker alive
                log.error("%s: job %s failed after %.3f s: %s: %s", self.name, getattr(job, "__qualname__", job),
                          time.perf_counter() - t0, type(exc).__name__, exc)
            finally:
                with self._lock:
                    self._unfinished -= 1


__all__ = ["Worker"]
