"""Daemon logging: one line per event to stderr and a rotating file; repeated errors counted, not repeated.

Both daemons (`nvscope rig`, `nvscope host`) call `setup_logging` once at start. A peer that sends
4,000 malformed frames costs one ERROR line and then one summary line per interval (`RateLimitedLog`),
so a fuzzer or a broken client cannot fill the disk or bury the lines that matter (docs/cli.md).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from typing import Callable

LOG_FILE_BYTES = 10 * 1024 * 1024
"""Size at which the log file is rotated (bytes)."""
LOG_FILE_BACKUPS = 5
"""Rotated files kept beside the current one (FILE.1 ... FILE.5)."""
MAX_PEERS_NAMED = 100
"""Distinct peers a RateLimitedLog tracks per summary (beyond this it says 'N+ peers')."""


class OneLineFormatter(logging.Formatter):
    """A logging formatter whose every record is one line: newlines (a traceback, a multi-line
    message) are folded into ' | '."""

    def format(self, record: logging.LogRecord) -> str:
        """The record formatted as by logging.Formatter, on one line."""
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


def setup_logging(daemon: str, log_file: str | None, verbose: bool) -> None:
    """Log one line per event to stderr and, when `log_file` is given, to that file rotated at 10 MB
    keeping 5 old ones; DEBUG when `verbose`, else INFO. Calling it again replaces what it set up."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_nvscope", False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = OneLineFormatter(f"%(asctime)s {daemon} %(name)s %(levelname)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"log file {log_file}: cannot open it ({exc.strerror or exc})") from None
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._nvscope = True  # type: ignore[attr-defined]  # ours: replaced by the next call
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class RateLimitedLog:
    """Logs the first of a kind of error event, then at most one summary line per `interval_s` (s):
    "N <what> from <peer> in the last 10 s (M in all); last: <detail>".

    Call `event` for each occurrence, `tick` from the daemon's loop (a summary is due once the
    interval has passed, even if no further event comes), `flush` at close. `count` is the total.
    One instance per kind of event (e.g. malformed frames); used from one thread.
    """

    def __init__(self, logger: logging.Logger, what: str, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        self.logger = logger
        self.what = what
        self.interval_s = interval_s
        self.count = 0
        """Events in all, logged or summarised."""
        self._clock = clock
        self._line_at: float | None = None  # when the last line was written (monotonic s)
        self._pending = 0  # events since that line, not yet in any line
        self._peers: dict[str, None] = {}  # peers of the pending events (insertion-ordered, capped)
        self._last_peer = ""
        self._last_detail = ""

    def event(self, peer: str, detail: str) -> None:
        """Count one event from `peer`; log it on its own if none was logged for an interval, else
        fold it into the next summary (written now if the interval has passed)."""
        self.count += 1
        now = self._clock()
        if self._line_at is None or (self._pending == 0 and now - self._line_at >= self.interval_s):
            self._line_at = now
            self.logger.error("%s from %s: %s (more are counted, summarised every %g s)",
                              self.what, peer, detail, self.interval_s)
            return
        self._pending += 1
        if len(self._peers) < MAX_PEERS_NAMED:
            self._peers[peer] = None
        self._last_peer, self._last_detail = peer, detail
        if now - self._line_at >= self.interval_s:
            self._summary(now)

    def tick(self) -> None:
        """Write the pending summary if the interval since the last line has passed (call it often)."""
        if self._pending and self._clock() - self._line_at >= self.interval_s:
            self._summary(self._clock())

    def flush(self) -> None:
        """Write the pending summary now, whatever the interval (at close)."""
        if self._pending:
            self._summary(self._clock())

    def _summary(self, now: float) -> None:
        n_peers = len(self._peers)
        if n_peers <= 1:
            peers = self._last_peer
        else:
            more = "+" if n_peers >= MAX_PEERS_NAMED else ""
            peers = f"{n_peers}{more} peers (last {self._last_peer})"
        self.logger.error("%d %s from %s in the last %.0f s (%d in all); last: %s", self._pending, self.what,
                          peers, max(now - self._line_at, 0.0), self.count, self._last_detail)
        self._line_at = now
        self._pending = 0
        self._peers.clear()
