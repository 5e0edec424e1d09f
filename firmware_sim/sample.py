"""The simulated sample under a confocal spot, the scanner that moves it, and the time tagger
(docs/physics.md, photon correlations).

Each emitter sees the excitation PSF at its offset from the spot (its pump k12 scales with the
local intensity) and is collected through the collection PSF (its collection efficiency scales
with it); both PSFs are Gaussians given by their FWHM. The emitters are independent renewal
streams, mixed with an uncorrelated Poisson background, split 50/50 and detected by two
`Detector`s. The tagger is a stream whose clock is continuous: read k covers [t_end(k-1), t_end(k)) ps. While
the scanner stays put every stream continues exactly (its pending photon is carried, and its
random numbers do not depend on how the time was cut into reads); after a move (any, even away
and back, between two reads) each emitter starts afresh from its stationary state at the new
spot: a real move takes far longer than the 250 ns memory of the emitter. The scanner's z is accepted and
ignored by the optics (the emitters lie in the focal plane).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nvscope.rt.hal import DeviceError, ScannerConstraints, TagBlock, TimeTaggerConstraints

from .detectors import Detector, DetectorParams, beam_splitter
from .emitter import (
    RenewalStream,
    ThreeLevelRates,
    emission_rate,
    g2_parameters,
    photon_intervals,
    poisson_intervals,
    uniform_draws,
)

_PS_PER_S = 1e12


def gaussian_psf(dx: float, dy: float, fwhm: float) -> float:
    """Relative intensity, 0-1, of a Gaussian PSF of full width `fwhm` (m) at offset (dx, dy) in m."""
    return float(np.exp(-4.0 * np.log(2.0) * (dx * dx + dy * dy) / (fwhm * fwhm)))


@dataclass(frozen=True)
class Emitter:
    """A three-level emitter at (x, y) in m.

    rates: its rates (1/s) with the spot centred on it (k12 at the excitation-PSF peak).
    collection_efficiency: the fraction of its photons detected with the spot centred on it
    (optics and detector quantum efficiency). The default 0.013 with the default rates gives
    1.0e5 counts/s at the detectors (both together, before dead time).
    """

    x: float
    y: float
    rates: ThreeLevelRates = field(default_factory=ThreeLevelRates)
    collection_efficiency: float = 0.013

    def __post_init__(self) -> None:
        if not (np.isfinite(self.x) and np.isfinite(self.y)):
            raise ValueError(f"Emitter position must be finite (m), got ({self.x!r}, {self.y!r})")
        if not 0.0 <= self.collection_efficiency <= 1.0:
            raise ValueError(f"Emitter.collection_efficiency must be in [0, 1], got {self.collection_efficiency!r}")


@dataclass(frozen=True)
class Sample:
    """Emitters plus an uncorrelated background (counts/s at the detectors, both together); PSF FWHMs in m."""

    emitters: tuple[Emitter, ...] = ()
    background_rate: float = 1e3
    excitation_fwhm: float = 360e-9
    collection_fwhm: float = 360e-9

    def __post_init__(self) -> None:
        object.__setattr__(self, "emitters", tuple(self.emitters))
        if not (np.isfinite(self.background_rate) and self.background_rate >= 0):
            raise ValueError(f"Sample.background_rate must be >= 0 counts/s, got {self.background_rate!r}")
        for name in ("excitation_fwhm", "collection_fwhm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"Sample.{name} must be a positive width in m, got {v!r}")

    def local_rates(self, emitter: Emitter, x: float, y: float) -> ThreeLevelRates:
        """The emitter's rates (1/s) with the spot at (x, y) m: k12 scaled by the excitation PSF."""
        return emitter.rates.pumped(gaussian_psf(emitter.x - x, emitter.y - y, self.excitation_fwhm))

    def local_efficiency(self, emitter: Emitter, x: float, y: float) -> float:
        """The emitter's collection efficiency (0-1) with the spot at (x, y) m."""
        return emitter.collection_efficiency * gaussian_psf(emitter.x - x, emitter.y - y, self.collection_fwhm)

    def signal_rates(self, x: float, y: float) -> np.ndarray:
        """Detected photon rate of each emitter (counts/s, both detectors, before dead time) at (x, y) m."""
        return np.array([self.local_efficiency(e, x, y) * emission_rate(self.local_rates(e, x, y))
                         for e in self.emitters])


