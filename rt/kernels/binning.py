"""Real-time binning of two-channel photon time tags into the 215-bin delay histogram.

docs/physics.md, photon correlations. Tags are int64 picoseconds on one continuous clock, sorted
per channel; channel A (detector A) gives starts, channel B stops, a pair's delay is tau = t_B - t_A, and a
pair with -250 000 <= tau < 250 000 ps goes to bin k = ((tau + 250_000) * 215) // 500_000.

Detector delays: with `delay_ps` = d (the cable and electronic delay of B minus that of A), B's
tags are taken as t_B - d before anything else, so a pair's delay is tau = t_B - d - t_A; every
rule below applies to these shifted stops. |d| <= 250 000 ps (the TAC's half window; the rig's
per-channel delays are below 100 ns each).

Two acquisition modes:

``allpairs``
    Every (A, B) pair with -250 000 <= tau < 250 000 ps is counted (half-open: tau = -250 000
    is in bin 0, tau = +250 000 is not counted); equal tags pair with tau = 0. A two-pointer
    sweep, O(N_A + N_B + pairs).

``startstop``
    A time-to-amplitude converter (TAC). B's signal is delayed by W = 250 000 ps, so a stop
    arrives at the TAC at e = t_B + W and a start at s = t_A. Events are taken in order of this
    TAC time; at equal TAC times all starts come before all stops. The converter is *armed* by
    a start it accepts; its window is [s, s + 500 000). Rules, in that order:

    * a start at time t is accepted iff the converter is free at t: not armed and
      t >= end of the dead time, or armed with a window that has expired (t >= s + 500 000);
      otherwise it is lost (it does not re-arm or extend anything);
    * the first stop with s <= e < s + 500 000 ends the conversion: the pair is binned at its
      true delay tau = e - W - s = t_B - t_A (so tau = -250 000 is counted, tau = +250 000 is
      not) and the converter is dead on [e, e + tac_dead_ps);
    * an armed converter that sees no stop in its window is busy on [s, s + 500 000) and free
      at exactly s + 500 000 (no dead time is added after a window that saw no stop);
    * stops while not armed are ignored.

    Boundary consequences: a start at exactly s + 500 000 or exactly e + tac_dead_ps is
    accepted; a start at the same TAC time as the stop that ends the previous conversion is
    lost, even with tac_dead_ps = 0 (starts come first, and the converter is still armed);
    of several starts with equal tags only the first can arm; of several stops with equal
    tags only the first is used.

    The starts the converter accepted (those that armed it) are counted: `n_starts`, the
    normalization of a start-stop histogram needs them (docs/physics.md section 1).

    For independent Poisson streams of rates r_A, r_B (per s) and T_w = 500 ns, tac_dead 0,
    startstop counts p / (T_w (r_B + r_A p)) times the allpairs count, p = 1 - exp(-r_B T_w)
    (a renewal argument: starts lost while armed, later stops unseen): 0.993 at 1e4/s per
    channel (the SRM paper's 1-61 pairs/s), 0.930 at 1e5/s per channel.

Streaming: `HistogramBinner` is fed chunks; chunk k covers clock time [t_end(k-1), t_end(k)) on
both channels. The final histogram after `finish()` equals `histogram_tags` on the
concatenated tags, however the stream was cut. Carried between chunks: the tags of the last
250 ns (allpairs: both channels; startstop: the stops whose TAC time e = t_B - d + W >= t_end, which
a start of the next chunk may still precede) and, for startstop, the TAC state (4 int64). With a
delay d the stops of a chunk cover [t_end(k-1) - d, t_end(k) - d): the allpairs carry keeps the
starts a later stop may still reach (t_A > t_end - d - W) and the stops a later start may reach
(t_B - d >= t_end - W); in startstop, |d| <= W keeps every later stop's TAC time at or after
t_end, so the starts of a chunk can all be run through the TAC at its end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nvscope.proto.histogram import FULL_RANGE_PS, HALF_RANGE_PS, HISTOGRAM_MODES as MODES, N_BINS

TAG_LIMIT_PS: int = 2**62
"""Tags must lie in [-TAG_LIMIT_PS, TAG_LIMIT_PS) ps (about +-53 days) so that t +- 500 ns cannot overflow."""

MAX_DELAY_PS: int = HALF_RANGE_PS
"""The largest |delay_ps| (B's delay minus A's, ps) the binners take."""

_W = HALF_RANGE_PS
_FULL = FULL_RANGE_PS
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max
_EMPTY = np.zeros(0, np.int64)

# TAC state vector: [armed (0/1), start time s of the armed window (ps), free_at (ps), starts accepted].
_ARMED, _START, _FREE_AT, _N_STARTS = 0, 1, 2, 3


@njit(cache=True)
def _check_tags(t, lo, hi):
    """0 if t is sorted and every tag is in [lo, hi); else 1 + the index of the first bad tag."""
    n = t.shape[0]
    if n == 0:
        return 0
    if t[0] < lo:
        return 1
    n_unsorted = 0
    for i in range(1, n):  # a branch-free count vectorizes; the search below runs only on bad input
        n_unsorted += t[i] < t[i - 1]
    if n_unsorted:
        for i in range(1, n):
            if t[i] < t[i - 1]:
                return 1 + i
    if t[n - 1] >= hi:
        return n
    return 0


# k = ((tau + W) * 215) // 500_000 = (43 x) // 100_000 for x = tau + W in [0, 500_000), computed as
# (x * 43 * M) >> 42 with M = ceil(2**42 / 100_000): the rounding up adds less than 43 x * 0.89 / 2**42
# < 5e-6 to 43 x / 100_000, whose fractional part is never above 1 - 1e-5, so the floor is exact
# (checked for every x by the tests). A multiply and a shift instead of a signed floor division.
_BIN_MAGIC = 43 * 43_980_466
_BIN_SHIFT = 42
_PAD = 4
"""Pairs are binned 4 at a time; lanes past the last pair go to 4 scratch bins after the 215."""


@njit(inline="always")
def _bin(x):
    return (x * _BIN_MAGIC) >> _BIN_SHIFT


@njit(inline="always")
def _first_at_or_above(t, p, v):
    """Smallest q >= p with t[q] >= v, or len(t); t sorted and t[p-1] < v. Counts 4 tags per step."""
    n = t.shape[0]
    while p + 4 <= n:
        c = (t[p] < v) + (t[p + 1] < v) + (t[p + 2] < v) + (t[p + 3] < v)
        p += c
        if c < 4:
            return p
    while p < n and t[p] < v:
        p += 1
    return p


@njit(cache=True)
def _pairs(t_a, t_b, h):
    """Add the pairs of sorted t_a x t_b with tau in [-W, W) to the padded histogram h (215 + 4 bins).

    Two monotone pointers per start: lo = first B with t_B >= t_A - W, hi = first B with
    t_B >= t_A + W; both advance by counting 4 tags at a time (few unpredictable branches), and
    up to 4 pairs are binned without a data-dependent loop. O(N_A + N_B + pairs).
    """
    n_a = t_a.shape[0]
    n_b = t_b.shape[0]
    lo = 0
    hi = 0
    for i in range(n_a):
        first = t_a[i] - _W
        lo = _first_at_or_above(t_b, lo, first)
        if lo == n_b:
            break  # no B tag left for this or any later start
        hi = _first_at_or_above(t_b, hi, first + _FULL)
        count = hi - lo
        if count == 0:
            continue
        if count <= _PAD and lo + _PAD <= n_b:
            for k in range(_PAD):
                # tau + W = t_b - first, in [0, 500 000) for the lanes k < count.
                h[_bin(t_b[lo + k] - first) if k < count else N_BINS + k] += 1
        else:
            for j in range(lo, hi):
                h[_bin(t_b[j] - first)] += 1


@njit(cache=True)
def bin_allpairs(t_a, t_b, hist):
    """Add every pair with -250 000 <= t_b[j] - t_a[i] < 250 000 ps to `hist` (int64[215]).

    t_a, t_b: sorted int64 ps tags (not checked here). O(len(t_a) + len(t_b) + pairs).
    """
    h = np.zeros(N_BINS + _PAD, np.int64)
    _pairs(t_a, t_b, h)
    hist += h[:N_BINS]


@njit(cache=True)
def _tail(old, new, cut):
    """The tags >= cut of `old` followed by those of `new` (sorted, old before new), as a new array."""
    i = np.searchsorted(old, cut)
    j = np.searchsorted(new, cut)
    out = np.empty(old.shape[0] - i + new.shape[0] - j, np.int64)
    out[: old.shape[0] - i] = old[i:]
    out[old.shape[0] - i:] = new[j:]
    return out


@njit(cache=True)
def _shifted(t, delay):
    """t - delay (t itself when delay is 0): the stops on A's clock."""
    if delay == 0:
        return t
    return t - delay


