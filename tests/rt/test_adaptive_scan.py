"""The rt side of adaptive dwell: slices until the host says enough or the maximum dwell, the pixel's
real dwell in its message, partial pixels sent without being kept, and answers taken as they come,
never waited for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from nvscope.proto.messages import PartialG2, PartialPixel, Pixel
from nvscope.rt.config import LinkConfig, RigConfig, from_dict
from nvscope.rt.link import RtLink
from nvscope.rt.rig import Rig
from nvscope.rt.run_loop import AdaptiveDwell, SrmPlan
from nvscope.rt.devices import compose_devices
from nvscope.rt.spool import Spool
from nvscope.rt.state import RunState


def scan_with(enough_after: dict[int, float], lag: int = 0, hopeless: frozenset[int] = frozenset(),
              **scan) -> tuple[list[Pixel], list[PartialPixel]]:
    """A 3-pixel adaptive scan where the host answers pixel i's partial pixels with a predicted error
    below the target from `enough_after[i]` s of dwell on (before, above it but within reach of the
    maximum dwell: it would reach the target only then), and the pixels in `hopeless` with one that
    cannot reach it; its answers reach the rig `lag` slice boundaries after the partial pixel was sent
    (0: at once)."""
    cfg = from_dict(RigConfig, {"scan": {"nx": 3, "ny": 1, "slice_s": 0.04, "adaptive_g2_std": 0.1,
                                         "max_dwell_s": 0.3, **scan},
                                "sim": {"sample": {"emitters": [{"x": -0.6e-6, "y": -0.6e-6}]}}}, "rig")
    asked, in_flight = [], []

    def send(p: PartialPixel) -> bool:
        asked.append(p)
        target, max_dwell = cfg.scan.adaptive_g2_std, cfg.scan.max_dwell_s
        std = (0.05 if p.dwell_s >= enough_after.get(p.index, np.inf) - 1e-9 else
               0.99 * target * np.sqrt(max_dwell / p.dwell_s) if p.index not in hopeless else 1.0)
        in_flight.append([lag, PartialG2(run_id=p.run_id, seq=p.seq, index=p.index, dwell_s=p.dwell_s,
                                         g2=0.3, g2_std=std, predicted_std=std)])
        return True

    def serve(timeout_ms: int) -> bool:  # what the rig does between slices: apply what has arrived
        for item in list(in_flight):
            if item[0] == 0:
                adaptive.take(item[1])
                in_flight.remove(item)
            else:
                item[0] -= 1
        return False

    adaptive = AdaptiveDwell(cfg.scan.adaptive_g2_std, cfg.scan.reply_timeout_s, send, serve)
    plan = SrmPlan("run", cfg.scan, compose_devices(cfg, sim=True), adaptive)
    sent = []
    while not plan.done:
        sent.append(plan.step(len(sent) + 1))
    assert len(sent) == 3 and adaptive.unanswered == 0
    assert all(p.histogram_mode == cfg.scan.histogram_mode for p in [*sent, *asked])
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


def test_pixels_that_cannot_reach_the_target_are_given_up_and_the_run_tallied(caplog):
    caplog.set_level("INFO", logger="nvscope.rt.run_loop")
    sent, _ = scan_with({0: 0.08}, hopeless=frozenset({1}))
    assert [p.dwell_s for p in sent] == pytest.approx([0.08, 0.04, 0.3])
    assert "of 3 pixels, 1 reached the target, 1 were given up" in caplog.text
    assert "1 ran to their maximum dwell" in caplog.text


def test_pixels_carry_how_their_histogram_was_acquired():
    sent, asked = scan_with({0: 0.08}, histogram_mode="startstop", tac_dead_s=100e-9)
    for p in [*sent, *asked]:
        assert (p.histogram_mode, p.tac_dead_s) == ("startstop", pytest.approx(100e-9))
        assert p.n_starts >= p.n_events and p.n_starts > 0  # the converter's accepted starts
    sent, asked = scan_with({0: 0.08})
    assert {(p.histogram_mode, p.tac_dead_s, p.n_starts) for p in [*sent, *asked]} == {("allpairs", 0.0, -1)}


def test_answers_that_lag_end_the_pixel_later_and_a_host_two_slices_behind_is_waited_for():
    # the answer to a slice arrives during the next one: never waited for, the pixel ends one slice
    # after the slice that had enough; an answer to pixel 0 that arrives during pixel 1 is dropped
    sent, asked = scan_with({0: 0.08, 2: 0.04}, lag=1)
    assert [p.dwell_s for p in sent] == pytest.approx([0.12, 0.3, 0.08])
    # answers two slices late: the rig waits for the one before the slice just sent, so again the
    # pixel ends one slice after the slice that had enough
    sent, _ = scan_with({0: 0.04, 1: 0.28}, lag=2)
    assert [p.dwell_s for p in sent] == pytest.approx([0.08, 0.3, 0.3])


def test_adaptive_scan_needs_a_host_to_ask():
    cfg = from_dict(RigConfig, {"scan": {"adaptive_g2_std": 0.1, "max_dwell_s": 0.3}}, "rig")
    with pytest.raises(ValueError, match="adaptive dwell needs"):
        SrmPlan("run", cfg.scan, compose_devices(cfg, sim=True))


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
    """A link whose host says only what the test puts in `answers`; it records the poll timeouts."""

    def __init__(self, answers=()):
        self.sent, self.answers, self.timeouts_ms = [], list(answers), []

    def send_now(self, msg) -> bool:
        self.sent.append(msg)
        return True

    def poll(self, timeout_ms: int) -> list:
        self.timeouts_ms.append(timeout_ms)
        out, self.answers = self.answers, []
        return out

    def heartbeat(self, run_id: str, state: str, *progress) -> None:
        pass


def test_rig_takes_any_answer_for_this_pixel_and_waits_only_when_two_slices_ahead(caplog):
    cfg = from_dict(RigConfig, {"scan": {"adaptive_g2_std": 0.1, "max_dwell_s": 1.0, "reply_timeout_s": 0.05}}, "rig")
    answer = lambda index, dwell, std: PartialG2(run_id="r", seq=1, index=index, dwell_s=dwell, g2=0.3,  # noqa: E731
                                                 g2_std=std, predicted_std=std)
    partial = lambda index, dwell: PartialPixel(run_id="r", seq=1, index=index, dwell_s=dwell)  # noqa: E731
    link = QuietLink()
    now = [0.0]
    rig = Rig(cfg, devices=None, link=link)
    rig.state, rig.run_id = RunState.RUNNING, "r"

    def serve(timeout_ms: int) -> bool:  # the rig's, on a clock that a wait in vain moves on
        now[0] += timeout_ms / 1000 if not link.answers else 0.0
        return rig._serve(timeout_ms)

    rig.adaptive = dwell = AdaptiveDwell(0.1, 0.05, link.send_now, serve, clock=lambda: now[0])
    dwell.begin("r", 4)
    dwell.between_slices(partial(4, 0.1))  # no answer yet: one slice ahead is not waited for
    link.answers = [answer(3, 0.2, 0.01), answer(4, 0.3, 0.01), answer(4, 0.2, 0.2)]
    # pixel 3's answer and the one for a later slice are dropped; 0.2 is above the target: acquire on
    assert dwell.between_slices(partial(4, 0.2)) is False
    link.answers = [answer(4, 0.1, 0.05)]  # an answer to an earlier slice below the target counts
    assert dwell.between_slices(partial(4, 0.3)) is True
    dwell.end()
    assert set(link.timeouts_ms) == {0} and len(link.sent) == 3  # never waited for the host
    dwell.begin("r", 5)
    link.answers = [answer(4, 0.3, 0.01)]  # late, for the pixel before: dropped
    assert dwell.between_slices(partial(5, 0.1)) is False
    assert dwell.between_slices(partial(5, 0.2)) is False  # two ahead: waited the whole 0.05 s in vain
    assert link.timeouts_ms[-1] == 50 and now[0] == pytest.approx(0.05)
    assert dwell.unanswered == 1 and "did not answer pixel 5" in caplog.text
    assert dwell.between_slices(partial(5, 0.3)) is False and now[0] == pytest.approx(0.05)  # not again
    dwell.end()
    dwell.begin("r", 6)
    link.answers = [answer(6, 0.1, float("nan"))]  # a NaN error is not below the target
    assert dwell.between_slices(partial(6, 0.1)) is False
    dwell.end()
    rig._apply(answer(6, 0.1, 0.01))  # after the pixel ended: ignored
    assert not dwell.enough and dwell.unanswered == 1


def test_the_rig_decides_on_the_predicted_error_and_gives_up_on_pixels_that_cannot_reach_the_target(caplog):
    # target 0.1, at most 1 s per pixel: after 0.1 s a predicted error above 0.1 * sqrt(1 / 0.1) = 0.316
    # cannot reach the target within the maximum dwell (the error falls as 1 / sqrt(dwell))
    answer = lambda index, dwell, g2_std, predicted: PartialG2(  # noqa: E731
        run_id="r", seq=1, index=index, dwell_s=dwell, g2=0.3, g2_std=g2_std, predicted_std=predicted)
    partial = lambda index, dwell: PartialPixel(run_id="r", seq=1, index=index, dwell_s=dwell)  # noqa: E731
    arrived: list[PartialG2] = []
    dwell = AdaptiveDwell(0.1, 0.05, lambda p: True, lambda timeout_ms: any([dwell.take(a) for a in arrived]) and False)

    def pixel(index: int, answers: list[tuple[float, float]]) -> tuple[float, str]:
        """Run a pixel whose slices of 0.1 s get `answers` (g2_std, predicted_std) in turn; the dwell
        (s) after which it ends (1.0: its maximum) and why."""
        dwell.begin("r", index, 1.0)
        verdict, ended = "", 1.0
        for k, (g2_std, predicted) in enumerate(answers):
            arrived[:] = [answer(index, 0.1 * (k + 1), g2_std, predicted)]
            if dwell.between_slices(partial(index, 0.1 * (k + 1))):
                verdict, ended = dwell.verdict, 0.1 * (k + 1)
                break
        dwell.end()
        return pytest.approx(ended), verdict

    # the pixel's own estimated error below the target decides nothing: only the predicted one does
    assert pixel(0, [(0.01, 0.2), (0.01, 0.15), (0.2, 0.09)]) == (0.3, "reached")
    assert pixel(1, [(0.5, 0.33)]) == (0.1, "given up")  # 0.33 * sqrt(0.1) = 0.104 > 0.1
    assert pixel(2, [(0.5, 0.3), (0.5, 0.21), (0.5, 0.16)]) == (1.0, "")  # 0.095, 0.094, 0.088: in reach
    assert pixel(3, [(0.01, float("nan"))] * 9) == (1.0, "")  # no prediction: acquire on
    assert pixel(4, [(0.3, 0.2), (0.3, 0.25)]) == (0.2, "given up")  # 0.25 * sqrt(0.2) = 0.112
    assert (dwell.reached, dwell.given_up) == (1, 2)
    line = dwell.tally("r", 5)
    assert "of 5 pixels, 1 reached the target, 2 were given up" in line and "2 ran to their maximum" in line
