"""The host daemon: receive, validate, store, acknowledge, and analyse each run when it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.endpoints import host_socket
from nvscope.proto.messages import Ack, Heartbeat, Hello, Message, PartialPixel, Pixel, RunEnd, RunStart
from nvscope.proto.version import software_version

from .srm.online_g2 import G2Estimator, MleEstimator
from .srm.run_g2 import RunG2, g2_attributes
from .store import RunStore, run_path

log = logging.getLogger(__name__)

HELLO_AFTER_SILENCE_S = 3.0
"""Say hello again when the rig has been silent this long (it heartbeats every second)."""

Analysis = Callable[[RunStore], tuple[dict, dict]]
"""Given a run's open store at run end: (result datasets, result attributes)."""


@dataclass
class HostStats:
    """What the daemon has seen: stored messages, duplicates dropped, malformed frames dropped; and the
    pixels whose on-line g2 it wrote, in how many batches and how many seconds."""

    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    orphans: int = 0
    finished: list[tuple[str, str]] = field(default_factory=list)  # (run_id, exit_status)


@dataclass
class _Batch:
    """What one step received: runs touched, runs ended, new data messages, stored pixels with their
    arrival time (monotonic s), partial pixels to answer, frames taken."""

    touched: dict[str, RunStore] = field(default_factory=dict)
    ends: list[tuple[RunStore, RunEnd]] = field(default_factory=list)
    stored: list[Message] = field(default_factory=list)
    arrived: dict[str, list[tuple[Pixel, float]]] = field(default_factory=dict)
    partials: list[PartialPixel] = field(default_factory=list)
    n: int = 0