@njit(cache=True)
def _add_allpairs(carry_a, t_a, carry_b, t_b, lo, t_end, delay, hist):
    """One chunk in allpairs mode: check, bin the pairs with at least one new tag, return the new carry.

    t_b: B's raw tags (checked in [lo, t_end)); the carry of B is kept shifted (t_B - delay).
    Returns (bad_a, bad_b, carry_a, carry_b); bad_x = 1 + index of the first bad tag (0: good),
    and nothing is binned unless both are 0. The carry x carry pairs were counted before.
    """
    bad_a = _check_tags(t_a, lo, t_end)
    bad_b = _check_tags(t_b, lo, t_end)
    if bad_a != 0 or bad_b != 0:
        return bad_a, bad_b, carry_a, carry_b
    b = _shifted(t_b, delay)
    h = np.zeros(N_BINS + _PAD, np.int64)
    _pairs(t_a, carry_b, h)
    _pairs(t_a, b, h)
    _pairs(carry_a, b, h)
    hist += h[:N_BINS]
    # A future start is >= t_end and a future shifted stop >= t_end - delay: a start pairs with a
    # future stop t iff t - t_a < W, so starts > t_end - delay - W wait; a stop pairs with a future
    # start t iff t_b - t >= -W, so shifted stops >= t_end - W wait.
    return 0, 0, _tail(carry_a, t_a, t_end - delay - _W + 1), _tail(carry_b, b, t_end - _W)


