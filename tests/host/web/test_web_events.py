"""The web view's event ring: monotone sequence numbers, resume with exactly the missed events, a
snapshot where they are no longer held; JSON without NaN."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from nvscope.host.web.events import EventRing, jsonable


def _ring(capacity: int = 5) -> tuple[EventRing, dict]:
    state = {"rows": []}
    ring = EventRing(capacity)
    ring.set_state(lambda: {"rows": list(state["rows"])})
    return ring, state


def _publish(ring: EventRing, state: dict, i: int) -> None:
    with ring.lock:
        state["rows"].append(i)
        ring.publish("pixels", {"first": i, "pl_cps": [float(i)]})


def test_sequence_numbers_are_monotone_and_are_the_sse_ids():
    ring, state = _ring(100)
    for i in range(20):
        _publish(ring, state, i)
    events = ring.since(0)
    assert [e.seq for e in events] == list(range(1, 21))
    text = events[3].sse()
    assert text.startswith("id: 4\nevent: pixels\ndata: ") and text.endswith("\n\n")
    assert json.loads(text.split("data: ", 1)[1]) == {"first": 3, "pl_cps": [3.0]}


def test_resume_since_gives_exactly_the_missed_deltas():
    ring, state = _ring(5)
    for i in range(8):
        _publish(ring, state, i)
    assert ring.oldest_seq == 4  # events 4..8 held
    missed = ring.resume(5)
    assert [e.seq for e in missed] == [6, 7, 8]
    assert [e.data["first"] for e in missed] == [5, 6, 7]
    assert ring.resume(3) and [e.seq for e in ring.resume(3)] == [4, 5, 6, 7, 8]  # the oldest held is next
    assert ring.resume(8) == []  # up to date


def test_a_since_older_than_the_ring_or_from_another_server_gives_a_snapshot():
    ring, state = _ring(5)
    for i in range(8):
        _publish(ring, state, i)
    for since in (None, 0, 2, 99, -1):  # new client, too old, another server's numbering
        first = ring.resume(since)
        assert len(first) == 1 and first[0].type == "snapshot", since
        snap = first[0]
        assert snap.seq == 8 and snap.data["seq"] == 8
        assert snap.data["rows"] == list(range(8))  # the state up to and including event 8


def test_a_waiting_stream_wakes_on_publish_from_another_thread():
    ring, state = _ring(5)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loop.call_later(0.05, lambda: asyncio.get_running_loop().run_in_executor(None, _publish, ring, state, 0))
        await ring.wait(0, timeout_s=5.0)
        return loop.time() - t0

    waited = asyncio.run(main())
    assert 0.04 < waited < 1.0 and ring.last_seq == 1


def test_json_has_no_nan_or_inf():
    data = jsonable({"a": np.array([1.0, np.nan, np.inf]), "b": np.float64("nan"), "c": np.arange(3),
                     "d": [np.array([[np.nan, 2.0]])], "e": b"x"})
    assert data == {"a": [1.0, None, None], "b": None, "c": [0, 1, 2], "d": [[[None, 2.0]]], "e": "x"}
    json.dumps(data, allow_nan=False)