def _afterpulse_average(tau: np.ndarray, t: float, dead: float, mean: float) -> np.ndarray:
    """E[exp(-|tau + delta| / t)] over an afterpulse delay delta = dead + Exp(mean) (all in s).

    With u0 = tau + dead and f(delta) = exp(-(delta - dead)/mean) / mean:
      u0 >= 0: exp(-u0/t) t / (t + mean);
      u0 < 0:  exp(u0/mean) t / (t + mean) + (-u0/mean) exp(u0/mean) phi(u0 k),
               k = 1/t - 1/mean, phi(x) = (e^x - 1)/x (the part of delta where tau + delta < 0).
    mean = 0: exp(-|u0|/t).
    """
    u0 = np.asarray(tau, dtype=float) + dead
    if mean <= 0:
        return np.exp(-np.abs(u0) / t)
    ratio = t / (t + mean)
    after = np.exp(-np.maximum(u0, 0.0) / t) * ratio
    neg = np.minimum(u0, 0.0)
    x = neg * (1.0 / t - 1.0 / mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(x == 0.0, 1.0, np.expm1(x) / np.where(x == 0.0, 1.0, x))
    before = np.exp(neg / mean) * (ratio + (-neg / mean) * phi)
    return np.where(u0 >= 0, after, before)


def measured_g2(tau_s: np.ndarray | float, signal_rates: np.ndarray, background_rate: float,
                shapes: list[tuple[float, float, float]],
                detectors: tuple[DetectorParams, DetectorParams], splitting_ratio: float = 0.5) -> np.ndarray:
    """g2(tau) (tau in s) of an HBT histogram over its measured singles: emitters (signal rates S_i, 1/s
    at the detectors, both together; shapes (a, t1, t2) in s), an uncorrelated background (1/s, both
    together), a beam splitter sending `splitting_ratio` to A, and two detectors that may differ.

    Derivation (docs/physics.md section 1.4; dead time neglected, see below). Detector X gets the
    fraction p_X of the light (p_A = splitting_ratio, p_B = 1 - p_A) plus its dark counts d_X:
    primary clicks at R_X = p_X (S + B) + d_X, S = sum_i S_i. Each click afterpulses with probability
    P_X at delta = dead_X + Exp(mean_X) later, and afterpulses afterpulse too, so the singles are
    r_X = R_X / (1 - P_X). The primary streams' cross-correlation is
        G_p(tau) = R_A R_B + p_A p_B sum_i S_i^2 (g2_i(tau) - 1)
    (independent emitters, each photon split independently). An afterpulse of A at t + delta pairs
    with B's clicks as A's click at t did, at delay tau + delta; one of B at delay tau - delta:
        G_AB(tau) = G_p(tau) + P_A E[G_p(tau + delta_A)] + P_B E[G_p(tau - delta_B)] + O(P^2).
    Dividing by r_A r_B (the uncorrelated part R_A R_B (1 + P_A + P_B) is r_A r_B to this order) and
    writing rho_Xi = p_X S_i / r_X, the signal fraction of emitter i among all of X's clicks
    (background, dark counts and afterpulses included):
        g2(tau) = 1 + sum_i rho_Ai rho_Bi [(g2_i(tau) - 1) + P_A E[g2_i(tau + delta_A) - 1]
                                                         + P_B E[g2_i(tau - delta_B) - 1]]
        g2(0)   = 1 - sum_i rho_Ai rho_Bi [1 - P_A E[g2_i(delta_A) - 1] - P_B E[g2_i(delta_B) - 1]],
    each expectation in closed form (`_afterpulse_average`: g2_i - 1 = -(1 + a) e^{-|tau|/t1} + a e^{-|tau|/t2}).
    Identical detectors without afterpulsing give 1 - sum_i (S_i / (S + B + 2 d))^2, the old formula;
    unequal ones 1 - rho_A rho_B. Afterpulses are not uncorrelated light: their delta (>= the dead time)
    falls where the emitter bunches (g2_i(delta) > 1), so they raise g2(0) by less than their share of
    the singles would. Neglected: O(P^2) (about P^2 |g2_i - 1| <= 1e-3 at P = 3 %) and the dead time's
    correlation with the partner's click, O(r_X dead_X) (2e-3 at 1e5 counts/s per detector).
    """
    s = np.asarray(signal_rates, dtype=float)
    tau = np.asarray(tau_s, dtype=float)
    p = (splitting_ratio, 1.0 - splitting_ratio)
    light = float(s.sum()) + background_rate
    singles = [(p[x] * light + detectors[x].dark_count_rate) / (1.0 - detectors[x].afterpulse_probability)
               for x in (0, 1)]
    g2 = np.ones_like(tau)
    if singles[0] <= 0 or singles[1] <= 0:
        return g2  # a detector that never clicks: no pairs, nothing is correlated
    for s_i, (a, t1, t2) in zip(s, shapes, strict=True):
        if not s_i > 0:
            continue
        corr = -(1.0 + a) * np.exp(-np.abs(tau) / t1) + a * np.exp(-np.abs(tau) / t2)
        for x, sign in ((0, 1.0), (1, -1.0)):  # A's afterpulses pair at tau + delta, B's at tau - delta
            d = detectors[x]
            if d.afterpulse_probability > 0:
                avg = [_afterpulse_average(sign * tau, t, d.dead_time_s, d.afterpulse_delay_s) for t in (t1, t2)]
                corr = corr + d.afterpulse_probability * (-(1.0 + a) * avg[0] + a * avg[1])
        g2 = g2 + (p[0] * s_i / singles[0]) * (p[1] * s_i / singles[1]) * corr
    return g2


class SimScanner:
    """A 3D scanner that moves to any position (m) inside its travel range and then settles.

    `moves` counts the moves that changed the position (a move to where it is does nothing). A move
    sleeps `pace` x its settle time of wall time (0: not at all), like hardware on a paced rig.
    """

    def __init__(self, constraints: ScannerConstraints | None = None,
                 position: tuple[float, float, float] = (0.0, 0.0, 0.0), pace: float = 0.0):
        self.constraints = constraints or ScannerConstraints((-50e-6, 50e-6), (-50e-6, 50e-6), (-10e-6, 10e-6))
        self.pace = pace
        self.position = (0.0, 0.0, 0.0)
        self.moves = 0
        self.move_to(*position)

    def move_to(self, x: float, y: float, z: float) -> None:
        """Move to (x, y, z) in m and settle; raises DeviceError outside `constraints`."""
        c = self.constraints
        for name, v, (lo, hi) in (("x", x, c.x_range), ("y", y, c.y_range), ("z", z, c.z_range)):
            if not (np.isfinite(v) and lo <= v <= hi):
                raise DeviceError(f"scanner: {name} = {v!r} m is outside its range [{lo}, {hi}] m")
        new = (float(x), float(y), float(z))
        if new != self.position:
            self.position = new
            self.moves += 1
            if self.pace > 0 and c.settle_s > 0:
                time.sleep(self.pace * c.settle_s)


class SimTimeTagger:
    """Time tags of the sample's light behind a 50/50 beam splitter and two detectors (A: 0, B: 1),
    as a stream: `start()`, `read(duration_s)` as often as wanted, `stop()`.

    detectors: the parameters of both detectors, or a pair (A, B). Reproducible from `seed`:
    the same seed and the same sequence of moves and reads give the same tags, however the time is
    cut into reads. A read holding more than `constraints.buffer_tags` tags keeps the earliest
    ones and reports the rest as overflows (lost). A read sleeps `pace` x its duration of wall
    time (0: returns as fast as it computes).
    """

    def __init__(self, sample: Sample, scanner: SimScanner,
                 detectors: DetectorParams | tuple[DetectorParams, DetectorParams] = DetectorParams(),
                 seed: int = 0, splitting_ratio: float = 0.5,
                 constraints: TimeTaggerConstraints | None = None, pace: float = 0.0):
        if not 0.0 <= splitting_ratio <= 1.0:
            raise ValueError(f"splitting_ratio must be in [0, 1], got {splitting_ratio!r}")
        self.constraints = constraints or TimeTaggerConstraints(resolution_ps=1, max_read_s=10.0)
        self.pace = pace
        self.sample = sample
        self.scanner = scanner
        self.detector_params = (detectors, detectors) if isinstance(detectors, DetectorParams) else tuple(detectors)
        self.splitting_ratio = splitting_ratio
        self.clock_ps = 0
        self.streaming = False
        rng_split, rng_bg, rng_a, rng_b, *rng_em = np.random.default_rng(seed).spawn(4 + len(sample.emitters))
        self._split = uniform_draws(rng_split)
        self._background = RenewalStream(rng_bg, poisson_intervals(sample.background_rate), 0)
        self._detectors = (Detector(self.detector_params[0], rng_a), Detector(self.detector_params[1], rng_b))
        self._emitters = [RenewalStream(r, poisson_intervals(0.0), 0) for r in rng_em]
        self._moves_seen = -1  # the scanner's move count when the emitter streams were drawn

    # --- what the analysis expects at the current spot ---------------------------------------------

    def signal_rates(self) -> np.ndarray:
        """Detected rate of each emitter at the current spot (counts/s, both detectors, before dead time)."""
        x, y, _ = self.scanner.position
        return self.sample.signal_rates(x, y)

    def background_rate(self) -> float:
        """Uncorrelated rate at the detectors (counts/s): the sample's background plus both dark count rates."""
        return self.sample.background_rate + sum(p.dark_count_rate for p in self.detector_params)

    def channel_delay_s(self) -> float:
        """How much later B's tags come than A's for simultaneous photons (s): latency_B - latency_A.

        A histogram of the raw tags is `expected_g2(tau - channel_delay_s())`; the rig removes the
        delay with ScanConfig.delay_b_s - delay_a_s equal to it.
        """
        return self.detector_params[1].latency_s - self.detector_params[0].latency_s

    def expected_g2(self, tau_s: np.ndarray | float) -> np.ndarray:
        """The g2(tau) (dimensionless, tau in s) that an all-pairs histogram over the measured singles
        (n_A n_B D / T) shows at the current spot, without jitter, on the delay axis corrected for
        `channel_delay_s`: unequal detectors and afterpulses included (`measured_g2`)."""
        x, y, _ = self.scanner.position
        shapes = [g2_parameters(self.sample.local_rates(e, x, y)) for e in self.sample.emitters]
        return measured_g2(tau_s, self.signal_rates(), self.sample.background_rate, shapes,
                           self.detector_params, self.splitting_ratio)

    def true_g2_zero(self) -> float:
        """g2(0) (dimensionless) that a perfect estimator of this spot's measured histogram returns."""
        return float(self.expected_g2(0.0))

    # --- the TimeTagger capability ----------------------------------------------------------------

    def start(self) -> int:
        """Start streaming; returns the clock (ps) from which the first read covers."""
        self.streaming = True
        return self.clock_ps

    def stop(self) -> None:
        """Stop streaming (the clock stays where the last read ended)."""
        self.streaming = False

    def read(self, duration_s: float) -> TagBlock:
        """Advance the clock by `duration_s` s and return the tags of [previous end, new end) (ps)."""
        if not self.streaming:
            raise DeviceError("time tagger: read() before start()")
        if not (np.isfinite(duration_s) and 0 < duration_s <= self.constraints.max_read_s):
            raise DeviceError(f"time tagger: read of {duration_s!r} s is outside (0, {self.constraints.max_read_s}] s")
        wall = time.monotonic()
        t0 = self.clock_ps
        t1 = t0 + int(round(duration_s * _PS_PER_S))
        if self.scanner.moves != self._moves_seen:
            self._relocate(t0)
        photons = [s.arrivals(t1) for s in self._emitters]
        photons.append(self._background.arrivals(t1))
        photons = np.sort(np.concatenate(photons))
        to_a, to_b = beam_splitter(photons, self._split.take(photons.size), self.splitting_ratio)
        t_a = self._detectors[0].tags(to_a, t1)
        t_b = self._detectors[1].tags(to_b, t1)
        self.clock_ps = t1
        t_a, t_b, lost = self._buffer(t_a, t_b)
        if self.pace > 0:
            time.sleep(max(0.0, self.pace * duration_s - (time.monotonic() - wall)))
        return TagBlock(t_a, t_b, t1, lost)

    def _buffer(self, t_a: np.ndarray, t_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """The tags that fit the buffer (the earliest) and the number lost."""
        limit = self.constraints.buffer_tags
        n = t_a.size + t_b.size
        if n <= limit:
            return t_a, t_b, 0
        cut = np.partition(np.concatenate([t_a, t_b]), limit)[limit]  # the first tag that does not fit
        t_a, t_b = t_a[:np.searchsorted(t_a, cut)], t_b[:np.searchsorted(t_b, cut)]
        return t_a, t_b, n - t_a.size - t_b.size

    def _relocate(self, t0_ps: int) -> None:
        """Redraw every emitter's stream from its stationary state at the scanner's position."""
        self._moves_seen = self.scanner.moves
        x, y, _ = self.scanner.position
        for stream, e in zip(self._emitters, self.sample.emitters, strict=True):
            law = photon_intervals(self.sample.local_rates(e, x, y), self.sample.local_efficiency(e, x, y))
            stream.restart(law, t0_ps)


def laser_histograms(pairs: float, n: int, seed: int, rate_cps: float = 1e5) -> dict[str, np.ndarray]:
    """n all-pairs histograms of about `pairs` events each of uncorrelated light (true g2(0) = 1: the laser
    check of an HBT set-up): `rate_cps` per detector through the simulator's detectors and rt's binning
    kernel, as the host's pixel table holds them (hist, n_a, n_b, dwell_s)."""
    from nvscope.rt.kernels.binning import histogram_tags

    tagger = SimTimeTagger(Sample(emitters=(), background_rate=2 * rate_cps), SimScanner(), seed=seed)
    dwell = pairs / (rate_cps**2 * 500e-9)
    tagger.start()
    rows: dict[str, list] = {k: [] for k in ("hist", "n_a", "n_b", "dwell_s")}
    for _ in range(n):
        t_a, t_b, *_ = tagger.read(dwell)
        hist, n_a, n_b = histogram_tags(t_a, t_b, "allpairs")
        for k, v in (("hist", hist), ("n_a", n_a), ("n_b", n_b), ("dwell_s", dwell)):
            rows[k].append(v)
    return {k: np.array(v) for k, v in rows.items()}


def warm_up() -> None:
    """Compile (or load from the Numba cache) the simulator's kernels on a throwaway tagger, so that
    the first pixel of a fresh rig does not pay for it (no tagger in use is touched)."""
    scanner = SimScanner()
    tagger = SimTimeTagger(Sample((Emitter(0.0, 0.0),), background_rate=1e5), scanner,
                           DetectorParams(afterpulse_probability=0.01), seed=0)
    tagger.start()
    tagger.read(1e-4)


__all__ = ["gaussian_psf", "measured_g2", "Emitter", "Sample", "SimScanner", "SimTimeTagger", "warm_up"]