@njit(inline="always")
def _tac_start(t, armed, s, free_at, n_starts):
    """A start at t: an expired window [s, s + 500 ns) frees the converter; a free one is armed by t
    (an accepted start, counted in n_starts)."""
    if armed == 1 and t >= s + _FULL:
        armed = 0
        free_at = s + _FULL
    if armed == 0 and t >= free_at:
        armed = 1
        s = t
        n_starts += 1
    return armed, s, free_at, n_starts


@njit(cache=True)
def bin_startstop(starts, i0, stops, e_limit, drain, state, hist, dead_ps):
    """Run the TAC (module docstring) over starts[i0:] and the stops with TAC time t_B + W < e_limit.

    starts, stops: sorted int64 ps tags of A and of B shifted by the delay (t_B - d); state: int64[4]
    TAC state (armed, window start, free at, starts accepted), updated in place;
    hist: int64[215], updated in place; dead_ps: dead time after a stop, ps. Every start with
    s <= the TAC time of a processed stop is processed before that stop; with `drain` the
    remaining starts are processed too (the caller guarantees they lie before e_limit).
    Returns (index of the first unprocessed start, number of stops processed).
    """
    armed = state[_ARMED]
    s = state[_START]
    free_at = state[_FREE_AT]
    n_starts = state[_N_STARTS]
    n = starts.shape[0]
    m = stops.shape[0]
    i = i0
    j = 0
    while j < m:
        e = stops[j] + _W
        if e >= e_limit:
            break
        while i < n and starts[i] <= e:
            armed, s, free_at, n_starts = _tac_start(starts[i], armed, s, free_at, n_starts)
            i += 1
        if armed == 1:
            if e < s + _FULL:
                # tau + W = (t_B - s) + W = e - s, in [0, 500 000).
                hist[_bin(e - s)] += 1
                free_at = e + dead_ps
            else:
                free_at = s + _FULL
            armed = 0
        j += 1
    if drain:
        while i < n:
            armed, s, free_at, n_starts = _tac_start(starts[i], armed, s, free_at, n_starts)
            i += 1
    state[_ARMED] = armed
    state[_START] = s
    state[_FREE_AT] = free_at
    state[_N_STARTS] = n_starts
    return i, j


