"""The host daemon: receive, validate, store, flush and acknowledge on one I/O path that never waits
for analysis, and answer adaptive dwell's partial pixels on it (one estimate, a fraction of a
millisecond); per-pixel g2 runs beside it on a worker thread (started as each pixel arrives), shape
refits, run-end SRM analyses and VQNS fits in worker processes (`analysis_process`), so that none of
them holds the I/O thread's GIL for long (docs/architecture.md section 7).

The thread that calls `step` is the I/O thread: it alone uses the ZeroMQ socket (ZeroMQ sockets are
not thread-safe) and writes the run files while runs stream. Other threads send commands to the rig
with `post`, which queues them and wakes the I/O thread.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.endpoints import PEER_TIMEOUT_S, HostSecurity, host_socket
from nvscope.proto.logs import RateLimitedLog
from nvscope.proto.messages import (Ack, Heartbeat, Hello, MeasureCoherence, Message, PartialG2, PartialPixel, Pixel,
                                    Refused, RunEnd, RunStart, Start, Status, Stop)
from nvscope.proto.version import software_version

from .analysis_process import AnalysisProcesses
from .session import Analysis, Lanes, RunPhase, RunSession
from .srm.online_g2 import G2Estimator, MleEstimator
from .srm.run_g2 import g2_attributes
from .store import RunStore, run_path
from .workers import Worker

log = logging.getLogger(__name__)

HELLO_AFTER_SILENCE_S = 3.0
"""Say hello again when the rig has been silent this long (it heartbeats every second)."""
HEARTBEAT_S = 1.0
"""How often the host tells the rig it is alive (and what it has stored)."""
PROGRESS_EVERY_S = 30.0
"""How often a run's progress is logged (pixels done of planned, elapsed, remaining)."""
RESYNC_S = 60.0
"""After a run's file could be written again: how long live messages beyond the next one wait for the
rig's replay of the ones dropped meanwhile (a gap is recorded only after that)."""
KEPT_COMMANDS = (Start, Stop, MeasureCoherence, PartialG2)
"""Commands kept and sent again when the rig is not connected at the moment they are sent (hellos,
heartbeats and acks are not: newer ones replace them)."""
LATENCY_WINDOW = 10_000
"""How many of the latest ack and answer latencies `HostStats` keeps."""
CLOSE_WAIT_S = 60.0
"""How long `close` waits for running analyses before it abandons them (their files stay valid)."""

def _one_line(exc: Exception) -> str:
    """An exception as one line (HDF5's messages span several)."""
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]


__all__ = ["Analysis", "HostDaemon", "HostStats", "HELLO_AFTER_SILENCE_S"]


