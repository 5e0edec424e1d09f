"""Follows every run file under the data folder on its own thread and publishes what is new as events."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from . import TAIL_INTERVAL_S
from .events import EventRing
from .runfiles import RunFile

log = logging.getLogger(__name__)

SNAPSHOT_RUNS = 3
"""A snapshot carries the rows of every running run and of this many newest others (the page asks
/api/runs/<run_id> for an older one when it is chosen)."""


class Tailer:
    """Every `interval_s` s: look for new `.h5` files (every `rescan_s` s) and read what the host added to
    the runs not yet ended; publish it into `ring` (the state and the events change together, under the
    ring's lock). Reads only: files are opened read-only, SWMR, without a lock (runfiles.open_swmr)."""

    def __init__(self, data_dir: Path, ring: EventRing, interval_s: float = TAIL_INTERVAL_S, rescan_s: float = 0.5):
        self.data_dir = Path(data_dir)
        self.ring = ring
        self.interval_s = interval_s
        self.rescan_s = rescan_s
        self.files: dict[Path, RunFile] = {}
        self.step_s = 0.0
        """How long the last step took (s)."""
        self._scanned = -1e18
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvscope-web-tailer", daemon=True)

    def start(self) -> None:
        """Start following the folder on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and let go of the files."""
        self._stop.set()
        self._thread.join(timeout=5)
        for rf in self.files.values():
            rf.close()

    def step(self) -> int:
        """One pass over the files; the number of events published."""
        t0 = time.monotonic()
        if t0 - self._scanned >= self.rescan_s:
            self._scanned = t0
            try:
                found = sorted(self.data_dir.glob("*.h5"))
            except OSError:
                found = []
            new = [path for path in found if path not in self.files]
            if new:
                with self.ring.lock:  # the request handlers read the file list under this lock
                    for path in new:
                        self.files[path] = RunFile(path)
        n = 0
        for rf in list(self.files.values()):
            if rf.done:
                continue
            with self.ring.lock:
                for type_, data in rf.poll():
                    self.ring.publish(type_, data)
                    n += 1
        self.step_s = time.monotonic() - t0
        return n

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 (the view keeps going; the file is retried)
                log.exception("tailing %s", self.data_dir)
            self._stop.wait(self.interval_s)

    # ------------------------------------------------------------------ state
    def runs(self) -> list[dict]:
        """Every run's summary, newest first (call under the ring's lock)."""
        now = time.time()
        return sorted((rf.summary(now) for rf in list(self.files.values())), key=lambda s: s["file"], reverse=True)

    def run_data(self, run_id: str) -> dict | None:
        """The rows and results read so far of run `run_id` (None if unknown)."""
        with self.ring.lock:
            rf = next((r for r in self.files.values() if r.run_id == run_id), None)
            return None if rf is None else {"run": rf.summary(), **rf.data.as_dict()}

    def state(self) -> dict:
        """The run list and the rows of the runs a page shows first (call under the ring's lock)."""
        runs = self.runs()
        readable = [s for s in runs if s["status"] not in ("unreadable", "opening")]
        shown = {s["run_id"] for s in readable if s["status"] == "running"}
        shown |= {s["run_id"] for s in readable[:SNAPSHOT_RUNS]}
        data = {rf.run_id: rf.data.as_dict() for rf in self.files.values() if rf.run_id in shown}
        return {"runs": runs, "data": data}
