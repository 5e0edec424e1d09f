"""Histogram binning kernels against independent references: outer differences, a pure-Python TAC."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvscope.proto.histogram import FULL_RANGE_PS, HALF_RANGE_PS, N_BINS, bin_of_delay
from nvscope.rt.kernels.binning import MAX_DELAY_PS, HistogramBinner, histogram_tags, tag_histogram

W = HALF_RANGE_PS
HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Offsets that land exactly on the edges: of the delay range (B - A), of a TAC window (A - A),
# of a conversion's end and dead time (A - delayed B), for tac_dead in DEADS.
B_FROM_A = [-500_000, -250_001, -250_000, -249_999, -1, 0, 1, 249_999, 250_000, 250_001]
A_FROM_A = [0, 1, 499_999, 500_000, 500_001]
DEADS = [0, 1, 1_000, 22_000, 250_000]
A_FROM_STOP = [-1, 0, 1] + [d + k for d in DEADS[1:] for k in (-1, 0, 1)]
# B's delay minus A's (ps): none, small, and the largest the binners take, both signs.
DELAYS = [0, 1, -1, 37_000, -120_001, MAX_DELAY_PS, -MAX_DELAY_PS]


# --- references -------------------------------------------------------------------------------

def allpairs_reference(t_a, t_b):
    """All outer differences, binned by searching the integer bin edges (not by the division rule)."""
    tau = (np.asarray(t_b, np.int64)[None, :] - np.asarray(t_a, np.int64)[:, None]).ravel()
    tau = tau[(tau >= -W) & (tau < W)]
    edges = -W + (-(-np.arange(N_BINS + 1, dtype=np.int64) * FULL_RANGE_PS // N_BINS))  # ceil(k*500000/215)
    k = np.searchsorted(edges, tau, side="right") - 1
    return np.bincount(k, minlength=N_BINS).astype(np.int64)


def tac_reference(t_a, t_b, dead, delay=0, count_starts=False):
    """The TAC start by start: a free start takes the first delayed stop at or after it, if in its window.

    Stops are B's tags minus `delay`; with `count_starts`, returns (hist, starts accepted)."""
    stops = sorted(int(t) - delay + W for t in t_b)
    hist = [0] * N_BINS
    free_at = -math.inf
    accepted = 0
    for s in (int(t) for t in t_a):
        if s < free_at:
            continue  # busy: lost
        accepted += 1
        j = bisect.bisect_left(stops, s)
        if j < len(stops) and stops[j] < s + FULL_RANGE_PS:
            e = stops[j]
            hist[bin_of_delay(e - W - s)] += 1
            # Starts precede stops at equal times, so a start at the stop's own time is lost.
            free_at = e + dead if dead > 0 else e + 1
        else:
            free_at = s + FULL_RANGE_PS
    hist = np.array(hist, dtype=np.int64)
    return (hist, accepted) if count_starts else hist


def reference(t_a, t_b, mode, dead=0, delay=0):
    """(hist, starts accepted; -1 in allpairs) by the references, B's tags shifted by -delay."""
    if mode == "allpairs":
        return allpairs_reference(t_a, np.asarray(t_b, np.int64) - delay), -1
    return tac_reference(t_a, t_b, dead, delay, count_starts=True)


# --- strategies -------------------------------------------------------------------------------

@st.composite
def tag_streams(draw, max_tags=40):
    """Two sorted int64 streams, dense enough to keep a TAC busy, with many exact-boundary coincidences."""
    span = draw(st.sampled_from([2_000, 600_000, 3_000_000, 30_000_000]))
    a = draw(st.lists(st.integers(0, span), max_size=max_tags))
    b = draw(st.lists(st.integers(0, span), max_size=max_tags))
    if a:
        idx = st.integers(0, len(a) - 1)
        b += [a[i] + o for i, o in draw(st.lists(st.tuples(idx, st.sampled_from(B_FROM_A)), max_size=12))]
        a += [a[i] + o for i, o in draw(st.lists(st.tuples(idx, st.sampled_from(A_FROM_A)), max_size=8))]
    if b:
        idx = st.integers(0, len(b) - 1)
        a += [b[j] + W + o for j, o in draw(st.lists(st.tuples(idx, st.sampled_from(A_FROM_STOP)), max_size=8))]
    return np.sort(np.array(a, dtype=np.int64)), np.sort(np.array(b, dtype=np.int64))