@njit(cache=True)
def _add_startstop(carry_b, t_a, t_b, lo, t_end, delay, state, hist, dead_ps):
    """One chunk in startstop mode: check, run the TAC up to TAC time t_end, return the stops that wait.

    Returns (bad_a, bad_b, carry_b) as `_add_allpairs` does (t_b raw, the carry shifted). Every
    start of the chunk is < t_end; a later start can be at t_end and, being a start, would precede
    a stop at TAC time t_end: so the stops with t_B - delay + W >= t_end wait for the next chunk.
    A later stop's TAC time is >= t_end - delay + W >= t_end (|delay| <= W), after every start
    of this chunk: they all go through the TAC now.
    """
    bad_a = _check_tags(t_a, lo, t_end)
    bad_b = _check_tags(t_b, lo, t_end)
    if bad_a != 0 or bad_b != 0:
        return bad_a, bad_b, carry_b
    b = _shifted(t_b, delay)
    i, jc = bin_startstop(t_a, 0, carry_b, t_end, False, state, hist, dead_ps)
    _, jn = bin_startstop(t_a, i, b, t_end, True, state, hist, dead_ps)
    return 0, 0, _tail(carry_b[jc:], b[jn:], _INT64_MIN)


def _as_tags(name: str, t) -> np.ndarray:
    """`t` as a C-contiguous 1-D int64 array (no copy when it is one), or a one-line ValueError."""
    arr = t if type(t) is np.ndarray else np.asarray(t)
    if arr.dtype != np.int64 or arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D int64 array of ps time tags, got {arr.dtype} with shape {arr.shape}")
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _raise_bad_tag(name: str, arr: np.ndarray, bad: int, bounds: str) -> None:
    """The one-line ValueError for `_check_tags`'s answer `bad` (1 + index of the first bad tag)."""
    i = bad - 1
    if i > 0 and arr[i] < arr[i - 1]:
        raise ValueError(f"{name} is not sorted: {name}[{i}] = {arr[i]} < {name}[{i - 1}] = {arr[i - 1]}")
    raise ValueError(f"{name}[{i}] = {arr[i]} ps is outside {bounds}")


def _is_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


def _check_mode(mode: str, tac_dead_ps, delay_ps=0) -> tuple[int, int]:
    """(tac_dead_ps, delay_ps) as ints, or a one-line ValueError naming the bad argument."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not _is_int(tac_dead_ps) or tac_dead_ps < 0:
        raise ValueError(f"tac_dead_ps must be an integer >= 0 ps, got {tac_dead_ps!r}")
    if not _is_int(delay_ps) or abs(delay_ps) > MAX_DELAY_PS:
        raise ValueError(f"delay_ps must be an integer ps with |delay_ps| <= {MAX_DELAY_PS}, got {delay_ps!r}")
    return int(tac_dead_ps), int(delay_ps)


def _new_tac_state() -> np.ndarray:
    return np.array([0, 0, _INT64_MIN, 0], dtype=np.int64)  # [_ARMED, _START, _FREE_AT, _N_STARTS]


class HistogramBinner:
    """Bins one pixel's tag stream on line, chunk by chunk (Python is called per chunk, never per tag).

    A pixel is `reset()`, then `add(t_a, t_b, t_end)` for each read, then `finish()`, which completes
    it: `hist` (int64[215]), `n_a`, `n_b` (singles counts of A and B) are final after `finish()`
    and equal `histogram_tags` of the pixel's tags, however they were cut into reads. In allpairs
    mode `hist` after each `add` already holds every pair of the tags seen so far; in startstop
    mode the stops of the last 250 ns wait for the next `add` or for `finish()`. After `finish()`,
    `add` raises RuntimeError until `reset()`. Carried between reads: at most the last 250 ns (plus
    the delay) of tags and 4 int64 of TAC state.

    mode: "allpairs" | "startstop"; tac_dead_ps: the converter's dead time after a stop (ps);
    delay_ps: B's delay minus A's (ps), subtracted from B's tags (tau = t_B - delay_ps - t_A).
    """

    def __init__(self, mode: str = "allpairs", tac_dead_ps: int = 0, delay_ps: int = 0) -> None:
        self.tac_dead_ps, self.delay_ps = _check_mode(mode, tac_dead_ps, delay_ps)
        self.mode = mode
        self.reset()

    @property
    def n_starts(self) -> int:
        """startstop: the starts the converter accepted so far (every start of the reads added goes
        through the TAC in its own `add`); -1 in allpairs (not counted)."""
        return int(self._state[_N_STARTS]) if self.mode == "startstop" else -1

    def reset(self) -> None:
        """Start a new pixel: a fresh zero `hist` (the previous array is left as it was)."""
        self.hist = np.zeros(N_BINS, dtype=np.int64)
        self.n_a = 0
        self.n_b = 0
        self._t_prev: int | None = None
        self._carry_a = _EMPTY
        self._carry_b = _EMPTY
        self._state = _new_tac_state()
        self._finished = False

    def add(self, t_a, t_b, t_end: int) -> None:
        """Bin one read: sorted int64 ps tags of A and B covering clock time [previous t_end, t_end).

        ValueError (nothing binned) for tags that are not 1-D int64, not sorted, or outside that
        interval; the first read after `reset()` is bounded by `t_end` only.
        """
        if self._finished:
            raise RuntimeError("add() after finish(): call reset() to start a new pixel")
        if isinstance(t_end, bool) or not isinstance(t_end, (int, np.integer)):
            raise ValueError(f"t_end must be an integer clock time in ps, got {t_end!r}")
        t_end = int(t_end)
        lo = -TAG_LIMIT_PS if self._t_prev is None else self._t_prev
        if not lo <= t_end <= TAG_LIMIT_PS:
            raise ValueError(f"t_end = {t_end} ps is before the end of the previous read ({lo} ps) or out of range")
        a, b = _as_tags("t_a", t_a), _as_tags("t_b", t_b)
        if self.mode == "allpairs":
            bad_a, bad_b, self._carry_a, self._carry_b = _add_allpairs(
                self._carry_a, a, self._carry_b, b, lo, t_end, self.delay_ps, self.hist)
        else:
            bad_a, bad_b, self._carry_b = _add_startstop(
                self._carry_b, a, b, lo, t_end, self.delay_ps, self._state, self.hist, self.tac_dead_ps)
        if bad_a or bad_b:
            bounds = f"this read's interval [{lo}, {t_end}) ps"
            _raise_bad_tag(*(("t_a", a, bad_a) if bad_a else ("t_b", b, bad_b)), bounds)
        self.n_a += a.shape[0]
        self.n_b += b.shape[0]
        self._t_prev = t_end

    def finish(self) -> None:
        """End of the pixel's acquisition: bin the stops still waiting (startstop). Idempotent."""
        if self._finished:
            return
        if self.mode == "startstop":
            bin_startstop(_EMPTY, 0, self._carry_b, _INT64_MAX, True, self._state, self.hist, self.tac_dead_ps)
        self._carry_a = _EMPTY
        self._carry_b = _EMPTY
        self._finished = True


