"""Adaptive dwell replayed on simulated pixels: the host's answers slice by slice and where the rig's rule
ends each pixel (docs/physics.md section 1.11). The test of the rule's bias and `benchmarks/bench_g2.py`
run it (a test helper: it joins the host's pipeline and the rig's rule, which only tests and benchmarks
may import together); the rule before issue 12 (stop when the pixel's own estimated error is below the target) is kept
here only to measure the bias it had.
"""

from __future__ import annotations

import numpy as np

from nvscope.models.g2.mle import MleEstimator
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS
from nvscope.proto.messages import PartialG2, PartialPixel
from nvscope.rt.run_loop import AdaptiveDwell

from nvscope.host.srm.run_g2 import RunG2Pipeline


def replay_answers(g0: float, rate_cps: np.ndarray, seed: int, slice_s: float, n_slices: int) -> list[list[PartialG2]]:
    """The host's answers [slice][pixel] (`RunG2Pipeline` with the Poisson MLE) to pixels of true g2(0) `g0`
    and singles rate `rate_cps` (1/s) per detector, growing slice by slice (`slice_s` s each): all-pairs
    Poisson histograms of the NV shape, independent Poisson singles."""
    rng = np.random.default_rng(seed)
    P = len(rate_cps)
    base = rate_cps**2 * BIN_WIDTH_S * slice_s  # counts per bin of uncorrelated light per slice
    hist = np.cumsum(rng.poisson(expected_histogram(NV_DEFAULT_SHAPE, g0, base), size=(n_slices, P, N_BINS)), axis=0)
    singles = np.cumsum(rng.poisson(rate_cps * slice_s, size=(n_slices, 2, P)), axis=0)
    pipeline = RunG2Pipeline(MleEstimator())
    return [pipeline.answer([PartialPixel(run_id="r", seq=1, index=i, dwell_s=(j + 1) * slice_s,
                                          n_a=int(singles[j, 0, i]), n_b=int(singles[j, 1, i]),
                                          n_events=int(hist[j, i].sum()), hist=hist[j, i]) for i in range(P)])
            for j in range(n_slices)]


def rig_stops(answers: list[list[PartialG2]], target: float, max_dwell_s: float) -> tuple[np.ndarray, list[str]]:
    """The slice (0-based) at which the rig's rule (`rt.run_loop.AdaptiveDwell`) ends each pixel (the last:
    its maximum dwell), each answer arriving within its slice, and why (`AdaptiveDwell.verdict`)."""
    n_slices, P = len(answers), len(answers[0])
    stop, verdicts = np.full(P, n_slices - 1), [""] * P
    arrived: list[PartialG2] = []
    dwell = AdaptiveDwell(target, 0.5, lambda partial: True, lambda timeout_ms: (dwell.take(arrived[-1]), False)[1])
    for i in range(P):
        dwell.begin("r", i, max_dwell_s)
        for j in range(n_slices - 1):
            arrived.append(answers[j][i])
            if dwell.between_slices(PartialPixel(run_id="r", seq=1, index=i, dwell_s=answers[j][i].dwell_s)):
                stop[i], verdicts[i] = j, dwell.verdict
                break
        dwell.end()
    return stop, verdicts


def estimated_error_stops(answers: list[list[PartialG2]], target: float) -> np.ndarray:
    """Where the rule before issue 12 ended each pixel: the first slice whose estimated g2(0) error is below
    the target (else the last). It biases g2(0) low; kept to measure that."""
    below = np.array([[a.g2_std < target for a in row] for row in answers])
    below[-1] = True
    return np.argmax(below, axis=0)


def estimates_at(answers: list[list[PartialG2]], stop: np.ndarray) -> np.ndarray:
    """Each pixel's g2(0) estimate at its stopping slice."""
    return np.array([answers[j][i].g2 for i, j in enumerate(stop)])


__all__ = ["replay_answers", "rig_stops", "estimated_error_stops", "estimates_at"]