@st.composite
def streams_and_cuts(draw):
    """A stream and the t_end of each chunk: random, at tags, at tags +- 250 ns, repeated (empty chunks)."""
    t_a, t_b = draw(tag_streams())
    tags = np.concatenate((t_a, t_b))
    last = int(tags.max()) + 1 if tags.size else 1
    first = int(tags.min()) if tags.size else 0
    cuts = draw(st.lists(st.integers(first - 1, last), max_size=12))
    if tags.size:
        near = st.sampled_from(tags.tolist()).flatmap(lambda t: st.sampled_from([t, t + 1, t - W, t + W, t - W + 1]))
        cuts += draw(st.lists(near, max_size=8))
    cuts = sorted(c for c in cuts if c <= last) + [last] * draw(st.integers(1, 2))
    return t_a, t_b, cuts


def chunks(t_a, t_b, cuts):
    prev_a = prev_b = 0
    for c in cuts:
        ia, ib = np.searchsorted(t_a, c), np.searchsorted(t_b, c)
        yield t_a[prev_a:ia], t_b[prev_b:ib], c
        prev_a, prev_b = ia, ib


def poisson_tags(rng, rate_hz, seconds):
    n = rng.poisson(rate_hz * seconds)
    return np.sort(rng.integers(0, int(seconds * 1e12), n)).astype(np.int64)


# --- allpairs ---------------------------------------------------------------------------------

def test_reference_edges_match_the_integer_rule():
    taus = np.arange(-W - 3, W + 3, 997).tolist() + [-W, -W + 1, W - 1, W, 0, -1]
    for tau in taus:
        expected = np.zeros(N_BINS, np.int64)
        if bin_of_delay(tau) >= 0:
            expected[bin_of_delay(tau)] = 1
        assert np.array_equal(allpairs_reference([0], [tau]), expected), tau


