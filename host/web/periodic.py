"""A background thread that calls one function at a fixed period (the view's tailer and health poller)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call `fn` every `interval_s` s on a daemon thread named `name` until `stop`; an exception is logged
    and the loop goes on (a bad file or answer must not end the view)."""

    def __init__(self, fn: Callable[[], object], interval_s: float, name: str):
        self.fn, self.interval_s = fn, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (after the call in progress)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.fn()
            except Exception:  # noqa: BLE001
                log.exception("%s", self._thread.name)
            self._stop.wait(max(self.interval_s - (time.monotonic() - t0), 0.005))