@dataclass(frozen=True)
class TagHistogram:
    """A histogram of whole tag files and how it was made."""

    hist: np.ndarray
    """int64[215], the bins of docs/physics.md section 1.1."""
    n_a: int
    n_b: int
    n_starts: int
    """startstop: the starts the converter accepted; -1 in allpairs."""


def tag_histogram(t_a, t_b, mode: str = "allpairs", tac_dead_ps: int = 0, delay_ps: int = 0) -> TagHistogram:
    """One-shot histogram of whole tag files (ps; dead time and B's delay in ps), as `HistogramBinner` gives.

    t_a, t_b: sorted 1-D int64 ps tags of detectors A and B; ValueError (one line) otherwise.
    """
    dead, delay = _check_mode(mode, tac_dead_ps, delay_ps)
    hist = np.zeros(N_BINS, dtype=np.int64)
    tags = {"t_a": _as_tags("t_a", t_a), "t_b": _as_tags("t_b", t_b)}
    for name, arr in tags.items():
        bad = _check_tags(arr, -TAG_LIMIT_PS, TAG_LIMIT_PS)
        if bad:
            _raise_bad_tag(name, arr, bad, f"[{-TAG_LIMIT_PS}, {TAG_LIMIT_PS}) ps")
    a, b = tags["t_a"], tags["t_b"]
    b_shifted = b - delay if delay else b
    n_starts = -1
    if mode == "allpairs":
        bin_allpairs(a, b_shifted, hist)
    else:
        state = _new_tac_state()
        bin_startstop(a, 0, b_shifted, _INT64_MAX, True, state, hist, dead)
        n_starts = int(state[_N_STARTS])
    return TagHistogram(hist, int(a.shape[0]), int(b.shape[0]), n_starts)


def histogram_tags(t_a, t_b, mode: str = "allpairs", tac_dead_ps: int = 0,
                   delay_ps: int = 0) -> tuple[np.ndarray, int, int]:
    """(hist int64[215], n_a, n_b) of `tag_histogram` (ps tags; dead time and B's delay in ps)."""
    h = tag_histogram(t_a, t_b, mode, tac_dead_ps, delay_ps)
    return h.hist, h.n_a, h.n_b