@pytest.mark.parametrize("mode", ["allpairs", "startstop"])
def test_every_delay_lands_in_the_bin_of_the_integer_rule(mode):
    """One pair per integer delay tau in [-250 001, 250 001], starts 1 us apart so no window overlaps."""
    tau = np.arange(-W - 1, W + 2, dtype=np.int64)
    t_a = np.arange(tau.size, dtype=np.int64) * 1_000_000
    hist, _, _ = histogram_tags(t_a, t_a + tau, mode)
    inside = tau[(tau >= -W) & (tau < W)]
    assert np.array_equal(hist, np.bincount(((inside + W) * N_BINS) // FULL_RANGE_PS, minlength=N_BINS))
    assert hist.sum() == FULL_RANGE_PS


def test_allpairs_boundaries_by_hand():
    hist, n_a, n_b = histogram_tags([0, 0], [-250_001, -250_000, -249_999, 0, 249_999, 250_000])
    assert (n_a, n_b) == (2, 6)
    assert hist[0] == 4 and hist[107] == 2 and hist[214] == 2 and hist.sum() == 8


@HYP
@given(tag_streams())
def test_allpairs_equals_outer_differences(streams):
    t_a, t_b = streams
    hist, n_a, n_b = histogram_tags(t_a, t_b)
    assert np.array_equal(hist, allpairs_reference(t_a, t_b))
    assert (n_a, n_b) == (t_a.size, t_b.size)


def test_allpairs_empty_channels():
    tags = np.array([0, 5, 250_000], np.int64)
    empty = np.zeros(0, np.int64)
    for t_a, t_b in [(empty, empty), (tags, empty), (empty, tags)]:
        hist, n_a, n_b = histogram_tags(t_a, t_b)
        assert hist.sum() == 0 and (n_a, n_b) == (t_a.size, t_b.size)


# --- startstop --------------------------------------------------------------------------------

@pytest.mark.parametrize("t_a, t_b, dead, expected", [
    ([0], [-250_000], 0, {-250_000: 1}),                      # stop at the start's own TAC time: counted
    ([0], [250_000], 0, {}),                                  # window end: not counted
    ([0], [-250_001, 249_999], 0, {249_999: 1}),              # stop before the start ignored
    ([0], [-100_000, -50_000], 0, {-100_000: 1}),             # first stop only
    ([0, 500_000], [250_100], 0, {-249_900: 1}),              # window expired: the start at s + 500 ns arms
    ([0, 499_999], [250_100], 0, {}),                         # ... one ps earlier it is lost
    ([0, 100_000], [-150_000, -149_950], 0, {-150_000: 1}),   # start at the ending stop's time: lost
    ([0, 100_001], [-150_000, -149_950], 0, {-150_000: 1, -249_951: 1}),
    ([0, 100_999, 101_000], [-150_000, -148_500], 1_000, {-150_000: 1, -249_500: 1}),  # dead time edge
    ([0, 0, 0], [-1_000, -1_000], 0, {-1_000: 1}),            # equal tags
])
def test_startstop_boundaries_by_hand(t_a, t_b, dead, expected):
    hist, _, _ = histogram_tags(np.array(t_a, np.int64), np.array(t_b, np.int64), "startstop", dead)
    want = np.zeros(N_BINS, np.int64)
    for tau, count in expected.items():
        want[bin_of_delay(tau)] += count
    assert np.array_equal(hist, want)
    assert np.array_equal(tac_reference(t_a, t_b, dead), want)


@HYP
@given(streams_and_cuts(), st.sampled_from(DEADS), st.sampled_from(DELAYS))
def test_startstop_streamed_equals_tac_reference(data, dead, delay):
    t_a, t_b, cuts = data
    binner = HistogramBinner("startstop", dead, delay)
    for a, b, t_end in chunks(t_a, t_b, cuts):
        binner.add(a, b, t_end)
        # every start of the reads so far has been through the TAC: the count is already final for them
        seen_b = t_b[t_b < t_end]
        assert binner.n_starts == tac_reference(t_a[t_a < t_end], seen_b[seen_b - delay + W < t_end], dead, delay,
                                                count_starts=True)[1]
    binner.finish()
    hist, accepted = tac_reference(t_a, t_b, dead, delay, count_starts=True)
    assert np.array_equal(binner.hist, hist)
    assert binner.n_starts == accepted >= hist.sum()
    assert (binner.n_a, binner.n_b) == (t_a.size, t_b.size)


@pytest.mark.parametrize("t_a, t_b, dead, accepted", [
    ([0, 100_000, 600_000], [], 0, 2),                       # no stop: the window expires at s + 500 ns
    ([0, 100_000, 500_000], [], 0, 2),                       # ... a start at exactly s + 500 ns arms
    ([0, 100_000, 499_999], [], 0, 1),
    ([0, 100_000], [-150_000], 0, 1),                        # start at the ending stop's TAC time: lost
    ([0, 100_001], [-150_000], 0, 2),
    ([0, 100_999, 101_000], [-150_000], 1_000, 2),           # dead time edge
    ([0, 0, 0, 1], [], 0, 1),                                # equal tags: only the first arms
])
def test_startstop_accepted_starts_by_hand(t_a, t_b, dead, accepted):
    h = tag_histogram(np.array(t_a, np.int64), np.array(t_b, np.int64), "startstop", dead)
    assert h.n_starts == accepted == tac_reference(t_a, t_b, dead, count_starts=True)[1]
    assert tag_histogram(np.array(t_a, np.int64), np.array(t_b, np.int64)).n_starts == -1  # allpairs: not counted


@pytest.mark.parametrize("mode", ["allpairs", "startstop"])
def test_delay_is_subtracted_from_b(mode):
    """A pair 40 ns apart on the wire with B's cable 40 ns longer lands at tau = 0; the range edges move with it."""
    t_a = np.arange(4, dtype=np.int64) * 10_000_000
    offsets = np.array([40_000, 40_000 - W, 40_000 + W - 1, 40_000 + W], np.int64)  # tau = 0, -W, W - 1, W
    h = tag_histogram(t_a, t_a + offsets, mode, 0, 40_000)
    want = np.zeros(N_BINS, np.int64)
    want[[bin_of_delay(0), 0, N_BINS - 1]] = 1
    assert np.array_equal(h.hist, want)
    assert np.array_equal(histogram_tags(t_a, t_a + offsets, mode, 0, 40_000)[0], want)
    assert not np.array_equal(histogram_tags(t_a, t_a + offsets, mode)[0], want)


# --- streaming --------------------------------------------------------------------------------

@HYP
@given(streams_and_cuts(), st.sampled_from(["allpairs", "startstop"]), st.sampled_from(DEADS),
       st.sampled_from(DELAYS))
def test_chunking_does_not_change_the_histogram(data, mode, dead, delay):
    t_a, t_b, cuts = data
    one_shot = tag_histogram(t_a, t_b, mode, dead, delay)
    binner = HistogramBinner(mode, dead, delay)
    for a, b, t_end in chunks(t_a, t_b, cuts):
        binner.add(a, b, t_end)
        if mode == "allpairs":  # complete after every add: all pairs of the tags seen so far
            seen_a, seen_b = t_a[t_a < t_end], t_b[t_b < t_end]
            assert np.array_equal(binner.hist, allpairs_reference(seen_a, seen_b - delay))
    binner.finish()
    binner.finish()  # idempotent
    assert np.array_equal(binner.hist, one_shot.hist)
    assert binner.n_starts == one_shot.n_starts
    hist, accepted = reference(t_a, t_b, mode, dead, delay)
    assert np.array_equal(one_shot.hist, hist)
    assert one_shot.n_starts == accepted


def test_reset_starts_a_new_pixel_and_keeps_the_old_histogram():
    rng = np.random.default_rng(1)
    t_a, t_b = poisson_tags(rng, 2e6, 0.01), poisson_tags(rng, 2e6, 0.01)
    for mode in ("allpairs", "startstop"):
        binner = HistogramBinner(mode)
        binner.add(t_a, t_b, 10**10)
        binner.finish()
        first = binner.hist
        with pytest.raises(RuntimeError, match="reset"):
            binner.add(t_a, t_b, 2 * 10**10)
        binner.reset()
        assert binner.hist.sum() == 0 and binner.n_a == binner.n_b == 0
        binner.add(t_a + 10**10, t_b + 10**10, 2 * 10**10)  # tags before the reset are forgotten
        binner.finish()
        assert np.array_equal(binner.hist, first) and first.sum() > 0
        assert (binner.n_a, binner.n_b) == (t_a.size, t_b.size)


def test_long_poisson_stream_in_realistic_chunks():
    rng = np.random.default_rng(2)
    t_a, t_b = poisson_tags(rng, 5e6, 0.02), poisson_tags(rng, 5e6, 0.02)
    cuts = list(range(10**8, 2 * 10**10 + 1, 10**9 - 12_345)) + [2 * 10**10]
    for mode, dead, delay in (("allpairs", 0, 0), ("startstop", 0, 0), ("allpairs", 0, -3_217),
                              ("startstop", 22_000, 81_000)):
        binner = HistogramBinner(mode, dead, delay)
        for a, b, t_end in chunks(t_a, t_b, cuts):
            binner.add(a, b, t_end)
        binner.finish()
        one_shot = tag_histogram(t_a, t_b, mode, dead, delay)
        assert np.array_equal(binner.hist, one_shot.hist)
        assert binner.n_starts == one_shot.n_starts
        if mode == "startstop":
            assert binner.n_starts == tac_reference(t_a, t_b, dead, delay, count_starts=True)[1]
            assert one_shot.hist.sum() < binner.n_starts < t_a.size  # 5e6/s: starts lost while armed
    assert np.array_equal(histogram_tags(t_a[:3000], t_b[:3000])[0], allpairs_reference(t_a[:3000], t_b[:3000]))


# --- the two modes on sparse, uncorrelated streams -----------------------------------------------

def tac_over_allpairs(rate_a, rate_b, dead_s=0.0):
    """Expected startstop/allpairs count ratio for independent Poisson streams (renewal argument).

    A TAC cycle: wait for a start (1/rate_a), then armed until the first stop or the window end
    (E min(X, T_w) = p / rate_b, p = 1 - exp(-rate_b T_w) the chance of a stop), then dead_s if a
    stop came. Startstop rate p / cycle; allpairs rate rate_a rate_b T_w.
    """
    t_w = FULL_RANGE_PS * 1e-12
    p = -math.expm1(-rate_b * t_w)
    return p / (1 / rate_a + p / rate_b + p * dead_s) / (rate_a * rate_b * t_w)


@pytest.mark.parametrize("rate, seconds", [(1e4, 300.0), (1e5, 20.0)])
def test_sparse_streams_modes_agree_as_the_tac_model_predicts(rate, seconds):
    rng = np.random.default_rng(3)
    t_a, t_b = poisson_tags(rng, rate, seconds), poisson_tags(rng, rate, seconds)
    n_all = histogram_tags(t_a, t_b, "allpairs")[0].sum()
    n_tac = histogram_tags(t_a, t_b, "startstop")[0].sum()
    predicted = tac_over_allpairs(rate, rate)
    assert n_all > 10_000
    assert abs(n_tac / n_all - predicted) < 4 * math.sqrt((1 - predicted) / n_all)
    if rate <= 1e4:  # the SRM paper's regime (1.2-61 pairs per 1 s histogram): within 1 %
        assert abs(n_tac / n_all - 1) < 0.01


# --- bad inputs -------------------------------------------------------------------------------

GOOD = np.array([1, 2, 3], np.int64)


@pytest.mark.parametrize("t_a, t_b, match", [
    (GOOD.astype(np.float64), GOOD, "t_a must be a 1-D int64 array"),
    (GOOD, GOOD.astype(np.int32), "t_b must be a 1-D int64 array"),
    (GOOD.reshape(1, 3), GOOD, "t_a must be a 1-D int64 array"),
    ([1.5, 2.5], GOOD, "t_a must be a 1-D int64 array"),
    (GOOD, np.array([1, 3, 2], np.int64), r"t_b is not sorted: t_b\[2\] = 2 < t_b\[1\] = 3"),
    (np.array([2**62], np.int64), GOOD, "outside"),
])
def test_histogram_tags_rejects_bad_tags(t_a, t_b, match):
    with pytest.raises(ValueError, match=match) as err:
        histogram_tags(t_a, t_b)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode, dead, delay", [("g2", 0, 0), ("allpairs", -1, 0), ("startstop", 1.5, 0),
                                               ("startstop", True, 0), ("startstop", 0, MAX_DELAY_PS + 1),
                                               ("allpairs", 0, -MAX_DELAY_PS - 1), ("allpairs", 0, 1.0)])
