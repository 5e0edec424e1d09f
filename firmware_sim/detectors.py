"""The HBT detection chain: a 50/50 beam splitter and two single-photon detectors (docs/physics.md,
photon correlations).

Each detector has a non-paralyzable dead time (a photon within `dead_time_s` of the last click is
lost; the dead time is carried across reads), optional afterpulsing (after a click, with
probability `afterpulse_probability`, a spurious click at dead time + an exponential delay of
mean `afterpulse_delay_s`; it is lost if the detector is dead then), Poisson dark counts, and a
Gaussian timing jitter. The tag of a click at photon time c is c + latency + jitter, the jitter
clipped to +-latency: the latency is a fixed cable and electronic delay of the channel. Equal on
both channels it leaves tau = t_B - t_A unchanged; a difference is a channel delay that moves the
histogram's zero delay by latency_B - latency_A (`SimTimeTagger.channel_delay_s`), as an unequal
cable does on a real rig. Tags not yet due at the end of a read come in a later one. Tags are int64 ps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .emitter import NEVER_PS, DrawBuffer, RenewalStream, poisson_intervals, uniform_draws

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_MAX_PENDING = 64  # afterpulses waiting to happen, per detector (more are dropped: p ~ 1 only)
_LONG_AGO_PS = -(2**62)  # the "last click" of a fresh detector (t - it cannot overflow for t < 2**62)


@dataclass(frozen=True)
class DetectorParams:
    """One single-photon detector: times in s, rates in 1/s, probabilities 0-1."""

    dead_time_s: float = 22e-9
    """Non-paralyzable dead time after each click (s); an afterpulse comes after it."""
    jitter_fwhm_s: float = 35e-12
    dark_count_rate: float = 100.0
    afterpulse_probability: float = 0.0
    afterpulse_delay_s: float = 100e-9
    """Mean of the exponential part of an afterpulse's delay (s): it comes dead_time_s + Exp(mean) after its click."""
    latency_s: float = 1e-9
    """Cable and electronic delay of the channel (s): tag = click + latency + jitter."""

    def __post_init__(self) -> None:
        for name in ("dead_time_s", "jitter_fwhm_s", "dark_count_rate", "afterpulse_delay_s", "latency_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"DetectorParams.{name} must be finite and >= 0, got {v!r}")
        if not 0.0 <= self.afterpulse_probability < 1.0:
            raise ValueError("DetectorParams.afterpulse_probability must be in [0, 1), "
                             f"got {self.afterpulse_probability!r}")
        if self.jitter_fwhm_s > 0 and self.latency_s < 10 * self.jitter_fwhm_s:
            raise ValueError(f"DetectorParams.latency_s ({self.latency_s}) must be at least 10 jitter "
                             f"FWHM ({self.jitter_fwhm_s}) so that clipping the jitter changes nothing")


@njit(cache=True)
def beam_splitter(arrivals: np.ndarray, u: np.ndarray, p_a: float) -> tuple[np.ndarray, np.ndarray]:
    """Send each photon (ps) to detector A with probability p_a (one uniform each), else to B."""
    to_a = u < p_a
    return arrivals[to_a], arrivals[~to_a]


@njit(cache=True)
def dead_time_clicks(arrivals: np.ndarray, t_end: int, dead: int, last_click: int,
                     pending: np.ndarray, n_pending: int, ap_prob: float, ap_mean: float,
                     u: np.ndarray) -> tuple[np.ndarray, int, int, int, bool]:
    """Clicks (ps) of a non-paralyzable detector from sorted arrivals (ps) before t_end.

    pending[:n_pending] holds the sorted times of afterpulses still to come (updated in place).
    Each click uses one uniform when ap_prob > 0 (two when it afterpulses: the second sets the
    delay, dead + ap_mean * Exp(1), in ps). Returns (clicks, last_click, n_pending, used, ok);
    ok is False when the uniforms ran out, and then nothing returned may be used.
    """
    clicks = np.empty(arrivals.size + n_pending + u.size // 2 + 1, dtype=np.int64)
    n = 0
    used = 0
    i = 0
    while True:
        t_arr = arrivals[i] if i < arrivals.size else NEVER_PS
        t_ap = pending[0] if n_pending > 0 else NEVER_PS
        t = min(t_arr, t_ap)
        if t >= t_end:
            break
        if t_arr <= t_ap:
            i += 1
        else:  # the earliest afterpulse happens (or is lost in the dead time)
            pending[:n_pending - 1] = pending[1:n_pending].copy()
            n_pending -= 1
        if t - last_click < dead:
            continue
        last_click = t
        clicks[n] = t
        n += 1
        if ap_prob > 0.0:
            if used + 2 > u.size:
                return clicks[:0], last_click, n_pending, used, False
            used += 1
            if u[used - 1] < ap_prob:
                t_new = t + dead + np.int64(np.rint(-ap_mean * np.log(u[used])))
                used += 1
                if n_pending < pending.size:
                    k = n_pending
                    while k > 0 and pending[k - 1] > t_new:  # keep pending sorted
                        pending[k] = pending[k - 1]
                        k -= 1
                    pending[k] = t_new
                    n_pending += 1
    return clicks[:n], last_click, n_pending, used, True


@njit(cache=True)
def jittered_tags(clicks: np.ndarray, z: np.ndarray, sigma_ps: float, latency_ps: int) -> np.ndarray:
    """Tags (ps) = click + latency + sigma z (standard normals z), the jitter clipped to +-latency; sorted."""
    tags = np.empty(clicks.size, dtype=np.int64)
    for i in range(clicks.size):
        j = min(max(sigma_ps * z[i], -latency_ps), latency_ps)
        tags[i] = clicks[i] + latency_ps + np.int64(np.rint(j))
    return np.sort(tags)


class Detector:
    """One detector's state across reads: dark counts, dead time, afterpulses, tags not yet due."""

    def __init__(self, params: DetectorParams, rng: np.random.Generator, t0_ps: int = 0):
        self.params = params
        d_rng, j_rng, a_rng = rng.spawn(3)
        self._dark = RenewalStream(d_rng, poisson_intervals(params.dark_count_rate), t0_ps)
        self._z = DrawBuffer(j_rng.standard_normal)
        self._u = uniform_draws(a_rng)
        self._dead = int(round(params.dead_time_s * 1e12))
        self._sigma = params.jitter_fwhm_s * 1e12 / _FWHM_PER_SIGMA
        self._latency = int(round(params.latency_s * 1e12))
        self._last_click = _LONG_AGO_PS
        self._pending = np.empty(_MAX_PENDING, dtype=np.int64)
        self._n_pending = 0
        self._carry = np.empty(0, dtype=np.int64)

    def tags(self, photons: np.ndarray, t_end_ps: int) -> np.ndarray:
        """Sorted tags (ps) before t_end of the photons (sorted ps) that arrived since the last call."""
        arrivals = np.sort(np.concatenate([photons, self._dark.arrivals(t_end_ps)]))
        p = self.params
        m = 2 * (arrivals.size + self._n_pending) + 16 if p.afterpulse_probability > 0 else 0
        while True:
            pending = self._pending.copy()
            clicks, last, n_pending, used, ok = dead_time_clicks(
                arrivals, t_end_ps, self._dead, self._last_click, pending, self._n_pending,
                p.afterpulse_probability, p.afterpulse_delay_s * 1e12, self._u.peek(m))
            if ok:
                break
            m *= 2
        self._u.advance(used)
        self._last_click, self._pending, self._n_pending = last, pending, n_pending
        tags = jittered_tags(clicks, self._z.take(clicks.size), self._sigma, self._latency)
        tags = np.sort(np.concatenate([self._carry, tags])) if self._carry.size else tags
        due = np.searchsorted(tags, t_end_ps)
        self._carry = tags[due:]
        return tags[:due]


__all__ = ["DetectorParams", "beam_splitter", "dead_time_clicks", "jittered_tags", "Detector"]
