"""One run as the host sees it: its file, its kind, its on-line g2 pipeline (SRM), its run-end
analysis and its exit status (docs/architecture.md section 7).

A `RunSession`'s methods are called on the daemon's I/O thread, which alone writes the run's file
while the run streams; the work they start runs on the daemon's workers (`Lanes`) and comes back to
the I/O thread through `Lanes.on_io`. A pixel's g2 estimate starts when the pixel arrives, while the
I/O thread stores it; shape refits run in a worker process (`Lanes.processes`) and never hold up an
estimate. At run end the file passes to the analysis worker, which reads what the analysis needs,
runs it (in a worker process when it is a `ProcessAnalysis`), and writes the results and the exit
status; the daemon acknowledges the run_end once that is durable.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nvscope.proto.messages import Message, PartialPixel, Pixel, RunEnd

from .analysis_process import AnalysisProcesses
from .srm.online_g2 import G2Estimate, G2Estimator, RefitRequest, refit_shape
from .srm.run_g2 import PixelRows, RunG2Pipeline
from .store import RunStore
from .workers import Worker

log = logging.getLogger(__name__)

Analysis = Callable[[RunStore], tuple[dict, dict]]
"""Given a run's open store at run end: (result datasets, result attributes)."""


@runtime_checkable
class ProcessAnalysis(Protocol):
    """A run-end analysis that can run in a worker process: `read(store)` takes what it needs from the
    run's file (on the host), `compute(inputs)` (picklable, with picklable inputs) returns (result
    datasets, result attributes) without touching the file."""

    def read(self, store: RunStore) -> Any: ...

    def compute(self, inputs: Any) -> tuple[dict, dict]: ...


@dataclass
class Lanes:
    """The daemon's workers and its way back to the I/O thread: `fast` estimates arriving pixels,
    `context` keeps the shape contexts (and waits for their refits), `analysis` runs run-end analyses;
    `on_io(fn)` runs fn on the I/O thread; `reply(msg, t_recv)` sends an answer to the rig from any
    thread (t_recv: when the message it answers arrived, monotonic s); `processes` runs shape refits
    and process analyses (None: in line, on the calling worker)."""

    fast: Worker
    context: Worker
    analysis: Worker
    on_io: Callable[[Callable[[], None]], None]
    reply: Callable[[Message, float], None]
    processes: AnalysisProcesses | None = None

    def beside(self, fn: Callable[..., Any], *args) -> Any:
        """`fn(*args)` in a worker process (in line without one), waiting for its result."""
        return fn(*args) if self.processes is None else self.processes.run(fn, *args)


class RunPhase(enum.Enum):
    """Where a run is on the host: streaming into its file, ended (its last per-pixel g2 still being
    written), being analysed (the file belongs to the analysis), finished (final file)."""

    STREAMING = "streaming"
    ENDING = "ending"
    ANALYSING = "analysing"
    FINISHED = "finished"