def test_bad_mode_dead_time_or_delay(mode, dead, delay):
    with pytest.raises(ValueError, match="mode|tac_dead_ps|delay_ps") as err:
        histogram_tags(GOOD, GOOD, mode, dead, delay)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mode|tac_dead_ps|delay_ps"):
        HistogramBinner(mode, dead, delay)


def test_add_rejects_tags_outside_the_chunk():
    binner = HistogramBinner("startstop")
    with pytest.raises(ValueError, match=r"t_a\[2\] = 3 ps is outside"):
        binner.add(GOOD, GOOD, 3)  # t_end is exclusive
    binner.add(GOOD, GOOD, 10)
    with pytest.raises(ValueError, match=r"t_b\[0\] = 9 ps is outside"):
        binner.add(GOOD + 10, np.array([9, 12], np.int64), 20)  # before the previous t_end
    with pytest.raises(ValueError, match="t_end = 9 ps is before"):
        binner.add(GOOD[:0], GOOD[:0], 9)
    with pytest.raises(ValueError, match="t_end must be an integer"):
        binner.add(GOOD + 10, GOOD + 10, 20.0)
    binner.add(GOOD + 10, GOOD + 10, 20)  # the failed calls changed nothing
    assert (binner.n_a, binner.n_b) == (6, 6)
