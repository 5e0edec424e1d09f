"""A Swabian Instruments Time Tagger, through its Python API (`TimeTagger` module: createTimeTagger,
TimeTagStream), as an `rt.hal.TimeTagger` (docs/architecture.md section 6).

The module is imported when a tagger is opened (kind = "swabian" in [devices]), never otherwise. A
TimeTagStream on the two configured channels (A, B) is created by `start()`; each `read(duration_s)`
polls `getData()` until the tagger's clock (`tGetData`, ps) is `duration_s` past the end of the
previous read and returns what arrived, split by channel. Tags lost by the tagger (its overflow mode)
come as MissedEvents entries whose counts are summed into `TagBlock.overflows`.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from ..config import ConfigError
from ..hal import DeviceError, DeviceTimeout, TagBlock, TimeTaggerConstraints
from .visa import one_line

TIME_TAG, ERROR, OVERFLOW_BEGIN, OVERFLOW_END, MISSED_EVENTS = 0, 1, 2, 3, 4
"""The Time Tagger's event types (TimeTagger.TagType) in `getEventTypes()`."""


@dataclass(frozen=True)
class SwabianConfig:
    """`[devices]` tagger with kind = "swabian": the tagger's serial ("": the first found), its channels
    for detectors A and B, the most tags its stream buffers between two reads, how long past a read's
    duration the tagger's clock may lag before the read fails (s), and the longest read (s)."""

    serial: str = ""
    channels: tuple[int, int] = (1, 2)
    buffer_tags: int = 10_000_000
    timeout_s: float = 2.0
    max_read_s: float = 10.0

    def check(self, where: str) -> None:
        """Two distinct channels, a positive buffer and timeouts; ConfigError naming the field."""
        if len(self.channels) != 2 or self.channels[0] == self.channels[1]:
            raise ConfigError(f"{where}.channels: must be two distinct channels [A, B], got {list(self.channels)}")
        if self.buffer_tags < 1:
            raise ConfigError(f"{where}.buffer_tags: must be >= 1, got {self.buffer_tags}")
        for name in ("timeout_s", "max_read_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{where}.{name}: must be > 0 s, got {value!r}")


def import_api() -> ModuleType:
    """Swabian's Python API: `TimeTagger` (installer bindings) or `Swabian.TimeTagger` (the PyPI wheel)."""
    try:
        return importlib.import_module("TimeTagger")
    except ImportError:
        return importlib.import_module("Swabian.TimeTagger")


class SwabianTagger:
    """Two channels of a Swabian Time Tagger as a time-tag stream (tags in ps on the tagger's clock)."""

    def __init__(self, serial: str = "", channels: tuple[int, int] = (1, 2), name: str = "tagger",
                 buffer_tags: int = 10_000_000, timeout_s: float = 2.0, max_read_s: float = 10.0,
                 api: ModuleType | None = None):
        self.where = f"{name} (Swabian Time Tagger {serial or 'first found'})"
        self.channels = (int(channels[0]), int(channels[1]))
        self.timeout_s = float(timeout_s)
        self.constraints = TimeTaggerConstraints(resolution_ps=1, max_read_s=max_read_s, buffer_tags=buffer_tags)
        if api is None:
            try:
                api = import_api()
            except ImportError as exc:
                raise DeviceError(f"{self.where}: Swabian's TimeTagger Python API is not installed "
                                  f"(pip install Swabian-TimeTagger; {one_line(exc)})") from exc
        self.api = api
        self.tagger = self._call("createTimeTagger", lambda: api.createTimeTagger(serial))
        self.stream: Any = None
        self._t_prev = 0  # the end (ps) of the previous read
        self._t_seen = 0  # the tagger's clock (ps) up to which tags are in _pending
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._overflows = 0

    @classmethod
    def from_config(cls, cfg: SwabianConfig, name: str) -> SwabianTagger:
        """Open the tagger a `[devices]` table describes."""
        return cls(cfg.serial, cfg.channels, name, cfg.buffer_tags, cfg.timeout_s, cfg.max_read_s)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except DeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 (the API raises RuntimeError and others: one line)
            raise DeviceError(f"{self.where}: {what} failed ({one_line(exc)})") from exc

    def _take(self) -> Any:
        """Fetch what the stream holds; keep its tags of both channels and count the tags it lost."""
        buf = self._call("TimeTagStream.getData", self.stream.getData)
        ts = np.asarray(buf.getTimestamps(), dtype=np.int64)
        ch = np.asarray(buf.getChannels())
        if hasattr(buf, "getEventTypes"):
            types = np.asarray(buf.getEventTypes())
            missed = np.asarray(buf.getMissedEvents())
            self._overflows += int(missed[types == MISSED_EVENTS].sum())
            keep = types == TIME_TAG
            ts, ch = ts[keep], ch[keep]
        self._pending.append((ts[ch == self.channels[0]], ts[ch == self.channels[1]]))
        self._t_seen = max(self._t_seen, int(buf.tGetData))
        return buf

    def start(self) -> int:
        """Start streaming both channels; returns the tagger's clock (ps) from which the first read covers."""
        if self.stream is not None:
            self.stop()
        api = self.api
        self.stream = self._call("TimeTagStream", lambda: api.TimeTagStream(self.tagger, self.constraints.buffer_tags,
                                                                           list(self.channels)))
        self._pending, self._overflows, self._t_seen = [], 0, 0
        buf = self._take()  # the stream runs from its creation: its first buffer says since when (tStart)
        self._t_prev = int(buf.tStart)
        return self._t_prev

    def read(self, duration_s: float) -> TagBlock:
        """Wait until the tagger's clock is `duration_s` s past the previous read's end, then return every
        tag since (sorted, ps) and the tags lost; DeviceTimeout if the clock lags `timeout_s` behind."""
        if self.stream is None:
            raise DeviceError(f"{self.where}: read before start()")
        if not (math.isfinite(duration_s) and 0 <= duration_s <= self.constraints.max_read_s):
            raise DeviceError(f"{self.where}: a read of {duration_s!r} s is outside [0, "
                              f"{self.constraints.max_read_s:g}] s")
        target = self._t_prev + round(duration_s * 1e12)
        deadline = time.monotonic() + duration_s + self.timeout_s
        while self._t_seen < target:
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"{self.where}: its clock did not reach the end of a {duration_s:g} s read "
                                    f"within {self.timeout_s:g} s of it")
            time.sleep(min(max((target - self._t_seen) * 1e-12, 0.001), 0.05))
            self._take()
        t_a = np.concatenate([a for a, _ in self._pending]) if self._pending else np.empty(0, np.int64)
        t_b = np.concatenate([b for _, b in self._pending]) if self._pending else np.empty(0, np.int64)
        block = TagBlock(t_a, t_b, self._t_seen, self._overflows)
        self._pending, self._overflows, self._t_prev = [], 0, self._t_seen
        return block

    def stop(self) -> None:
        """Stop the stream (tags after this are not kept)."""
        stream, self.stream = self.stream, None
        self._pending = []
        if stream is not None:
            self._call("TimeTagStream.stop", stream.stop)

    def close(self) -> None:
        """Stop and release the tagger (idempotent)."""
        self.stop()
        tagger, self.tagger = self.tagger, None
        if tagger is not None:
            self._call("freeTimeTagger", lambda: self.api.freeTimeTagger(tagger))


__all__ = ["SwabianConfig", "SwabianTagger", "import_api", "TIME_TAG", "MISSED_EVENTS"]
