"""Worker processes for the host's CPU-heavy analysis: shape refits, run-end SRM analyses, VQNS fits
(docs/architecture.md section 7).

Worker threads share the host's GIL, and scipy's optimizers and matplotlib hold it for tens of
milliseconds at a time, long enough to delay acknowledgements and the answers adaptive dwell waits
for. What runs here runs in separate processes instead: each call takes its data as arguments
(arrays, dataclasses) and returns its result; nothing here opens the run files the host writes.

Processes are started with 'forkserver' (or 'spawn' where there is none), never with a plain fork of
the host, which has ZeroMQ sockets and threads. The forkserver preloads the analysis modules once per
interpreter, so each daemon's pool starts its workers in milliseconds, and only when the first job
comes. Workers run at a lower scheduling priority (`NICE`) so that on a small machine the host's I/O
thread wins the CPU. A worker that dies breaks its pool: the jobs it had fail (their callers record
the error), and the next job starts a fresh pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

WORKERS = 2
"""Worker processes per daemon: a long run-end analysis or VQNS fit leaves one for shape refits."""
NICE = 10
"""How much lower than the host the workers are scheduled (os.nice increment)."""
PRELOAD = ("numpy", "scipy.optimize", "nvscope.models.g2.mle", "nvscope.models.vqns.analysis",
           "nvscope.host.srm.analysis", "nvscope.host.mri.analysis")
"""Modules the forkserver imports once, so that workers forked from it start without importing."""


def _worker_start(nice: int) -> None:
    """(in each worker process) Yield the CPU to the host; leave Ctrl-C to the host, which finishes
    the work in hand and then ends its workers (`HostDaemon.close`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(nice)
    except OSError:  # not permitted here: the worker runs at the host's priority
        pass


def _context() -> multiprocessing.context.BaseContext:
    """The forkserver context with the analysis modules preloaded ('spawn' where there is no forkserver)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))  # takes effect when the interpreter's forkserver starts
        return ctx
    return multiprocessing.get_context("spawn")


class AnalysisProcesses:
    """One daemon's pool of worker processes, started at the first job; `close` ends it."""

    def __init__(self, workers: int = WORKERS, nice: int = NICE):
        self.workers = workers
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], *args, **kwargs) -> Future:
        """Run `fn(*args, **kwargs)` in a worker process (fn and its arguments picklable); its future.
        A pool broken by a dead worker is replaced; RuntimeError once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the analysis processes are closed")
            for attempt in (0, 1):
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(self.workers, mp_context=_context(),
                                                     initializer=_worker_start, initargs=(self.nice,))
                try:
                    return self._pool.submit(fn, *args, **kwargs)
                except BrokenProcessPool:
                    if attempt:
                        raise
                    log.error("an analysis process died; starting new ones")
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
        raise AssertionError("unreachable")

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker process, waiting for it (the GIL is free meanwhile); its
        exception is raised here (BrokenProcessPool when the worker died)."""
        return self.submit(fn, *args, **kwargs).result()

    @property
    def started(self) -> bool:
        """True once a job has started the pool (and it is not closed)."""
        return self._pool is not None

    def close(self, wait: bool = True) -> None:
        """End the pool: with `wait`, after the jobs in hand; without, the workers are terminated
        (their jobs are abandoned)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if not wait:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to stop a job
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["AnalysisProcesses", "WORKERS", "NICE", "PRELOAD"]
