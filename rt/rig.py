"""The rig daemon: serves the host's commands, runs one run at a time, streams every result, ends cleanly.

Control flow, all of it in this file and in order:
- `serve_forever`, the idle loop, polls the command queue and applies each command against the
  state table (rt/state.py); a `start` that is accepted runs the run (`_run`) from there.
- `_run`, the run loop: `run_start`; then, until the run's plan (rt/run_loop.py) is done, apply the
  commands that have arrived (`_serve`) and take the plan's next step; `run_end` with the exit status.
  With adaptive dwell the commands are also applied between a pixel's slices, without waiting for a
  host that answers within a slice (rt/run_loop.py `AdaptiveDwell`).
Commands that arrive while a message waits for room in the spool are queued, not applied.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import deque

import numpy as np

from nvscope.proto.messages import MeasureCoherence, Message, Notice, PartialG2, RunEnd, RunStart, Start, Stop
from nvscope.proto.version import software_version

from .config import RigConfig
from .hal import RigDevices
from .link import RtLink
from .mri import MriPlan, mri_path
from .run_loop import AdaptiveDwell, CoherencePlan, Plan, SrmPlan
from .state import Event, ExitStatus, RunState, StateError, transition

log = logging.getLogger(__name__)

COMMAND_EVENTS: dict[type[Message], Event] = {Start: Event.START, Stop: Event.STOP, MeasureCoherence: Event.MEASURE}
"""The event each command of the host is, checked against the state table."""

SHUTDOWN_REASON = "rig shut down (signal)"


class Rig:
    """Runs one run at a time on the devices it was handed, as the host commands."""

    def __init__(self, cfg: RigConfig, devices: RigDevices, link: RtLink):
        self.cfg = cfg
        self.devices = devices
        self.link = link
        self.state = RunState.IDLE
        self.commands: deque[Message] = deque()
        """The command queue: the host's commands as they arrived, not yet applied."""
        self.shutdown = threading.Event()
        self.run_id = ""
        self.stop_reason = ""
        self.stop_completes = False  # the host's Stop said its plan is done: the run ends completed
        self.next_seq = 0  # of the run's next data message
        self.plan: Plan | None = None  # of the run in progress
        self.adaptive: AdaptiveDwell | None = None  # of the scan in progress, with adaptive dwell on
        self.run_kind = ""
        self.planned = 0  # steps of the run in progress (0: open-ended)
        self.done = 0  # steps taken
        self.notices: list[tuple[str, str, int]] = []
        """Instrument retries during the step being taken (device, line, retry), recorded after it."""
        self.started = time.time()
        link.describe = self.describe

    # ------------------------------------------------------------------ the idle loop
    def serve_forever(self) -> None:
        """Serve commands until `shutdown` is set; then wait briefly for the last acknowledgements."""
        self.close_interrupted_run()
        while not self.shutdown.is_set():
            self.commands.extend(self.link.poll(100))
            while self.commands and not self.shutdown.is_set():
                start = self._apply(self.commands.popleft())
                if start is not None:
                    self._run(start)  # the commands queued behind the start are applied by the run loop
            self._heartbeat()
        for _ in range(20):  # up to ~2 s for the host to ack what is in flight; the rest stays spooled
            if not len(self.link.spool):
                break
            self.link.poll(100)
        if len(self.link.spool):
            log.warning("%d messages not acknowledged; kept in %s for replay",
                        len(self.link.spool), self.link.spool.directory)

    def _apply(self, cmd: Message) -> Start | None:
        """Apply one command against the state table; returns a `start` it accepted (its run is the
        caller's to run). A command that does not fit is refused and logged with the state named."""
        if isinstance(cmd, PartialG2):
            if self.adaptive is None or not self.adaptive.take(cmd):
                log.debug("ignored a late partial_g2 for pixel %d of run %s", cmd.index, cmd.run_id)
            return None
        event = COMMAND_EVENTS.get(type(cmd))
        if event is None:
            self.link.refuse(cmd, f"{cmd.kind} is not a command of the rig")
            return None
        try:
            if event is not Event.START and self.state is not RunState.IDLE and cmd.run_id != self.run_id:
                raise StateError(f"run {cmd.run_id} is not the running run {self.run_id}")
            state = transition(self.state, event)
            if event is Event.MEASURE:
                self.plan.add(cmd)
        except StateError as exc:
            busy = self.state is not RunState.IDLE
            self.link.refuse(cmd, f"{exc}" + (f" (the rig is running {self.run_kind} run {self.run_id})" if busy else ""),
                             busy_run=self.run_id if busy else "", busy_kind=self.run_kind if busy else "")
            return None
        self.state = state
        if event is Event.STOP:
            self.stop_reason = cmd.reason or "stopped by the host"
            self.stop_completes = bool(cmd.completed)
        return cmd if event is Event.START else None

    # ------------------------------------------------------------------ the run loop
    def _run(self, start: Start) -> None:
        """One run: run_start; the plan's steps, the commands that arrived applied before each;
        run_end with the exit status and reason (always sent)."""
        self.run_id, self.run_kind, self.stop_reason, self.next_seq = start.run_id, start.run_kind, "", 0
        self.stop_completes = False
        n_pixels, grid = self._grid(start.run_kind)
        self.planned, self.done, self.notices = n_pixels, 0, []
        run_start = RunStart(run_id=start.run_id, seq=0, run_kind=start.run_kind,
                             config={**dataclasses.asdict(self.cfg), "sim_truth": self.devices.truth},
                             version=software_version(), seed=self.cfg.seed, n_pixels=n_pixels,
                             grid_shape=np.array(grid))
        self.link.spool.begin_run(start.run_id)  # a rig that dies during the run ends it when restarted
        self._send(run_start)
        self.link.run_start = run_start
        status, reason = ExitStatus.COMPLETED, ""
        try:
            self.plan = self._plan(start)
            while not self.plan.done:
                if self._serve(0 if self.plan.ready else 100):
                    break
                if self.plan.ready:
                    got = None
                    try:
                        got = self.plan.step(self.next_seq)
                    finally:
                        if got is None:
                            self._record_notices()  # the retries of a step that failed, before the run's end
                    for msg in (got,) if isinstance(got, Message) else got:  # an mri DEER pixel: lock, deer
                        self._send(msg)
                    self._record_notices()  # the retries of this step, after its data (numbered after it)
                    self.done += 1
            if self.state is RunState.STOPPING:  # the host's plan done (Stop.completed), or stopped
                status = ExitStatus.COMPLETED if self.stop_completes else ExitStatus.STOPPED
                reason = self.stop_reason
        except Exception as exc:  # a device error ends the run, never silently
            status = ExitStatus.FAILED
            reason = f"{type(exc).__name__}: {exc} (at step {self.done + 1} of {self.planned or 'open-ended'}; " \
                     f"{self.done} steps done and sent)"
            log.error("run %s failed: %s", start.run_id, reason)
        self.link.send(RunEnd(run_id=start.run_id, seq=self.next_seq, exit_status=status.value, reason=reason,
                              n_pixels=self.done), self._queue)
        self.link.run_start = None
        self.link.spool.end_run(start.run_id)
        self.state = transition(self.state, Event.END)
        self._report(status, reason, self.done)
        self.plan, self.adaptive = None, None

    def _grid(self, run_kind: str) -> tuple[int, tuple[int, int]]:
        """The run's planned pixels and grid shape (ny, nx): an srm raster; an mri run's tip positions
        (the retracted reference, the PSF and DEER planes, the sections) on its (ny, nx) lateral grid;
        a coherence run scans no grid."""
        if run_kind == "srm":
            return self.cfg.scan.ny * self.cfg.scan.nx, (self.cfg.scan.ny, self.cfg.scan.nx)
        if run_kind == "mri":
            return len(mri_path(self.cfg.mri)), (self.cfg.mri.ny, self.cfg.mri.nx)
        return 0, (0, 0)

    def _plan(self, start: Start) -> Plan:
        """The run's plan for its kind."""
        scan = self.cfg.scan
        if start.run_kind == "srm":
            if scan.adaptive:
                self.adaptive = AdaptiveDwell(scan.adaptive_g2_std, scan.reply_timeout_s, self.link.send_now,
                                              self._serve)
            return SrmPlan(start.run_id, scan, self.devices, self.adaptive)
        if start.run_kind == "vqns":
            return CoherencePlan(start.run_id, self.devices, self.cfg.coherence)
        if start.run_kind == "mri":
            return MriPlan(start.run_id, self.cfg.mri, self.devices, self.cfg.coherence.timing)
        raise ValueError(f"run kind {start.run_kind!r} is not supported by this rig")

    def _serve(self, timeout_ms: int) -> bool:
        """Apply every command that arrives within `timeout_ms` (a start is refused while running);
        a shutdown stops the run; heartbeat. True when the run is to stop at this step."""
        self.commands.extend(self.link.poll(timeout_ms))
        while self.commands:
            self._apply(self.commands.popleft())
        if self.shutdown.is_set() and self.state is RunState.RUNNING:
            self.state = transition(self.state, Event.STOP)
            self.stop_reason = SHUTDOWN_REASON
        self._heartbeat()
        return self.state is not RunState.RUNNING

    def _send(self, msg: Message) -> None:
        """Send a run's data message (kept until acknowledged) and record it in the marker."""
        self.link.send(msg, self._queue)
        self.next_seq = msg.seq + 1

    def _queue(self, commands: list[Message]) -> None:
        """While a message waits for room in the spool: queue what arrives (applied at the next
        step), and heartbeat (the host sees how many wait)."""
        self.commands.extend(commands)
        self._heartbeat()

    def _heartbeat(self) -> None:
        running = self.state is not RunState.IDLE
        self.link.heartbeat(self.run_id if running else "", self.state.value, self.run_kind if running else "",
                            self.done, self.planned)

    def report_retry(self, device: str, line: str, retry: int) -> None:
        """(a device call timed out and is retried) Record it in the run after the step."""
        self.notices.append((device, line, retry))

    def _record_notices(self) -> None:
        for device, line, retry in self.notices:
            self._send(Notice(run_id=self.run_id, seq=self.next_seq, source=device, text=line[:250], retry=retry))
        self.notices = []

    def describe(self) -> dict:
        """What the rig is doing, for `nvscope status` (the link adds its own part)."""
        running = self.state is not RunState.IDLE
        return {"daemon": "rig", "pid": os.getpid(), "version": software_version(), "state": self.state.value,
                "uptime_s": round(time.time() - self.started, 1),
                "run": {"run_id": self.run_id, "run_kind": self.run_kind, "done": self.done, "planned": self.planned,
                        "next_seq": self.next_seq} if running else None}

    def _report(self, status: ExitStatus, reason: str, done: int) -> None:
        """Log how the run ended, the steps it did not take, and pixels the host left unanswered."""
        log.info("run %s %s (%d steps)%s", self.run_id, status.value, done, f": {reason}" if reason else "")
        left = self.plan.drop() if self.plan is not None else []
        if left and status is not ExitStatus.COMPLETED:
            log.warning("run %s: %d planned steps not taken (the run %s)", self.run_id, len(left), status.value)
        if self.adaptive is not None and self.adaptive.unanswered:
            log.warning("run %s: the host left %d pixels more than a slice behind for over %.3g s", self.run_id,
                        self.adaptive.unanswered, self.adaptive.reply_timeout_s)

    # ------------------------------------------------------------------ start-up and shut-down
    def close_interrupted_run(self) -> None:
        """If the previous rig process died during a run (the journal has its begin and no end), end
        that run as failed, numbered after everything it put (which is replayed before it)."""
        interrupted = self.link.spool.interrupted_run()
        if interrupted is None:
            return
        run_id, seq = interrupted
        reason = (f"the rig process ended during the run; its messages up to seq {seq - 1} are kept (those not yet "
                  "acknowledged are replayed from the rig's journal)")
        log.error("run %s was interrupted: ending it as failed", run_id)
        self.link.send(RunEnd(run_id=run_id, seq=seq, exit_status=ExitStatus.FAILED.value, reason=reason,
                              n_pixels=max(seq - 1, 0)), self._queue)
        self.link.spool.end_run(run_id)

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM end the rig cleanly (the current pixel finishes, run_end is sent)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.shutdown.set())