class RunSession:
    """One run's store, kind, on-line g2 pipeline (SRM), analysis state and exit status."""

    def __init__(self, run_id: str, store: RunStore, lanes: Lanes, estimator: G2Estimator | None):
        self.run_id = run_id
        self.store = store
        self.kind = str(store.f.attrs["run_kind"])
        self.lanes = lanes
        self.phase = RunPhase.FINISHED if store.finished else RunPhase.STREAMING
        self.exit_status = str(store.f.attrs["exit_status"])
        self.end: RunEnd | None = None
        self.analysis_s = float("nan")
        self.g2: RunG2Pipeline | None = None
        self._submitted = store.n_g2  # pixel rows handed to the g2 pipeline
        self._estimates: dict[int, tuple[PixelRows, G2Estimate]] = {}  # by first row, waiting to be written
        self._arriving: list[tuple[Pixel, float]] = []  # pixels waiting for the fast worker's estimate
        self._arriving_lock = threading.Lock()
        self._lock = threading.Lock()  # finalize against abandon
        self._abandoned = False
        if self.kind == "srm" and self.phase is RunPhase.STREAMING and estimator is not None:
            self._start_g2(estimator)

    # ------------------------------------------------------------------ on-line g2 (SRM)
    def _start_g2(self, estimator: G2Estimator) -> None:
        """The pipeline; a reopened run's context rebuilt from the file, and the rows stored without
        a g2 (a host died before writing it) estimated, on the context worker."""
        self.g2 = pipeline = RunG2Pipeline(estimator)
        done, stored = self.store.n_g2, self.store.n_pixels
        if not stored:
            return
        context = PixelRows.from_file(self.store.f, 0, done) if done else None
        missing = PixelRows.from_file(self.store.f, done, stored) if stored > done else None
        self._submitted = stored

        def rebuild() -> None:
            try:
                for rows in (context, missing):
                    if rows is not None and (request := pipeline.learn(rows)) is not None:
                        self._refit(pipeline, request)
                if missing is not None:
                    est = pipeline.estimate(missing)
                    self.lanes.on_io(lambda: self._deliver(pipeline, missing, est))
            except Exception as exc:
                self.lanes.on_io(lambda exc=exc: self._fail(pipeline, exc))
        self.lanes.context.submit(rebuild)

    def pixel_arriving(self, msg: Pixel, t_recv: float) -> None:
        """(I/O thread) A new pixel, received at `t_recv` (s, monotonic), is about to be stored: its g2
        is estimated on the fast worker while the I/O thread writes it (pixels that arrive while the
        worker is busy are estimated together); the rows are written once stored, in order."""
        if self.g2 is None:
            return
        with self._arriving_lock:
            self._arriving.append((msg, t_recv))
            self._submitted += 1
        self.lanes.fast.submit(self._estimate_arrived)

    def storing_failed(self, exc: Exception) -> None:
        """(I/O thread) A pixel announced by `pixel_arriving` was not stored: no more on-line g2 in this
        run (its rows would no longer match the pixels)."""
        if self.g2 is not None:
            self._fail(self.g2, exc)

    def _estimate_arrived(self) -> None:
        """(fast worker) Estimate every pixel that arrived and is not estimated yet, in one batch."""
        pipeline = self.g2
        with self._arriving_lock:
            arrived, start = list(self._arriving), self._submitted - len(self._arriving)
            self._arriving.clear()
        if pipeline is None or not arrived:
            return
        rows = PixelRows.from_messages(start, arrived)
        try:
            est = pipeline.estimate(rows)
        except Exception as exc:
            self.lanes.on_io(lambda exc=exc: self._fail(pipeline, exc))
            return
        self.lanes.on_io(lambda: self._deliver(pipeline, rows, est))

    def pixels_stored(self, arrived: list[tuple[Pixel, float]]) -> None:
        """(I/O thread) Pixels just stored (and flushed), with their arrival times (s, monotonic): add
        them to the shape context on the context worker (a refit due runs in a worker process)."""
        pipeline = self.g2
        if pipeline is None or not arrived:
            return
        rows = PixelRows.from_messages(0, arrived)
        self.lanes.context.submit(lambda: self._learn(pipeline, rows))

    def _learn(self, pipeline: RunG2Pipeline, rows: PixelRows) -> None:
        """(context worker) Add rows to the shape context; refit the shape in a worker process when
        due (the estimates go on with the shape known until it is swapped in). A refit that fails is
        logged and the shape kept; a failure of the context itself stops the on-line g2."""
        try:
            request = pipeline.learn(rows)
        except Exception as exc:
            self.lanes.on_io(lambda exc=exc: self._fail(pipeline, exc))
            return
        if request is not None:
            self._refit(pipeline, request)

    def _refit(self, pipeline: RunG2Pipeline, request: RefitRequest) -> None:
        t0 = time.perf_counter()
        try:
            shape = self.lanes.beside(refit_shape, request)
        except Exception as exc:
            log.error("run %s: shape refit on %.0f events failed, keeping the shape in use: %s: %s",
                      self.run_id, request.events, type(exc).__name__, exc)
            return
        if pipeline.use_shape(shape, request):
            log.debug("run %s: shape refitted on %.0f events in %.3f s: %s", self.run_id, request.events,
                      time.perf_counter() - t0, shape)

    def answer(self, partials: list[PartialPixel], t_recv: float) -> None:
        """(I/O thread) Answer partial pixels (adaptive dwell, received at `t_recv`, monotonic s) now,
        with the shape known now: one estimate (0.1-0.4 ms) costs less than handing it to a worker,
        which would wait for the GIL behind the I/O thread's file writes."""
        pipeline = self.g2
        if pipeline is None:
            log.debug("run %s: no on-line g2 to answer %d partial pixels", self.run_id, len(partials))
            return
        try:
            replies = pipeline.answer(partials)
        except Exception as exc:  # unanswered, rt acquires on to the pixel's maximum dwell
            log.error("run %s: partial pixel g2 failed: %s: %s", self.run_id, type(exc).__name__, exc)
            return
        for r in replies:
            self.lanes.reply(r, t_recv)

    def _deliver(self, pipeline: RunG2Pipeline, rows: PixelRows, est: G2Estimate) -> None:
        """(I/O thread) Keep estimates for `write_g2` (they may come back out of row order)."""
        if pipeline is not self.g2 or self.phase not in (RunPhase.STREAMING, RunPhase.ENDING):
            return
        self._estimates[rows.start] = (rows, est)

    def write_g2(self) -> None:
        """(I/O thread) Write the estimates that follow the rows written so far, in row order, in one
        append and one flush (for readers; no fsync) however many deliveries they came in."""
        ready = []
        n = self.store.n_g2
        while n in self._estimates:
            ready.append(self._estimates.pop(n))
            n += len(ready[-1][0])
        if not ready:
            return
        t_recv = np.concatenate([rows.t_recv for rows, _ in ready])
        g2, std, reason = (np.concatenate([getattr(est, k) for _, est in ready])
                           for k in ("g2", "g2_std", "reason"))
        self.store.add_g2(g2, std, reason, time.monotonic() - t_recv)
        self.store.flush(durable=False)  # derived rows: a restarted host estimates those it finds missing

    def _fail(self, pipeline: RunG2Pipeline, exc: Exception) -> None:
        """(I/O thread) The on-line g2 failed: none from now on in this run (the maps at run end are
        computed anyway, and the pixels are stored)."""
        if pipeline is not self.g2:
            return
        self.g2 = None
        self._estimates.clear()
        log.error("run %s: on-line g2 failed, none from now on in this run: %s: %s",
                  self.run_id, type(exc).__name__, exc)

    @property
    def g2_written(self) -> bool:
        """True when every stored pixel handed to the on-line g2 has its row written (or it failed)."""
        return self.g2 is None or self.store.n_g2 >= self._submitted

    # ------------------------------------------------------------------ run end
    def ended(self, end: RunEnd) -> None:
        """(I/O thread) The run_end is stored: analyse once the last per-pixel g2 is written."""
        if self.phase is RunPhase.STREAMING:
            self.phase, self.end = RunPhase.ENDING, end

    def analyse_when_ready(self, analysis: Analysis | None, finished: Callable[[RunSession], None]) -> None:
        """(I/O thread) An ended run whose on-line g2 is written goes to the analysis worker, which
        finalizes the file; `finished(self)` is then called on the I/O thread."""
        if self.phase is not RunPhase.ENDING or not self.g2_written:
            return
        self.phase, self.g2 = RunPhase.ANALYSING, None
        store, end = self.store, self.end

        def analyse() -> None:
            results, attrs = {}, {}
            t0 = time.perf_counter()
            if analysis is not None:
                try:
                    results, attrs = self._analyse(analysis, store)
                except Exception as exc:  # the analysis must never lose the acquired data
                    log.error("run %s: analysis failed: %s: %s", self.run_id, type(exc).__name__, exc)
                    attrs = {"analysis_error": f"{type(exc).__name__}: {exc}"}
                attrs["analysis_s"] = time.perf_counter() - t0
            with self._lock:
                if self._abandoned:
                    return
                try:
                    store.finalize(end, results, attrs)
                except Exception as exc:  # unacknowledged: the rig replays the run_end to the next host
                    log.error("run %s: results not written: %s: %s", self.run_id, type(exc).__name__, exc)
                    return
            self.analysis_s = attrs.get("analysis_s", float("nan"))
            self.lanes.on_io(lambda: self._finished(finished))
        self.lanes.analysis.submit(analyse)

    def _analyse(self, analysis: Analysis, store: RunStore) -> tuple[dict, dict]:
        """(analysis worker) Run the analysis: a `ProcessAnalysis` reads here and computes in a worker
        process (a process that dies raises here), any other is called here."""
        if self.lanes.processes is not None and isinstance(analysis, ProcessAnalysis):
            results, attrs = self.lanes.processes.run(analysis.compute, analysis.read(store))
            return dict(results), dict(attrs)
        return analysis(store)

    def _finished(self, finished: Callable[[RunSession], None]) -> None:
        # the file's status: a run the rig called completed but whose file has gaps is failed (store.finalize)
        self.phase, self.exit_status = RunPhase.FINISHED, str(self.store.f.attrs["exit_status"])
        log.info("run %s %s: %s", self.run_id, self.exit_status, self.store.path)
        finished(self)

    def close(self) -> None:
        """(I/O thread) Close the file; an analysis still running is abandoned (its results are not
        written; the file stays valid with the data, and the next host analyses the run again)."""
        with self._lock:
            self._abandoned = self.phase is not RunPhase.FINISHED
            self.store.close()


__all__ = ["Analysis", "ProcessAnalysis", "Lanes", "RunPhase", "RunSession"]
