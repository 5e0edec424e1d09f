"""The daemons' health for the web view: the rig's status answer polled about once a second, judged
into a badge per source (ok / warn / down), with the disk space left under the data folder."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .events import EventRing

log = logging.getLogger(__name__)

BADGES = ("ok", "warn", "down")
"""Health badges, best first (their index is the `nvscope_health` metric's value)."""

HOST_HEARD_WARN_S = 3.0
"""warn: the rig has not heard its host for this long (s; the host heartbeats every second)."""
ACK_AGE_WARN_S = 5.0
"""warn: messages wait in the rig's journal and the last acknowledgement is this old (s)."""
JOURNAL_WARN_FILL = 0.5
"""warn: the rig's journal (messages not yet acknowledged) is this full; down when full."""
RECENT_S = 60.0
"""warn: malformed frames were counted within this many seconds."""
DISK_WARN_BYTES = 1 << 30
DISK_DOWN_BYTES = 100 << 20
"""Free space under the data folder that gives warn (1 GiB) and down (100 MiB)."""


@dataclass
class Badge:
    """One source's health: its badge, why, and its figures."""

    badge: str = "ok"
    reasons: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def worse(self, badge: str, reason: str) -> None:
        """Lower the badge to `badge` (if worse) and say why."""
        if BADGES.index(badge) > BADGES.index(self.badge):
            self.badge = badge
        self.reasons.append(reason)

    def as_dict(self) -> dict:
        """The badge, its reasons joined, and the figures, as /healthz shows one source."""
        return {"badge": self.badge, "reason": "; ".join(self.reasons), **self.figures}


@dataclass
class Counters:
    """When each cumulative count last grew (monotonic s), to warn on recent malformed frames."""

    values: dict[str, int] = field(default_factory=dict)
    grew_at: dict[str, float] = field(default_factory=dict)

    def recent(self, name: str, value: int | None, now: float) -> bool:
        """Record `value` of counter `name`; True if it grew within RECENT_S s."""
        if value is None:
            return False
        old = self.values.get(name)
        self.values[name] = value
        if old is not None and value > old:
            self.grew_at[name] = now
        return now - self.grew_at.get(name, -1e18) < RECENT_S


def judge(info: dict | None, disk: tuple[int, int] | None, counters: Counters, now: float,
          endpoint: str = "") -> dict:
    """The health of rig, host and disk from the rig's status answer `info` (None: no answer) and the
    data folder's (free, total) bytes; `status` is the worst badge."""
    rig, host, space = Badge(), Badge(), Badge()
    if info is None:
        rig.worse("down", f"no answer from the rig at {endpoint}")
        host.worse("down", "unknown: the rig does not answer")
    else:
        journal = info.get("journal") or {}
        ack = info.get("last_ack") or {}
        run = info.get("run") or {}
        unacked, capacity = int(journal.get("unacked", 0)), int(journal.get("capacity", 0) or 0)
        rig.figures = {"state": info.get("state"), "version": info.get("version"), "uptime_s": info.get("uptime_s"),
                       "run_id": run.get("run_id"), "run_done": run.get("done"), "run_planned": run.get("planned"),
                       "journal_unacked": unacked, "journal_capacity": capacity, "last_ack_age_s": ack.get("age_s"),
                       "malformed": info.get("malformed", 0), "refused": info.get("refused", 0),
                       "replays": info.get("replays", 0)}
        if capacity and unacked >= capacity:
            rig.worse("down", f"journal full ({unacked} of {capacity} unacknowledged)")
        elif capacity and unacked >= JOURNAL_WARN_FILL * capacity:
            rig.worse("warn", f"journal {unacked} of {capacity} unacknowledged")
        if counters.recent("rig_malformed", info.get("malformed"), now):
            rig.worse("warn", f"malformed frames received within {RECENT_S:g} s ({info.get('malformed')} in all)")
        h = info.get("host") or {}
        rep = h.get("reported") or {}
        host.figures = {"id": h.get("id"), "connected": h.get("connected"), "heard_s_ago": h.get("heard_s_ago"),
                        "silent": h.get("silent"), "stored": rep.get("stored"), "duplicates": rep.get("duplicates"),
                        "malformed": rep.get("malformed"), "ack_latency_s": rep.get("ack_latency_s"),
                        "out": rep.get("out")}
        heard = h.get("heard_s_ago")
        if not h.get("id"):
            host.worse("down", "no host has said hello to the rig")
        elif h.get("silent"):
            host.worse("down", f"host silent for {heard:.1f} s" if heard is not None else "host silent")
        else:
            if not h.get("connected"):
                host.worse("warn", "host not connected")
            if heard is not None and heard > HOST_HEARD_WARN_S:
                host.worse("warn", f"host last heard {heard:.1f} s ago")
        if unacked and ack.get("age_s") is not None and ack["age_s"] > ACK_AGE_WARN_S:
            host.worse("warn", f"{unacked} messages wait; last acknowledgement {ack['age_s']:.1f} s ago")
        if counters.recent("host_malformed", rep.get("malformed"), now):
            host.worse("warn", f"host dropped malformed frames within {RECENT_S:g} s ({rep.get('malformed')} in all)")
    if disk is None:
        space.worse("down", "data folder not found")
    else:
        free, total = disk
        space.figures = {"free_bytes": free, "total_bytes": total}
        if free < DISK_DOWN_BYTES:
            space.worse("down", f"{free / 2**20:.0f} MiB free")
        elif free < DISK_WARN_BYTES:
            space.worse("warn", f"{free / 2**30:.2f} GiB free")
    sources = {"rig": rig.as_dict(), "host": host.as_dict(), "disk": space.as_dict()}
    worst = max((s["badge"] for s in sources.values()), key=BADGES.index)
    return {"status": worst, "sources": sources, "checked_unix_s": time.time()}


def disk_space(path: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system holding `path`; None if it does not exist."""
    try:
        u = shutil.disk_usage(path)
    except OSError:
        return None
    return u.free, u.total


StatusSource = Callable[[], "dict | None"]
"""Returns the rig's status answer (None: no answer); `ask_status` bound to the endpoint in the app."""


class HealthPoller:
    """Asks `source` about once every `interval_s` s on its own thread (never in a request), judges the
    answer and publishes it as a `health` event; `latest` is the last judgement."""

    def __init__(self, source: StatusSource, data_dir: Path, ring: EventRing, endpoint: str = "",
                 interval_s: float = 1.0, on_update: Callable[[dict], None] | None = None):
        self.source, self.data_dir, self.ring, self.endpoint = source, Path(data_dir), ring, endpoint
        self.interval_s = interval_s
        self.on_update = on_update
        self.counters = Counters()
        self.latest: dict = judge(None, disk_space(self.data_dir), self.counters, time.monotonic(), endpoint)
        self.latest["status"] = "down"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvscope-web-health", daemon=True)

    def start(self) -> None:
        """Start polling on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def poll(self) -> dict:
        """Ask once, judge, publish; the judgement."""
        try:
            info = self.source()
        except Exception as exc:  # noqa: BLE001 (a bad answer is a rig that does not answer well)
            log.warning("status from %s: %s", self.endpoint, exc)
            info = None
        h = judge(info, disk_space(self.data_dir), self.counters, time.monotonic(), self.endpoint)
        with self.ring.lock:
            self.latest = h
            self.ring.publish("health", h)
        if self.on_update is not None:
            self.on_update(h)
        return h

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.poll()
            self._stop.wait(max(self.interval_s - (time.monotonic() - t0), 0.05))
