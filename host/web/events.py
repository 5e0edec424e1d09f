"""The web view's event ring: numbered deltas, the state they build, resume from a sequence number."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Event:
    """One server-sent event: its sequence number (the SSE `id`), its type and its JSON payload."""

    seq: int
    type: str
    data: dict

    def sse(self) -> str:
        """The event in the text/event-stream format."""
        return f"id: {self.seq}\nevent: {self.type}\ndata: {to_json(self.data)}\n\n"


def jsonable(value: Any) -> Any:
    """`value` with numpy arrays and scalars as lists and numbers, NaN and +-inf as None (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            obj = value.astype(object)
            obj[~np.isfinite(value)] = None
            return jsonable(obj.tolist())
        if value.dtype.kind in "SO":
            return [jsonable(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(data: Any) -> str:
    """Compact JSON of `data` (already `jsonable`)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


class EventRing:
    """The last `capacity` events, numbered 1, 2, ... in the order they happened, with the state they
    build (a snapshot of it is sent where the missed events are no longer held). Thread-safe: the
    tailer and the health poller publish from their threads; the SSE handlers read from the event loop."""

    def __init__(self, capacity: int = 10000):
        if capacity < 1:
            raise ValueError(f"event ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.lock = threading.RLock()
        self.last_seq = 0
        self._events: deque[Event] = deque(maxlen=capacity)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._snapshot: Callable[[], dict] = dict

    def set_state(self, snapshot: Callable[[], dict]) -> None:
        """The function that returns the state the events have built so far (called under the lock)."""
        self._snapshot = snapshot

    def publish(self, type_: str, data: dict) -> Event:
        """Number and keep one event (call with the state already updated, under `lock` if it must be
        atomic with that update); wake the waiting streams."""
        with self.lock:
            self.last_seq += 1
            ev = Event(self.last_seq, type_, jsonable(data))
            self._events.append(ev)
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # that loop is closed: its stream is gone
                pass
        return ev

    @property
    def oldest_seq(self) -> int:
        """The sequence number of the oldest event still held (last_seq + 1 when none)."""
        with self.lock:
            return self._events[0].seq if self._events else self.last_seq + 1

    def since(self, seq: int) -> list[Event] | None:
        """Every event after `seq`, in order; None when some of them are no longer held (or `seq` is from
        another server's numbering, beyond the last): then the client needs a snapshot."""
        with self.lock:
            if seq > self.last_seq or seq < 0:
                return None
            if seq == self.last_seq:
                return []
            oldest = self._events[0].seq if self._events else self.last_seq + 1
            if seq + 1 < oldest:
                return None
            return list(self._events)[seq + 1 - oldest:]

    def snapshot(self) -> Event:
        """The whole state as one `snapshot` event whose id is the last event it includes."""
        with self.lock:
            return Event(self.last_seq, "snapshot", jsonable({**self._snapshot(), "seq": self.last_seq}))

    def resume(self, since: int | None) -> list[Event]:
        """What a client that last saw event `since` (None: a new client) is sent first: the missed
        events, or a snapshot when it is new or they are no longer held."""
        with self.lock:
            missed = None if since is None else self.since(since)
            return [self.snapshot()] if missed is None else missed

    async def wait(self, seq: int, timeout_s: float) -> None:
        """(event loop) Return once an event after `seq` exists or after `timeout_s` s."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self.lock:
            if self.last_seq > seq:
                return
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            with self.lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
