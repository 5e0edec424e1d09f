"""The NV frequency lock on a CW ODMR dip: dither, normalized error, integrator (docs/physics.md, NV-MRI).

The dip: I(f) = I0 (1 - C g^2 / ((f - f0)^2 + g^2)), g = FWHM / 2 (Lorentzian, FWHM ~8 MHz, C ~0.15).
One lock *cycle* counts photons with the microwave at f_c + delta (I+) and at f_c - delta (I-),
delta = FWHM / (2 sqrt 3), the steepest point of the Lorentzian, however many dither periods the
pulse generator sums into the two gates. Its error is e = (I+ - I-) / (I+ + I-): e > 0 means the
resonance is *below* f_c (the upper point is further from the dip), so f_c must decrease. Near
resonance e = s (f_c - f0) with the analytic slope s (`lorentzian_error_slope`, about 0.027 per MHz
for FWHM 8 MHz, C 0.15); the integrator moves f_c by -gain * e / s (gain ~0.3), never by more
than delta in one cycle (one cycle of few photons cannot throw the lock out of its linear range).

Design (Python per cycle of counts, the arithmetic in Numba, no state but the counts). A cycle needs
the devices (set the dither, count the gates), so the rt loop runs one Python iteration per cycle
anyway; what it must not do is arithmetic per cycle in Python, or keep a lock state that the host
cannot reproduce. So the lock of one pixel is a pure function of its start frequency and the counts
of the cycles acquired so far:

    delta = dither_delta(fwhm)
    counts = np.zeros((max_cycles, 2), np.int64)              # the pixel's buffer: I+, I- per cycle
    f_start = f_c = feedforward(previous_locked, f_retracted)  # start from the scan's prediction
    for k in range(max_cycles):
        counts[k] = acquire(f_c + delta, f_c - delta)          # devices (the rt loop, not here)
        f_c, f_lock, f_sigma, n_used = lock_pixel(f_start, counts[:k + 1], delta, fwhm, contrast,
                                                  gain, n_settle)

`lock_pixel` replays the integrator over the cycles so far (`lock_step` per cycle, O(k): about
2 us per call at 100 cycles, nothing next to a gate of a millisecond) and returns the next dither
centre and the pixel's running estimate with its standard error. The host can recompute every
pixel's lock from its stored counts with the same call. `lock_cycles` gives the whole trajectory
(centres and errors) of a (n_cycles, 2) array in one call.

The estimate. Cycle i at centre f_i reads the resonance as f_i - e_i / s, independently of the other
cycles (Poisson counts). The cycles from `n_settle` on are averaged with weights N_i = I+ + I-; then
the root f0 of sum N_i (e_i - E(f_i - f0)) = 0, with E the dip's own error curve
(`lorentzian_error`), is found by Newton from there. The second step matters: at gain 0.3 the centre
wanders by ~1 MHz rms around the resonance (gain sigma_1 / sqrt(gain (2 - gain)), sigma_1 ~2.2 MHz the
shot noise of one 2 x 1 ms cycle), where E is no longer linear (E(x) / (s x) = 0.95 at 1 MHz, 0.42
at one HWHM); the linear reading then scatters ~17 % above its own error bar. With Var(e_i) =
(1 - e_i^2) / N_i (first order in the Poisson noise), the standard error is
sigma_f = sqrt(sum N_i (1 - e_i^2)) / sum N_i E'(f_i - f0): 1 / (s sqrt(N)) (`shot_noise_sigma`) for a
centre held at the resonance, about 15 % more for the wandering one at gain 0.3 (less at lower gain),
and the scatter over pixels matches it (tests/rt/test_lock.py, benchmarks/bench_lock.py).

Around the lock: `feedforward` predicts a pixel's resonance from the previous ones in scan order,
`lock_lost` flags a pixel whose dither points do not sit in the dip (mean count ratio), and
`recovery_sweep` + `sweep_minimum` find the dip again over +-5 linewidths.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOCKED_DEPTH_FRACTION: float = 0.75
"""At lock the dither points sit at f0 +- FWHM / (2 sqrt 3), where the dip is 3/4 of its depth."""

RECOVERY_HALF_SPAN_FWHM: float = 5.0
"""The recovery sweep covers +-5 linewidths (FWHM) around the prediction."""


# --- the lock's arithmetic (Numba) ------------------------------------------------------------------

@njit(cache=True)
def lock_error(counts_plus, counts_minus):
    """The normalized dither error e = (I+ - I-) / (I+ + I-) (dimensionless); 0 when no photon came."""
    total = float(counts_plus) + float(counts_minus)
    if total <= 0.0:
        return 0.0
    return (float(counts_plus) - float(counts_minus)) / total


@njit(cache=True)
def lock_step(f_c, counts_plus, counts_minus, delta, slope, gain):
    """One integrator step: (next centre f_new in Hz, error e) from one cycle's counts at f_c +- delta Hz.

    slope: de/df at resonance, per Hz (> 0); gain: fraction of the estimated offset e / slope corrected
    per cycle. e > 0 (resonance below f_c) lowers f_c; the step is clipped to +-delta.
    """
    e = lock_error(counts_plus, counts_minus)
    step = gain * e / slope
    if step > delta:
        step = delta
    elif step < -delta:
        step = -delta
    return f_c - step, e


@njit(cache=True)
def lock_cycles(f_start, counts, delta, slope, gain):
    """The lock's trajectory over counts (n, 2) of (I+, I-): (centres (n + 1,) Hz, errors (n,)).

    centres[i] is the dither centre cycle i was acquired at (centres[0] = f_start), centres[n] the next one.
    """
    n = counts.shape[0]
    centres = np.empty(n + 1, np.float64)
    errors = np.empty(n, np.float64)
    f = float(f_start)
    centres[0] = f
    for i in range(n):
        f, e = lock_step(f, counts[i, 0], counts[i, 1], delta, slope, gain)
        errors[i] = e
        centres[i + 1] = f
    return centres, errors


@njit(cache=True)
def lorentzian_error(x, fwhm, contrast, delta):
    """The dither error e and its derivative de/dx (per Hz) at centre offset x = f_c - f0 (Hz) on a
    Lorentzian dip (FWHM Hz, contrast), dither +-delta Hz: the expected e of the module docstring."""
    g2 = (0.5 * fwhm) ** 2
    dp = (x + delta) ** 2 + g2
    dm = (x - delta) ** 2 + g2
    up = 1.0 - contrast * g2 / dp
    um = 1.0 - contrast * g2 / dm
    dup = 2.0 * contrast * g2 * (x + delta) / (dp * dp)
    dum = 2.0 * contrast * g2 * (x - delta) / (dm * dm)
    total = up + um
    return (up - um) / total, 2.0 * (dup * um - up * dum) / (total * total)


_NEWTON_STEPS = 6


@njit(cache=True)
def lock_pixel(f_start, counts, delta, fwhm, contrast, gain, n_settle):
    """One pixel's lock from its counts so far (n, 2): (f_next Hz, f_lock Hz, f_sigma Hz, n_used).

    The dither (delta Hz) and integrator (gain) of `lock_cycles`, at the slope of the Lorentzian dip
    (FWHM Hz, contrast). f_next: the centre for the next cycle; f_lock: the resonance estimated from
    the cycles i >= n_settle with photons (n_used of them; linear reading, then Newton on the dip's
    error curve), f_sigma its shot-noise standard error (module docstring). With no such cycle:
    f_lock = f_next and f_sigma = inf.
    """
    slope = lorentzian_error(0.0, fwhm, contrast, delta)[1]
    n = counts.shape[0]
    fs = np.empty(n, np.float64)
    es = np.empty(n, np.float64)
    ns = np.empty(n, np.float64)
    f = float(f_start)
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    m = 0
    for i in range(n):
        a = float(counts[i, 0])
        b = float(counts[i, 1])
        f_new, e = lock_step(f, a, b, delta, slope, gain)
        if i >= n_settle and a + b > 0.0:
            fs[m] = f
            es[m] = e
            ns[m] = a + b
            s0 += a + b
            s1 += (a + b) * (f - e / slope)
            s2 += (a + b) * (1.0 - e * e)
            m += 1
        f = f_new
    if s0 <= 0.0:
        return f, f, np.inf, 0
    # Linear reading, then the root of sum N_i (e_i - E(f_i - f0)) = 0 by Newton on the dip's own E.
    f_lin = s1 / s0
    f0 = f_lin
    for _ in range(_NEWTON_STEPS):
        r_sum = 0.0
        d_new = 0.0
        for j in range(m):
            e_model, de = lorentzian_error(fs[j] - f0, fwhm, contrast, delta)
            r_sum += ns[j] * (es[j] - e_model)
            d_new += ns[j] * de
        if not d_new > 0.0:
            break
        step = r_sum / d_new
        f0 -= step
        if abs(step) < 1e-3:
            break
    if not abs(f0 - f_lin) <= 0.5 * fwhm:  # outside the dip's monotonic part: keep the linear reading
        return f, f_lin, math.sqrt(s2) / (slope * s0), m
    d_sum = 0.0
    for j in range(m):
        d_sum += ns[j] * lorentzian_error(fs[j] - f0, fwhm, contrast, delta)[1]
    if not d_sum > 0.0:  # cycles beyond the error curve's turning points outweigh the rest: no root to trust
        return f, f_lin, math.sqrt(s2) / (slope * s0), m
    return f, f0, math.sqrt(s2) / d_sum, m


@njit(cache=True)
def feedforward(previous_f, fallback):
    """Predicted resonance (Hz) of the next pixel from the locked ones before it in scan order (Hz).

    Linear extrapolation 2 f[-1] - f[-2] of the last two; the last one alone when the one before it
    is missing or not finite (NaN: a lost pixel); `fallback` when there is no finite last pixel.
    """
    n = previous_f.shape[0]
    if n == 0 or not math.isfinite(previous_f[n - 1]):
        return float(fallback)
    last = float(previous_f[n - 1])
    if n == 1 or not math.isfinite(previous_f[n - 2]):
        return last
    return 2.0 * last - float(previous_f[n - 2])


@njit(cache=True)
def sweep_minimum(freqs, counts, fwhm):
    """The dip's centre (Hz) from a sweep: counts at sorted freqs (Hz), smoothed with the dip's own
    Lorentzian (FWHM Hz; the matched filter, so one low point of noise is not taken for the dip), the
    smallest smoothed value refined by a parabola through it and its neighbours."""
    n = freqs.shape[0]
    g2 = (0.5 * fwhm) ** 2
    smooth = np.empty(n, np.float64)
    for i in range(n):
        num = 0.0
        den = 0.0
        for j in range(n):
            d = freqs[j] - freqs[i]
            w = g2 / (d * d + g2)
            num += w * counts[j]
            den += w
        smooth[i] = num / den
    k = 0
    for i in range(1, n):
        if smooth[i] < smooth[k]:
            k = i
    if k == 0 or k == n - 1:
        return float(freqs[k])
    x0, x1, x2 = freqs[k - 1], freqs[k], freqs[k + 1]
    y0, y1, y2 = smooth[k - 1], smooth[k], smooth[k + 1]
    # Vertex of the parabola through the three points (any spacing).
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0.0:
        return float(x1)
    x = x1 - 0.5 * num / den
    return float(min(max(x, x0), x2))


# --- scalar helpers (plain Python: called once per run or per pixel) ---------------------------------

def dither_delta(fwhm: float) -> float:
    """The dither half-step delta = FWHM / (2 sqrt 3) (Hz), the steepest point of a Lorentzian of FWHM (Hz)."""
    return fwhm / (2.0 * math.sqrt(3.0))


def lorentzian_error_slope(fwhm: float, contrast: float, delta: float | None = None) -> float:
    """de/df at resonance (per Hz) of e = (I+ - I-) / (I+ + I-) on a Lorentzian dip (FWHM Hz, contrast).

    With x = f_c - f0, g = FWHM / 2, u = g^2 / (delta^2 + g^2): I+ - I- = 2 x I'(f0 + delta) to first
    order, I'(f0 + delta) = I0 C 2 delta g^2 / (delta^2 + g^2)^2 and I+ + I- = 2 I0 (1 - C u), so
    s = 2 C delta g^2 / ((delta^2 + g^2)^2 (1 - C u)); at delta = dither_delta(fwhm):
    s = 9 C / (8 sqrt 3 g (1 - 3 C / 4)), 2.745e-8 per Hz (0.027 per MHz) at 8 MHz, C = 0.15.
    """
    d = dither_delta(fwhm) if delta is None else delta
    return float(lorentzian_error(0.0, float(fwhm), float(contrast), float(d))[1])


def shot_noise_sigma(n_photons: float, slope: float, error: float = 0.0) -> float:
    """Standard error (Hz) of a frequency measured by the dither from n_photons (I+ + I-) at error e.

    Var(e) = 4 I+ I- / (I+ + I-)^3 = (1 - e^2) / N for Poisson counts; sigma_f = sqrt(Var(e)) / slope
    (slope per Hz).
    """
    if n_photons <= 0:
        return math.inf
    return math.sqrt((1.0 - error * error) / n_photons) / slope


def lock_lost(mean_ratio: float, contrast: float, threshold: float = 0.5) -> bool:
    """True when the dither points are not in the dip: the dip depth 1 - mean_ratio seen by the lock is
    below `threshold` times the locked depth 3 C / 4 (contrast C).

    mean_ratio: the mean count of the dither gates divided by the off-resonance count for the same gate
    time (1 - 3 C / 4 at lock, 1 far from the dip).
    """
    return bool(1.0 - mean_ratio < threshold * LOCKED_DEPTH_FRACTION * contrast)


def recovery_sweep(center: float, fwhm: float, n: int) -> np.ndarray:
    """n equally spaced frequencies (Hz) over center +- 5 FWHM (Hz): the sweep that finds a lost dip."""
    if n < 3:
        raise ValueError(f"a recovery sweep needs n >= 3 points, got {n}")
    half = RECOVERY_HALF_SPAN_FWHM * fwhm
    return np.linspace(center - half, center + half, n)


__all__ = [
    "LOCKED_DEPTH_FRACTION", "RECOVERY_HALF_SPAN_FWHM", "dither_delta", "feedforward", "lock_cycles",
    "lock_error", "lock_lost", "lock_pixel", "lock_step", "lorentzian_error", "lorentzian_error_slope",
    "recovery_sweep", "shot_noise_sigma", "sweep_minimum",
]