@dataclass
class HostStats:
    """What the daemon has seen: stored messages, duplicates dropped, malformed frames dropped,
    messages of runs whose run_start never arrived; and the runs it finished, in order
    (run_id, exit_status)."""

    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    orphans: int = 0
    finished: list[tuple[str, str]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    """The rig's refusals of this host's commands, in order (each also logged)."""
    adopted: list[str] = field(default_factory=list)
    """Runs this host took over in the middle (started by another host, or by itself before a restart)."""
    ack_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Per ack: seconds from receiving the oldest message it acknowledges to sending it (the last ones)."""
    answer_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Per partial pixel answered: seconds from receiving it to sending its partial_g2 (the last ones)."""


@dataclass
class _Batch:
    """What one step received: runs touched, newly stored messages, stored pixels with their arrival
    time (monotonic s) by run, run_ends, frames taken."""

    touched: dict[str, RunSession] = field(default_factory=dict)
    first_recv: dict[str, float] = field(default_factory=dict)
    stored: list[Message] = field(default_factory=list)
    arrived: dict[str, list[tuple[Pixel, float]]] = field(default_factory=dict)
    ends: list[tuple[RunSession, RunEnd]] = field(default_factory=list)
    n: int = 0


class HostDaemon:
    """Connects to a rig, stores every data message of every run, acks only what is stored; estimates
    each SRM pixel's g2(0) as it is stored (`g2_estimator`, default the Poisson MLE), answers adaptive
    dwell's partial pixels and analyses each run at its end (`analyses`, by run kind), beside the I/O."""

    def __init__(self, endpoint: str, out_dir: str | Path, analyses: dict[str, Analysis],
                 ctx: zmq.Context | None = None, batch: int = 512, g2_estimator: G2Estimator | None = None,
                 security: HostSecurity | None = None, peer_timeout_s: float = PEER_TIMEOUT_S):
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint
        self.sock = host_socket(self.ctx, endpoint, security)
        self.peer_timeout_s = peer_timeout_s
        self.on_adopt: Callable[[RunSession], None] | None = None
        """Called (I/O thread) when a session opens for a run in progress that this host did not start:
        the host adopts it (the CLI drives an adopted VQNS run on)."""
        self.rig_silent = False
        """The rig has been silent for longer than `peer_timeout_s`: its runs wait for it."""
        self._malformed_log = RateLimitedLog(log, "malformed frames")
        self._refusals_log = RateLimitedLog(log, "refusals (another host controls the rig)")
        self._hello_at: float | None = None  # when to say hello again (the rig is another host's for now)
        self._unsent: deque[Message] = deque()
        self._last_heartbeat_sent = 0.0
        self._last_progress_log: dict[str, float] = {}
        self._lost: set[str] = set()  # runs ended here because the rig no longer knows them
        self._store_errors: dict[str, float] = {}  # runs whose file cannot be written now: last try (monotonic s)
        self._storage_log = RateLimitedLog(log, "storage failures")
        self._resync: dict[str, float] = {}
        """Runs whose messages were dropped here (a full disk): a message beyond the next one is not stored
        (no gap recorded: the rig still has the missing ones and replays them) until this time (monotonic s)."""
        self.out_dir = Path(out_dir)
        self.analyses = analyses
        """Run-end analysis by run kind; run on the analysis worker (may be changed while runs go)."""
        self.batch = batch
        self.g2_estimator = g2_estimator or MleEstimator()
        self.sessions: dict[str, RunSession] = {}
        self.stats = HostStats()
        self.last_heartbeat: Heartbeat | None = None
        self.observers: list[Callable[[Message], None]] = []
        """Called on the I/O thread with every newly stored data message, after it has been
        acknowledged; they must return quickly (a fit goes to the observer's own worker)."""
        self.run_attributes: dict[str, dict[str, object]] = {}
        """Host-side settings to record in a run's file, by run id (see `start_run`)."""
        self._cmd_seq = 0
        self._cmd_lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[Message, float | None]] = queue.SimpleQueue()
        self._on_io: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._io_thread = threading.get_ident()
        self._orphans_logged: set[str] = set()
        self._last_heard = self._last_spoke = time.monotonic()
        self._closed = False
        self.processes = AnalysisProcesses()
        """This daemon's worker processes (started at the first job): shape refits, run-end analyses
        that are `session.ProcessAnalysis`, VQNS fits (`host.vqns.loop`)."""
        self.lanes = Lanes(fast=Worker("nvscope-g2"), context=Worker("nvscope-shape"),
                           analysis=Worker("nvscope-analysis"), on_io=self._call_on_io, reply=self._reply,
                           processes=self.processes)
        self._host_attrs = g2_attributes(self.g2_estimator)
        self.hello()

    # ------------------------------------------------------------------ commands
    def hello(self) -> None:
        """Tell the rig this host is here: it replays everything not yet acknowledged."""
        self.send(Hello(run_id="", seq=0, version=software_version()))

    def send(self, msg: Message) -> None:
        """Send a command to the rig: now on the I/O thread, through `post` from any other."""
        if threading.get_ident() == self._io_thread:
            self._transmit(msg)
        else:
            self.post(msg)

    def _transmit(self, msg: Message) -> bool:
        """(I/O thread) Send now without waiting; a command the rig cannot take now (not connected) is
        kept and sent again at the next step, oldest first; a hello, heartbeat or ack is dropped."""
        if self._unsent and isinstance(msg, (*KEPT_COMMANDS, Hello)):
            self._unsent.append(msg)  # behind the ones already waiting: the order is kept
            return False
        try:
            self.sock.send_multipart(encode(msg), flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            if isinstance(msg, KEPT_COMMANDS) or (isinstance(msg, Hello) and not any(isinstance(m, Hello)
                                                                                    for m in self._unsent)):
                self._unsent.append(msg)  # a hello once: the rig replays once per reconnection
            return False

    def post(self, msg: Message) -> None:
        """Send a command to the rig from any thread: queued, and sent by the I/O thread as soon as it
        wakes (within about a millisecond when it is waiting on the socket)."""
        self._outbox.put((msg, None))
        self._wake()

    def _reply(self, msg: Message, t_recv: float) -> None:
        """Send an answer to a message received at `t_recv` (monotonic s), timing the round trip: now
        on the I/O thread, through the outbox from any other."""
        if threading.get_ident() == self._io_thread:
            self._transmit(msg)
            self.stats.answer_latency_s.append(time.monotonic() - t_recv)
        else:
            self._outbox.put((msg, t_recv))
            self._wake()

    def command(self, cls: type[Message], run_id: str, **fields) -> None:
        """Send a command of kind `cls`, numbered by the host's own counter (any thread)."""
        with self._cmd_lock:
            self._cmd_seq += 1
            seq = self._cmd_seq
        self.send(cls(run_id=run_id, seq=seq, **fields))

    def start_run(self, run_id: str, kind: str, attrs: dict[str, object] | None = None) -> None:
        """Ask the rig to start a run; `attrs` (str, numbers, lists of str) are recorded in its file
        beside the host's own settings (the g2 estimator and model file)."""
        self.run_attributes[run_id] = dict(attrs or {})
        self.command(Start, run_id, run_kind=kind)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # full: the I/O thread has a wake-up waiting anyway; closed
            pass

    def _call_on_io(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the I/O thread (from a worker: a result to write, a run finished)."""
        self._on_io.put(fn)
        self._wake()

    # ------------------------------------------------------------------ the I/O loop
    def step(self, timeout_ms: int = 100) -> int:
        """Wait up to `timeout_ms` for frames or work from the workers; receive a batch (what is
        queued, up to `batch`), store it, flush, ack; hand the analysis to the workers; write what
        they returned; send posted commands. Returns the number of frames received."""
        self._io_thread = threading.get_ident()
        events = dict(self._poller.poll(timeout_ms)) if self._outbox.empty() and self._on_io.empty() else {}
        if self._wake_r in events or self._wake_r.fileno() in events:
            self._drain_wake()
        n = 0
        now = time.monotonic()
        if self.sock in events or self.sock.poll(0, zmq.POLLIN):
            if self.rig_silent:
                self.rig_silent = False
                log.info("rig %s back after %.1f s of silence", self.endpoint, now - self._last_heard)
            self._last_heard = self._last_spoke = now
            n = self._io_batch()
        else:
            silent = now - self._last_heard
            if silent > self.peer_timeout_s and not self.rig_silent:
                self.rig_silent = True
                waiting = [r for r, s in self.sessions.items() if s.phase is RunPhase.STREAMING]
                log.warning("rig %s silent for %.1f s%s", self.endpoint, silent,
                            f": runs {', '.join(waiting)} waiting for it" if waiting else "")
            if now - self._last_spoke > HELLO_AFTER_SILENCE_S:
                self.hello()  # a rig that restarted does not know this host until it speaks
                self._last_spoke = now
        if self._hello_at is not None and now >= self._hello_at:
            self._hello_at = None
            self.hello()
        if now - self._last_heartbeat_sent >= HEARTBEAT_S:
            self._last_heartbeat_sent = now
            self._transmit(Heartbeat(run_id="", seq=0, state="host", info=self.report()))
            self._malformed_log.tick()
            self._refusals_log.tick()
            self._storage_log.tick()
            self._retry_storage()
        self._run_on_io()
        self._send_posted()
        return n

    def report(self) -> dict:
        """What this host tells the rig of itself (shown by `nvscope status`)."""
        return {"daemon": "host", "pid": os.getpid(), "out": str(self.out_dir.resolve()), "stored": self.stats.stored,
                "duplicates": self.stats.duplicates, "malformed": self.stats.malformed,
                "runs": {r: s.phase.value for r, s in list(self.sessions.items())[-8:]},
                "rig_silent": self.rig_silent, "ack_latency_s": _median(self.stats.ack_latency_s)}

    def _io_batch(self) -> int:
        """Receive, store, flush, ack one batch; hand its pixels to the on-line g2 and its ended runs
        to their analysis; tell the observers."""
        b = self._receive()
        for session, end in b.ends:
            session.ended(end)
        for session in b.touched.values():
            if session.phase in (RunPhase.STREAMING, RunPhase.ENDING):  # the file is still the I/O thread's
                try:
                    session.store.flush()
                except Exception as exc:  # a full disk: nothing acknowledged, the rig keeps it all
                    self._storage_failed(session, exc)
        for run_id, session in b.touched.items():  # a run_end is acked once its results are written
            if run_id in self._store_errors:
                continue
            seq = session.store.last_seq
            if session.phase in (RunPhase.ENDING, RunPhase.ANALYSING):
                seq = session.end.seq - 1
            self.send(Ack(run_id=run_id, seq=seq))
            self.stats.ack_latency_s.append(time.monotonic() - b.first_recv[run_id])
        self._run_on_io()  # after the ack (it never waits for them): g2 rows estimated during the writes
        for run_id, arrived in b.arrived.items():
            self.sessions[run_id].pixels_stored(arrived)
        for session, _ in b.ends:
            self._analyse_when_ready(session)
        self._notify(b.stored)
        return b.n

    def _receive(self) -> _Batch:
        """Take what is queued (up to `batch` frames): answer partial pixels at once,
        store each new data message (not yet flushed), drop duplicates and malformed frames."""
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
                self._malformed_log.event(f"rig {self.endpoint}", str(exc))
                continue
            if isinstance(msg, Heartbeat):
                self.last_heartbeat = msg
                self._progress(msg)
            elif isinstance(msg, Refused):
                self._refused(msg)
            elif isinstance(msg, Status):
                pass  # answers a status_request of `nvscope status`, not of this host
            elif isinstance(msg, PartialPixel):
                self._answer(msg, t_recv)
            elif msg.durable:
                self._store(msg, t_recv, b)
            else:
                log.warning("ignored a %s message (not for the host)", msg.kind)
        return b

    def _store(self, msg: Message, t_recv: float, b: _Batch) -> None:
        """Add one data message to its run's file (a duplicate is counted and dropped). While the run's
        file cannot be written (a full disk) its messages are left to the rig, which keeps them."""
        if msg.run_id in self._store_errors:
            return
        resync = self._resync.get(msg.run_id)
        if resync is not None:  # after messages were dropped here: wait for the replay to bring the next one
            session = self.sessions[msg.run_id]
            if msg.seq > session.store.last_seq + 1 and time.monotonic() < resync:
                return
            del self._resync[msg.run_id]
        try:
            session = self._session_for(msg)
        except Exception as exc:  # the file cannot be created or reopened (a full disk, permissions)
            self._storage_log.event(f"run {msg.run_id}", f"cannot open its file in {self.out_dir}: "
                                                         f"{type(exc).__name__}: {exc}; the rig keeps its messages")
            return
        if session is None:
            return
        b.touched[msg.run_id] = session
        b.first_recv.setdefault(msg.run_id, t_recv)
        store = session.store
        if msg.seq <= store.last_seq or session.phase is not RunPhase.STREAMING:
            self.stats.duplicates += 1
            if session.phase is RunPhase.STREAMING:
                store.duplicates += 1  # written with the next flush
            if isinstance(msg, RunEnd) and session.phase is RunPhase.STREAMING:
                b.ends.append((session, msg))  # stored, but a host died before finishing the run
            return
        try:
            store.add(msg)
        except Exception as exc:  # a full disk: the row is not written, nothing of it is acknowledged
            self._storage_failed(session, exc)
            return
        if isinstance(msg, Pixel):
            session.pixel_arriving(msg, t_recv)  # its g2 is estimated while the batch is flushed
        b.stored.append(msg)
        self.stats.stored += 1
        if isinstance(msg, Pixel):
            b.arrived.setdefault(msg.run_id, []).append((msg, t_recv))
        if isinstance(msg, RunEnd):
            b.ends.append((session, msg))

    def _answer(self, partial: PartialPixel, t_recv: float) -> None:
        """Answer a partial pixel (adaptive dwell) from its run's on-line g2, now, before the rest of
        the batch is stored; nothing is stored."""
        known = partial.run_id in self.sessions or run_path(self.out_dir, partial.run_id).exists()
        session = self._session_for(partial) if known else None  # (re)opened: a restarted host answers too
        if session is not None:
            session.answer([partial], t_recv)

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

    def _session_for(self, msg: Message) -> RunSession | None:
        """The session of the message's run: created at run_start, reopened after a restart."""
        session = self.sessions.get(msg.run_id)
        if session is not None:
            return session
        path = run_path(self.out_dir, msg.run_id)
        attrs = {**self._host_attrs, **self.run_attributes.get(msg.run_id, {})}
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
        session = RunSession(msg.run_id, store, self.lanes, self.g2_estimator)
        self.sessions[msg.run_id] = session
        if msg.run_id not in self.run_attributes and not store.finished and not isinstance(msg, RunEnd):
            self.stats.adopted.append(msg.run_id)
            log.info("adopting run %s (%s) in progress: stored up to seq %d", msg.run_id, session.kind, store.last_seq)
            if self.on_adopt is not None:
                self.on_adopt(session)
        return session

    def _analyse_when_ready(self, session: RunSession) -> None:
        session.analyse_when_ready(self.analyses.get(session.kind), self._finished)

    def _finished(self, session: RunSession) -> None:
        """(I/O thread) A run's results and exit status are durable: acknowledge its run_end (one the rig sent)."""
        self.stats.finished.append((session.run_id, session.exit_status))
        if session.run_id not in self._lost:
            self.send(Ack(run_id=session.run_id, seq=session.end.seq))

    def end_lost_run(self, run_id: str, reason: str) -> None:
        """(I/O thread) End a run whose run_end will never come (the rig no longer knows it: restarted
        without its journal) as failed, saying why; analysed and finished like any run."""
        session = self.sessions.get(run_id)
        if session is None or session.phase is not RunPhase.STREAMING:
            return
        self._lost.add(run_id)
        log.error("run %s: %s; ending it as failed", run_id, reason)
        session.store.flush()
        session.ended(RunEnd(run_id=run_id, seq=session.store.last_seq + 1, exit_status="failed", reason=reason,
                             n_pixels=session.store.n_pixels))
        self._analyse_when_ready(session)

    def _run_on_io(self) -> None:
        """Run what the workers handed back (g2 estimates, runs finished), then write the g2 rows that
        are ready (one append and flush per run) and start the analysis of ended runs whose last g2
        rows are now written."""
        ran = False
        while True:
            try:
                fn = self._on_io.get_nowait()
            except queue.Empty:
                break
            try:
                fn()
            except Exception as exc:  # e.g. a full disk writing g2 rows: logged, the I/O path goes on
                log.error("%s failed on the I/O thread: %s: %s", getattr(fn, "__qualname__", fn),
                          type(exc).__name__, exc)
            ran = True
        if ran:
            for session in list(self.sessions.values()):
                if session.phase in (RunPhase.STREAMING, RunPhase.ENDING):
                    try:
                        session.write_g2()
                    except Exception as exc:  # e.g. a full disk: logged, the I/O path goes on
                        self._storage_log.event(f"run {session.run_id}", f"g2 rows not written: {_one_line(exc)}")
                if session.phase is RunPhase.ENDING:
                    self._analyse_when_ready(session)

    def _send_posted(self) -> None:
        while self._unsent:  # commands the rig could not take before: first, in order
            try:
                self.sock.send_multipart(encode(self._unsent[0]), flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            self._unsent.popleft()
        while True:
            try:
                msg, t_recv = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._transmit(msg)
            if t_recv is not None:
                self.stats.answer_latency_s.append(time.monotonic() - t_recv)

    def _storage_failed(self, session: RunSession, exc: Exception) -> None:
        """A run's file could not be written: stop storing (and acknowledging) its messages, which the
        rig keeps in its journal; `_retry_storage` tries again every second."""
        first = session.run_id not in self._store_errors
        self._store_errors[session.run_id] = time.monotonic()
        self._resync[session.run_id] = float("inf")  # until its file can be written again
        if first:
            self._storage_log.event(f"run {session.run_id}", f"cannot write {session.store.path}: "
                                    f"{_one_line(exc)}; stored up to seq {session.store.last_seq}, the rest stays in "
                                    "the rig's journal until this host can write again (retried every second)")

    def _retry_storage(self) -> None:
        """Try again to flush the runs whose file could not be written; once it works, acknowledge and
        ask the rig to replay what it kept (hello)."""
        now = time.monotonic()
        for run_id, since in list(self._store_errors.items()):
            if now - since < 1.0:
                continue
            session = self.sessions[run_id]
            try:
                session.store.flush()
            except Exception:
                self._store_errors[run_id] = now
                continue
            del self._store_errors[run_id]
            self._resync[run_id] = now + RESYNC_S  # live messages wait for the replay of the missing ones
            log.info("run %s: its file can be written again; stored up to seq %d, the rig replays the rest",
                     run_id, session.store.last_seq)
            self.send(Ack(run_id=run_id, seq=session.store.last_seq))
            self.hello()

    def _refused(self, msg: Refused) -> None:
        """The rig did not apply a command of this host's: say why, keep it for the CLI. Refused
        because another host controls the rig: say hello again in a second (it takes over once that
        host has been silent for the rig's peer timeout)."""
        self.stats.refused.append(msg)
        if msg.later and not msg.busy_run:
            if self._hello_at is None:
                self._refusals_log.event(f"rig {self.endpoint}", f"{msg.command}: {msg.reason}")
            self._hello_at = time.monotonic() + 1.0
            return
        log.error("rig refused %s of run %s: %s", msg.command, msg.run_id or "-", msg.reason)

    def _progress(self, hb: Heartbeat) -> None:
        """Log a run's progress from the rig's heartbeat, every `PROGRESS_EVERY_S`."""
        if hb.state != "running" or not hb.run_id:
            return
        now = time.monotonic()
        if now - self._last_progress_log.setdefault(hb.run_id, now) < PROGRESS_EVERY_S:  # (first heartbeat: now)
            return
        self._last_progress_log[hb.run_id] = now
        session = self.sessions.get(hb.run_id)
        elapsed = time.time() - float(session.store.f.attrs.get("created_unix_s", time.time())) if session else 0.0
        if hb.planned:
            left = elapsed * (hb.planned - hb.done) / hb.done if hb.done else float("nan")
            log.info("run %s (%s): %d of %d steps (%.0f %%), %.0f s elapsed, about %.0f s left", hb.run_id,
                     hb.run_kind, hb.done, hb.planned, 100 * hb.done / hb.planned, elapsed, left)
        else:
            log.info("run %s (%s): %d steps, %.0f s elapsed", hb.run_id, hb.run_kind, hb.done, elapsed)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ------------------------------------------------------------------ state and shutdown
    @property
    def busy(self) -> bool:
        """True while a worker has work, or the I/O thread has results of theirs to write."""
        return (self.lanes.fast.busy or self.lanes.context.busy or self.lanes.analysis.busy
                or not self._on_io.empty() or not self._outbox.empty())

    def settle(self, timeout_s: float = 30.0) -> bool:
        """Serve (on this thread, as the I/O thread) until the workers are idle and their results are
        written and sent; False if that takes longer than `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.busy or any(s.phase is RunPhase.ENDING for s in self.sessions.values()):
            if time.monotonic() > deadline:
                return False
            self.step(5)
        return True

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Finish the work in hand (per-pixel g2, run-end analyses: at most `wait_s` s), then close
        every file and the socket. An analysis still running then is abandoned: its run's file stays
        valid with every stored message, and the next host analyses the run when the rig replays its
        unacknowledged run_end."""
        if self._closed:
            return
        self._closed = True
        settled = self.settle(wait_s)
        if not settled:
            log.error("closing with analysis still running after %.0f s: abandoned (the files keep their data)",
                      wait_s)
        for rate_limited in (self._malformed_log, self._refusals_log, self._storage_log):
            rate_limited.flush()
        for session in self.sessions.values():  # first: an analysis abandoned now writes nothing
            session.close()
        self.processes.close(wait=settled)  # abandoned: its workers are stopped, their callers fail
        for lane in (self.lanes.fast, self.lanes.context, self.lanes.analysis):
            lane.close(0.5)
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()


def _median(values) -> float | None:
    """The median of recent latencies (s), None before the first."""
    v = list(values)
    return statistics.median(v) if v else None
