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
from nvscope.proto.messages import Ack, Heartbeat, Hello, Message, RunEnd, RunStart
from nvscope.proto.version import software_version

from .store import RunStore, run_path

log = logging.getLogger(__name__)

HELLO_AFTER_SILENCE_S = 3.0
"""Say hello again when the rig has been silent this long (it heartbeats every second)."""

Analysis = Callable[[RunStore], tuple[dict, dict]]
"""Given a run's open store at run end: (result datasets, result attributes)."""


@dataclass
class HostStats:
    """What the daemon has seen: stored messages, duplicates dropped, malformed frames dropped."""

    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    orphans: int = 0
    finished: list[tuple[str, str]] = field(default_factory=list)  # (run_id, exit_status)


class HostDaemon:
    """Connects to a rig, stores every data message of every run, acks only what is stored."""

    def __init__(self, endpoint: str, out_dir: str | Path, analyses: dict[str, Analysis],
                 ctx: zmq.Context | None = None, batch: int = 512):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = host_socket(self.ctx, endpoint)
        self.out_dir = Path(out_dir)
        self.analyses = analyses
        self.batch = batch
        self.runs: dict[str, RunStore] = {}
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
        touched: dict[str, RunStore] = {}
        ends: list[tuple[RunStore, RunEnd]] = []
        stored: list[Message] = []
        n = 0
        while n < self.batch:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            try:
                msg = decode(frames)
            except ProtocolError as exc:
                self.stats.malformed += 1
                log.error("dropped a malformed message (%d so far): %s", self.stats.malformed, exc)
                continue
            if isinstance(msg, Heartbeat):
                self.last_heartbeat = msg
            elif msg.durable:
                store = self._store_for(msg)
                if store is None:
                    continue
                touched[msg.run_id] = store
                if msg.seq <= store.last_seq or store.finished:
                    self.stats.duplicates += 1
                    if isinstance(msg, RunEnd) and not store.finished:
                        ends.append((store, msg))  # stored, but a host died before finishing the run
                    continue
                store.add(msg)
                stored.append(msg)
                self.stats.stored += 1
                if isinstance(msg, RunEnd):
                    ends.append((store, msg))
            else:
                log.warning("ignored a %s message (not for the host)", msg.kind)
        for store in touched.values():
            if not store.finished:
                store.flush()
        for store, end in ends:
            self._finish(store, end)
        for run_id, store in touched.items():
            self.send(Ack(run_id=run_id, seq=store.last_seq))
        for msg in stored:
            for observer in self.observers:
                try:
                    observer(msg)
                except Exception as exc:  # a failing consumer must not stop the storing
                    log.error("run %s: %s failed on %s seq %d: %s: %s", msg.run_id,
                              getattr(observer, "__qualname__", observer), msg.kind, msg.seq,
                              type(exc).__name__, exc)
        return n

    def _store_for(self, msg: Message) -> RunStore | None:
        """The open store of the message's run: created at run_start, reopened after a restart."""
        store = self.runs.get(msg.run_id)
        if store is not None:
            return store
        path = run_path(self.out_dir, msg.run_id)
        if path.exists():
            store = RunStore.reopen(path)
            log.info("resuming run %s from %s (stored up to seq %d)", msg.run_id, path, store.last_seq)
        elif isinstance(msg, RunStart):
            store = RunStore.create(path, msg)
            log.info("run %s (%s) -> %s", msg.run_id, msg.run_kind, path)
        else:
            self.stats.orphans += 1
            if msg.run_id not in self._orphans_logged:
                self._orphans_logged.add(msg.run_id)
                log.error("message %s seq %d of run %s, whose run_start never arrived: not stored",
                          msg.kind, msg.seq, msg.run_id)
            return None
        self.runs[msg.run_id] = store
        return store

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
        self.stats.finished.append((end.run_id, end.exit_status))
        log.info("run %s %s: %s", end.run_id, end.exit_status, store.path)

    def close(self) -> None:
        """Close every file and the socket."""
        for store in self.runs.values():
            store.close()
        self.sock.close()
