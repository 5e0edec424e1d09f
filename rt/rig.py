"""The rig daemon: serves the host's commands, runs scans, streams every result, ends cleanly."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from nvscope.proto.messages import (MeasureCoherence, Message, PartialG2, PartialPixel, RunEnd, RunStart, Start,
                                    Stop)
from nvscope.proto.version import software_version

from .config import RigConfig
from .link import RtLink
from .coherence import acquire_coherence
from .scan import RigDevices, srm_scan
from .state import RunState, StateError, transition

log = logging.getLogger(__name__)


def write_marker(path: Path, info: dict) -> None:
    """Replace the run-in-progress marker atomically: a rig killed while writing leaves the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


class Rig:
    """Runs one run at a time on the devices it was handed, as the host commands."""

    def __init__(self, cfg: RigConfig, devices: RigDevices, link: RtLink):
        self.cfg = cfg
        self.devices = devices
        self.link = link
        self.state = RunState.IDLE
        self.run_id = ""
        self.stop_reason = ""
        self.measurements: list[MeasureCoherence] = []
        self.inbox: deque[Message] = deque()  # commands not yet applied (a run starts mid-batch)
        self.shutdown = threading.Event()
        self.unanswered = 0  # pixels of this run whose g2 the host did not answer in time
        self._slow_pixel: tuple[str, int] | None = None  # the last pixel it was too slow for

    def _handle(self, commands: list[Message]) -> None:
        """Apply the host's commands; one that does not fit the state is refused, naming the state.

        A start runs the whole run from here; the commands queued behind it are applied by the
        run's own calls to this method, in order."""
        self.inbox.extend(commands)
        while self.inbox:
            cmd = self.inbox.popleft()
            try:
                if isinstance(cmd, Start):
                    self.state = transition(self.state, "start")
                    self._run(cmd)
                elif isinstance(cmd, Stop):
                    if cmd.run_id != self.run_id and self.state is not RunState.IDLE:
                        raise StateError(f"run {cmd.run_id} is not the running run {self.run_id}")
                    self.state = transition(self.state, "stop")
                    self.stop_reason = cmd.reason or "stopped by the host"
                elif isinstance(cmd, MeasureCoherence):
                    self.state = transition(self.state, "measure")
                    if cmd.run_id != self.run_id:
                        raise StateError(f"run {cmd.run_id} is not the running run {self.run_id}")
                    self.measurements.append(cmd)
                elif isinstance(cmd, PartialG2):
                    log.debug("ignored a late partial_g2 for pixel %d of run %s", cmd.index, cmd.run_id)
                else:
                    log.warning("ignored command %s (not for this rig)", cmd.kind)
            except StateError as exc:
                log.warning("refused %s for run %s: %s", cmd.kind, cmd.run_id, exc)

    def _keep_going(self) -> bool:
        self._handle(self.link.poll(0))
        self.link.heartbeat(self.run_id, self.state.value)
        if self.shutdown.is_set() and self.state is RunState.RUNNING:
            self.state = transition(self.state, "stop")
            self.stop_reason = "rig shut down (signal)"
        return self.state is RunState.RUNNING

    def _enough(self, partial: PartialPixel) -> bool:
        """Adaptive dwell: send the pixel so far to the host and wait (at most `reply_timeout_s`,
        serving other commands) for its g2 error; True to move on: the error is below the target,
        or the run is stopping. Without an answer the pixel goes on acquiring; once the host has
        been too slow for a pixel, its later slices are not waited for (answers that come are used)."""
        scan = self.cfg.scan
        if not self.link.send_now(partial):
            return self._stopping()  # no host to ask: acquire on
        patient = self._slow_pixel != (partial.run_id, partial.index)
        deadline = time.monotonic() + (scan.reply_timeout_s if patient else 0.0)
        while True:
            left = deadline - time.monotonic()
            reply = self._reply_to(partial, self.link.poll(max(0, math.ceil(left * 1000))))
            self.link.heartbeat(self.run_id, self.state.value)
            if self._stopping():
                return True
            if reply is not None:
                return reply.g2_std < scan.adaptive_g2_std  # a NaN error is not below the target
            if left <= 0:
                break
        if patient:
            self._slow_pixel = (partial.run_id, partial.index)
            self.unanswered += 1
            if self.unanswered == 1:
                log.warning("run %s: the host did not answer pixel %d's g2 within %.2f s; acquiring on "
                            "(said once per run)", self.run_id, partial.index, scan.reply_timeout_s)
        return False

    def _reply_to(self, partial: PartialPixel, messages: list[Message]) -> PartialG2 | None:
        """The host's latest answer for `partial`'s pixel among `messages` (to this slice or an
        earlier one: with fewer photons, its error is only larger); answers for other pixels are
        dropped; the other commands are applied."""
        reply, others = None, []
        for m in messages:
            if not isinstance(m, PartialG2):
                others.append(m)
            elif ((m.run_id, m.index) == (partial.run_id, partial.index) and m.dwell_s <= partial.dwell_s
                  and (reply is None or m.dwell_s > reply.dwell_s)):
                reply = m
        self._handle(others)
        return reply

    def _stopping(self) -> bool:
        """True when the run should end at this pixel (a stop, or the rig shutting down)."""
        return self.state is not RunState.RUNNING or self.shutdown.is_set()

    @property
    def _marker(self):
        """A file in the spool folder naming the run in progress, so a restarted rig can close it."""
        return self.link.spool.directory / "run_in_progress.json"

    def close_interrupted_run(self) -> None:
        """If the previous rig process died during a run, end that run as failed (after its replay)."""
        if not self._marker.exists():
            return
        try:
            info = json.loads(self._marker.read_text())
            info["run_id"], info["next_seq"]
        except (ValueError, KeyError, TypeError) as exc:  # written by an older rig, or damaged on disk
            log.error("cannot tell which run was interrupted (%s unreadable: %s); it stays 'running' in "
                      "the host's file", self._marker, exc)
            self._marker.unlink()
            return
        reason = "the rig process ended during the run; pixels up to the last one sent are kept"
        log.error("run %s was interrupted: ending it as failed", info["run_id"])
        seq = max(self.link.spool.last_seq(info["run_id"]) + 1, info["next_seq"])
        self.link.send(RunEnd(run_id=info["run_id"], seq=seq, exit_status="failed", reason=reason,
                              n_pixels=seq - 1), self._handle)
        self._marker.unlink()

    def _run(self, cmd: Start) -> None:
        """One run: run_start, the scan, run_end (always sent, with the exit status and reason)."""
        self.run_id, self.stop_reason, self.unanswered = cmd.run_id, "", 0
        scan = self.cfg.scan
        sent = {"next_seq": 0}

        def send(msg) -> None:
            self.link.send(msg, self._handle)
            sent["next_seq"] = msg.seq + 1
            write_marker(self._marker, {"run_id": cmd.run_id, **sent})

        send(RunStart(run_id=cmd.run_id, seq=0, run_kind=cmd.run_kind,
                      config={**dataclasses.asdict(self.cfg), "sim_truth": self.devices.truth},
                      version=software_version(),
                      seed=self.cfg.seed, n_pixels=scan.nx * scan.ny,
                      grid_shape=np.array([scan.ny, scan.nx])))
        status, reason, done, seq = "completed", "", 0, 1
        try:
            if cmd.run_kind == "srm":
                done, seq = srm_scan(cmd.run_id, scan, self.devices, 1, send, self._keep_going, self._enough)
            elif cmd.run_kind == "vqns":
                done, seq = self._coherence_session(cmd.run_id, send)
            else:
                raise ValueError(f"run kind {cmd.run_kind!r} is not supported by this rig")
            if self.state is RunState.STOPPING:
                status, reason = "stopped", self.stop_reason
        except Exception as exc:  # a device error ends the run, never silently
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            log.error("run %s failed: %s", cmd.run_id, reason)
        self.link.send(RunEnd(run_id=cmd.run_id, seq=seq, exit_status=status, reason=reason, n_pixels=done),
                       self._handle)
        self._marker.unlink(missing_ok=True)
        self.state = transition(self.state, "end")
        log.info("run %s %s (%d pixels)%s", cmd.run_id, status, done, f": {reason}" if reason else "")
        if self.unanswered:
            log.warning("run %s: %d pixels got no g2 answer from the host in time", cmd.run_id, self.unanswered)

    def _coherence_session(self, run_id: str, send) -> tuple[int, int]:
        """A VQNS run: measure each coherence curve the host asks for, until it says stop."""
        if self.devices.qubit is None:
            raise ValueError("this rig has no pulsed qubit readout for coherence curves")
        self.measurements.clear()
        seq, done = 1, 0
        while self._keep_going() or self.measurements:
            if not self.measurements:
                self._handle(self.link.poll(100))
                continue
            cmd = self.measurements.pop(0)
            if self.state is not RunState.RUNNING:
                log.warning("dropped measure_coherence CPMG-%d: the run is stopping", cmd.n_pulses)
                continue
            send(acquire_coherence(self.devices.qubit, run_id, seq, cmd.n_pulses, cmd.t,
                                   self.cfg.coherence.repetitions))
            seq, done = seq + 1, done + 1
        return done, seq

    def serve_forever(self) -> None:
        """Serve commands until `shutdown` is set; then wait briefly for the last acknowledgements."""
        self.close_interrupted_run()
        while not self.shutdown.is_set():
            self._handle(self.link.poll(100))
            self.link.heartbeat(self.run_id, self.state.value)
        for _ in range(20):  # up to ~2 s for the host to ack what is in flight; the rest stays spooled
            if not len(self.link.spool):
                break
            self.link.poll(100)
        if len(self.link.spool):
            log.warning("%d messages not acknowledged; kept in %s for replay",
                        len(self.link.spool), self.link.spool.directory)

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM end the rig cleanly (the current pixel finishes, run_end is sent)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.shutdown.set())
