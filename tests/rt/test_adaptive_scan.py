"""The rt side of adaptive dwell: slices until the host says enough or the maximum dwell, the pixel's
real dwell in its message, partial pixels sent without being kept, and a slow host waited for once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from nvscope.proto.messages import PartialG2, PartialPixel, Pixel
from nvscope.rt.config import LinkConfig, RigConfig, from_dict
from nvscope.rt.link import RtLink
from nvscope.rt.rig import Rig
from nvscope.rt.scan import srm_scan
from nvscope.rt.sim_rig import sim_devices
from nvscope.rt.spool import Spool
from nvscope.rt.state import RunState


def scan_with(enough_after: dict[int, float], **scan) -> tuple[list[Pixel], list[PartialPixel]]:
    """A 3-pixel adaptive scan where pixel i is judged enough from `enough_after[i]` s of dwell on."""
    cfg = from_dict(RigConfig, {"scan": {"nx": 3, "ny": 1, "slice_s": 0.04, "adaptive_g2_std": 0.1,
                                         "max_dwell_s": 0.3, **scan},
                                "sim": {"sample": {"emitters": [{"x": -0.6e-6, "y": -0.6e-6}]}}}, "rig")
    sent, asked = [], []

    def enough(p: PartialPixel) -> bool:
        asked.append(p)
        return p.dwell_s >= enough_after.get(p.index, np.inf) - 1e-9

    done, seq = srm_scan("run", cfg.scan, sim_devices(cfg), 1, sent.append, lambda: True, enough)
    assert (done, seq) == (3, 4)
    return sent, asked


def test_pixel_ends_when_host_says_enough_or_at_max_dwell():
    sent, asked = scan_with({0: 0.08, 2: 0.04})
    assert [p.dwell_s for p in sent] == pytest.approx([0.08, 0.3, 0.04])
    by_pixel = {i: [p.dwell_s for p in asked if p.index == i] for i in range(3)}
    assert by_pixel[0] == pytest.approx([0.04, 0.08])
    assert by_pixel[1] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28])  # not asked after the cut last slice
    assert [p.seq for p in asked if p.index == 1] == [2] * 7  # the seq its pixel message gets
    last = asked[1]
    assert np.array_equal(last.hist, sent[0].hist) and (last.n_a, last.n_b) == (sent[0].n_a, sent[0].n_b)
    assert all(p.n_events == p.hist.sum() for p in asked)


def test_adaptive_scan_needs_a_host_to_ask():
    cfg = from_dict(RigConfig, {"scan": {"adaptive_g2_std": 0.1, "max_dwell_s": 0.3}}, "rig")
    with pytest.raises(ValueError, match="adaptive dwell needs"):
        srm_scan("run", cfg.scan, sim_devices(cfg), 1, print, lambda: True)


def test_partial_pixels_are_sent_without_being_kept(tmp_path):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        link = RtLink(sock, Spool(tmp_path, 10), LinkConfig())
        assert link.send_now(PartialPixel(run_id="r", seq=1)) is False  # no host yet: not waited for
        with pytest.raises(ValueError, match="durable"):
            link.send_now(Pixel(run_id="r", seq=1))
        assert len(link.spool) == 0
    finally:
        sock.close(linger=0)
        ctx.term()


class QuietLink:
    """A link with nothing to say: no host ever answers in time."""

    def __init__(self, answers=()):
        self.sent, self.answers = [], list(answers)

    def send_now(self, msg) -> bool:
        self.sent.append(msg)
        return True

    def poll(self, timeout_ms: int) -> list:
        out, self.answers = self.answers, []
        return out

    def heartbeat(self, run_id: str, state: str) -> None:
        pass


def test_rig_takes_the_latest_answer_for_this_pixel_and_waits_once_for_a_slow_host():
    cfg = from_dict(RigConfig, {"scan": {"adaptive_g2_std": 0.1, "max_dwell_s": 1.0, "reply_timeout_s": 0.05}}, "rig")
    answer = lambda index, dwell, std: PartialG2(run_id="r", seq=1, index=index, dwell_s=dwell, g2=0.3, g2_std=std)  # noqa: E731
    link = QuietLink([answer(3, 0.2, 0.01), answer(4, 0.3, 0.01), answer(4, 0.1, 0.05), answer(4, 0.2, 0.2)])
    rig = Rig(cfg, devices=None, link=link)
    rig.state, rig.run_id = RunState.RUNNING, "r"
    partial = lambda dwell: PartialPixel(run_id="r", seq=1, index=4, dwell_s=dwell)  # noqa: E731
    # for pixel 4 at 0.2 s: pixel 3's answer and the one for a later slice are ignored; of the
    # answers to slices up to 0.2 s the latest counts (0.2 > target: acquire on)
    assert rig._enough(partial(0.2)) is False
    t0 = time.monotonic()
    assert rig._enough(partial(0.3)) is False and time.monotonic() - t0 >= 0.05  # waited once, in vain
    t0 = time.monotonic()
    assert rig._enough(partial(0.4)) is False and time.monotonic() - t0 < 0.05  # not again for this pixel
    link.answers = [answer(4, 0.3, 0.05)]  # a late answer still counts
    assert rig._enough(partial(0.5)) is True
    assert rig.unanswered == 1 and len(link.sent) == 4


def test_a_damaged_run_marker_is_reported_and_removed_not_fatal(tmp_path, caplog):
    from types import SimpleNamespace

    from nvscope.rt.rig import write_marker

    cfg = from_dict(RigConfig, {}, "rig")
    link = SimpleNamespace(spool=SimpleNamespace(directory=tmp_path))
    rig = Rig(cfg, devices=None, link=link)
    marker = tmp_path / "run_in_progress.json"
    marker.write_text("")  # what a rig killed inside a non-atomic write used to leave
    rig.close_interrupted_run()
    assert not marker.exists() and "unreadable" in caplog.text
    write_marker(marker, {"run_id": "r", "next_seq": 3})
    assert json.loads(marker.read_text()) == {"run_id": "r", "next_seq": 3}
    assert not marker.with_suffix(".tmp").exists()