class HostDaemon:
    """Connects to a rig, stores every data message of every run, acks only what is stored; estimates
    each SRM pixel's g2(0) as it is stored (`g2_estimator`, default the Poisson MLE) and answers
    adaptive dwell's partial pixels."""

    def __init__(self, endpoint: str, out_dir: str | Path, analyses: dict[str, Analysis],
                 ctx: zmq.Context | None = None, batch: int = 512, g2_estimator: G2Estimator | None = None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = host_socket(self.ctx, endpoint)
        self.out_dir = Path(out_dir)
        self.analyses = analyses
        self.batch = batch
        self.g2_estimator = g2_estimator or MleEstimator()
        self.runs: dict[str, RunStore] = {}
        self.g2: dict[str, RunG2 | None] = {}  # per SRM run being stored; None: its on-line g2 failed
        self.stats = HostStats()
        self.last_heartbeat: Heartbeat | None = None
        self._cmd_seq = 0
        self._orphans_logged: set[str] = set()
        self._last_heard = time.monotonic()
        self.observers: list[Callable[[Message], None]] = []
        """Called with every newly stored data message, after it has been acknowledged."""
        self.hello()

    def hello(self) -> None:
        """Tell the rig this host is here: it replays everything not yet acknowledged."""
        self.send(Hello(run_id="", seq=0, version=software_version()))

    def send(self, msg: Message) -> None:
        """Send a command to the rig."""
        self.sock.send_multipart(encode(msg))

    def command(self, cls: type[Message], run_id: str, **fields) -> None:
        """Send a command of kind `cls`, numbered by the host's own counter."""
        self._cmd_seq += 1
        self.send(cls(run_id=run_id, seq=self._cmd_seq, **fields))

    # ------------------------------------------------------------------ the loop
    def step(self, timeout_ms: int = 100) -> int:
        """Receive one batch (what is queued, up to `batch`), store it, flush, ack; returns its size."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            if time.monotonic() - self._last_heard > HELLO_AFTER_SILENCE_S:
                self.hello()  # a rig that restarted does not know this host until it speaks
                self._last_heard = time.monotonic()
            return 0
        self._last_heard = time.monotonic()
        b = self._receive()
        self._answer(b.partials)
        for store in b.touched.values():
            if not store.finished:
                store.flush()
        ending = {end.run_id for _, end in b.ends}
        for run_id, store in b.touched.items():  # a run that ends is acked once its results are written
            if run_id not in ending:
                self.send(Ack(run_id=run_id, seq=store.last_seq))
        for run_id, store in b.touched.items():
            if not store.finished:
                self._update_g2(run_id, store, b.arrived.get(run_id, []))
        for store, end in b.ends:
            self._finish(store, end)
        for run_id in ending:
            self.send(Ack(run_id=run_id, seq=b.touched[run_id].last_seq))
        self._notify(b.stored)
        return b.n

    def _receive(self) -> _Batch:
        """Take what is queued (up to `batch` frames): store each new data message (not yet flushed),
        keep the partial pixels, drop duplicates and malformed frames."""
        b = _Batch()
        while b.n < self.batch:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            t_recv = time.monotonic()
            b.n += 1
            try:
                msg = decode(frames)
            except ProtocolError as exc:
                self.stats.malformed += 1
                log.error("dropped a malformed message (%d so far): %s", self.stats.malformed, exc)
                continue
            if isinstance(msg, Heartbeat):
                self.last_heartbeat = msg
            elif isinstance(msg, PartialPixel):
                b.partials.append(msg)
            elif msg.durable:
                self._store(msg, t_recv, b)
            else:
                log.warning("ignored a %s message (not for the host)", msg.kind)
        return b

    def _store(self, msg: Message, t_recv: float, b: _Batch) -> None:
        """Add one data message to its run's file (a duplicate is counted and dropped)."""
        store = self._store_for(msg)
        if store is None:
            return
        b.touched[msg.run_id] = store
        if msg.seq <= store.last_seq or store.finished:
            self.stats.duplicates += 1
            if isinstance(msg, RunEnd) and not store.finished:
                b.ends.append((store, msg))  # stored, but a host died before finishing the run
            return
        store.add(msg)
        b.stored.append(msg)
        self.stats.stored += 1
        if isinstance(msg, Pixel):
            b.arrived.setdefault(msg.run_id, []).append((msg, t_recv))
        if isinstance(msg, RunEnd):
            b.ends.append((store, msg))

    def _notify(self, stored: list[Message]) -> None:
        """Hand every newly stored (and acknowledged) message to the observers."""
        for msg in stored:
            for observer in self.observers:
                try:
                    observer(msg)
                except Exception as exc:  # a failing consumer must not stop the storing
                    log.error("run %s: %s failed on %s seq %d: %s: %s", msg.run_id,
                              getattr(observer, "__qualname__", observer), msg.kind, msg.seq,
                              type(exc).__name__, exc)

    def _update_g2(self, run_id: str, store: RunStore, arrived: list[tuple[Pixel, float]]) -> None:
        """Estimate the g2(0) of the run's pixels stored in this batch (and any stored without one), write, flush."""
        online = self.g2.get(run_id)
        if online is None:
            return
        t0 = time.perf_counter()
        try:
            n = online.update(arrived)
            if n:
                store.flush()
                log.debug("run %s: on-line g2 of %d pixels in %.3f s", run_id, n, time.perf_counter() - t0)
        except Exception as exc:  # the stored pixels stay; the maps at run end are computed anyway
            self.g2[run_id] = None
            log.error("run %s: on-line g2 failed, none from now on in this run: %s: %s",
                      run_id, type(exc).__name__, exc)

    def _answer(self, partials: list[PartialPixel]) -> None:
        """Answer adaptive dwell's partial pixels with their g2(0) and its std (nothing is stored)."""
        by_run: dict[str, list[PartialPixel]] = {}
        for p in partials:
            by_run.setdefault(p.run_id, []).append(p)
        for run_id, batch in by_run.items():
            known = run_id in self.runs or run_path(self.out_dir, run_id).exists()
            if not known or self._store_for(batch[0]) is None:  # (re)opened: a restarted host answers too
                continue
            online = self.g2.get(run_id)
            if online is None:
                log.debug("run %s: no on-line g2 to answer %d partial pixels", run_id, len(batch))
                continue
            try:
                replies = online.answer(batch)
            except Exception as exc:  # unanswered, rt acquires on to the pixel's maximum dwell
                log.error("run %s: partial pixel g2 failed: %s: %s", run_id, type(exc).__name__, exc)
                continue
            for reply in replies:
                self.send(reply)

    def _store_for(self, msg: Message) -> RunStore | None:
        """The open store of the message's run: created at run_start, reopened after a restart."""
        store = self.runs.get(msg.run_id)
        if store is not None:
            return store
        path = run_path(self.out_dir, msg.run_id)
        attrs = g2_attributes(self.g2_estimator)
        if path.exists():
            store = RunStore.reopen(path, attrs)
            log.info("resuming run %s from %s (stored up to seq %d)", msg.run_id, path, store.last_seq)
        elif isinstance(msg, RunStart):
            store = RunStore.create(path, msg, attrs)
            log.info("run %s (%s) -> %s", msg.run_id, msg.run_kind, path)
        else:
            self.stats.orphans += 1
            if msg.run_id not in self._orphans_logged:
                self._orphans_logged.add(msg.run_id)
                log.error("message %s seq %d of run %s, whose run_start never arrived: not stored",
                          msg.kind, msg.seq, msg.run_id)
            return None
        self.runs[msg.run_id] = store
        if str(store.f.attrs["run_kind"]) == "srm" and not store.finished:
            self._start_g2(msg.run_id, store)
        return store

    def _start_g2(self, run_id: str, store: RunStore) -> None:
        """The on-line g2 of an SRM run (its context rebuilt from the file when reopened)."""
        try:
            self.g2[run_id] = RunG2(self.g2_estimator, store)
        except Exception as exc:  # the pixels are stored anyway; the maps at run end are computed anyway
            self.g2[run_id] = None
            log.error("run %s: no on-line g2: %s: %s", run_id, type(exc).__name__, exc)

    def _finish(self, store: RunStore, end: RunEnd) -> None:
        """Analyse a run that ended and write its results; the data stay whatever the analysis does."""
        kind = str(store.f.attrs["run_kind"])
        results, attrs = {}, {}
        analysis = self.analyses.get(kind)
        if analysis is not None:
            t0 = time.perf_counter()
            try:
                results, attrs = analysis(store)
            except Exception as exc:  # the analysis must never lose the acquired data
                log.error("run %s: analysis failed: %s: %s", end.run_id, type(exc).__name__, exc)
                attrs = {"analysis_error": f"{type(exc).__name__}: {exc}"}
            attrs["analysis_s"] = time.perf_counter() - t0
        store.finalize(end, results, attrs)
        self.g2.pop(end.run_id, None)
        self.stats.finished.append((end.run_id, end.exit_status))
        log.info("run %s %s: %s", end.run_id, end.exit_status, store.path)

    def close(self) -> None:
        """Close every file and the socket."""
        for store in self.runs.values():
            store.close()
        self.sock.close()
