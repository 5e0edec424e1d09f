"""A qubit (the NV's ms=0/-1 transition) dephasing under Gaussian noise of any spectrum, driven by
the pulse sequence it is played and read out with photon shot noise (docs/physics.md sections 3.1 and 3.5, noise
spectroscopy).

chi(t) is computed by numerical quadrature of the filter-function integral
chi(t) = (1/pi) int_0^inf S(w) F(w t) / w^2 dw for whatever spectrum is given, never by the
Lorentzian closed form of the fitting model: the simulator must not share the model's assumptions.
The filter function is that of the microwave pulses actually played, read from the sequence
(starts and durations): zero-length pulses by a brute-force sum over the switching times, or
the CPMG closed form when the times are those of CPMG-n; pulses of finite length with the
switching function y(s) of a constant-rate rotation: across a pi pulse y goes from +-1 to -+1 as
cos(pi u/tp), across the first pi/2 pulse (length T) from 0 to 1 as sin(pi u/2T), across the
last from +-1 to 0 as cos(pi u/2T) (u from each pulse's start). y' is then a sum of events, each a jump for
a zero-length pulse or that jump spread over the pulse, and F(w) = (1/2)|sum_j D_j(w)
e^{i w c_j}|^2 with D_j the Fourier transform of event j about its centre c_j (`pulse_events`).
Far above the filter's peaks the cross terms average out and F is replaced by its mean
(1/2) sum_j |D_j(w)|^2, which falls as (w tp)^-4 for finite pulses (2n + 1 for ideal ones).

The FID of a real NV also beats: the 14N nuclear spin splits the line into three (m_I = -1, 0,
+1, hyperfine A = -2.16 MHz, equally populated at room temperature) and the microwave is off
resonance by a static detuning delta. A static frequency offset f adds the phase
2 pi f int y(s) ds, so the coherence is multiplied by (1/3) sum_mI cos(2 pi (delta + m_I A) int y ds):
int y = 0 for echo and CPMG (refocused), t - T + 4T/pi for the FID (pi/2 pulses of length T). RF pulses act on no dark spin here: the pulse generator multiplies the echo's
coherence by the dark spins' DEER factor (`play(..., factor)`, firmware_sim/pulsed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nvscope.rt.hal import GateCounts
from nvscope.rt.kernels.pulses import Sequence, ShotTiming, coherence_shot, cpmg_pulse_times, microwave_pi_times


@dataclass(frozen=True)
class LorentzianNoise:
    """a [g/((w-w0)^2+g^2) + g/((w+w0)^2+g^2)]: a in rad^2/s^2, w0 and g in rad/s."""

    a: float
    w0: float
    g: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.a) and self.a >= 0 and np.isfinite(self.w0) and np.isfinite(self.g) and self.g > 0):
            raise ValueError(f"a lorentzian needs a >= 0 rad^2/s^2, finite w0 and g > 0 rad/s, got {self}")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """S(w) in rad^2/s."""
        return self.a * (self.g / ((w - self.w0) ** 2 + self.g**2) + self.g / ((w + self.w0) ** 2 + self.g**2))

    def features(self) -> list[tuple[float, float]]:
        """(centre, width) in rad/s of what the quadrature grid must resolve."""
        return [(self.w0, self.g)]


@dataclass(frozen=True)
class OneOverFNoise:
    """A / |w|^alpha between w_lo and w_hi (rad/s), flat below w_lo, falling as 1/w^2 above w_hi."""

    amplitude: float
    alpha: float = 1.0
    w_lo: float = 2 * np.pi * 1e3
    w_hi: float = 2 * np.pi * 1e8

    def __post_init__(self) -> None:
        if not (self.amplitude >= 0 and np.isfinite(self.alpha) and 0 < self.w_lo < self.w_hi < np.inf):
            raise ValueError(f"1/f noise needs amplitude >= 0, a finite alpha and 0 < w_lo < w_hi rad/s, got {self}")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """S(w) in rad^2/s."""
        w = np.abs(w)
        s = self.amplitude / np.maximum(w, self.w_lo) ** self.alpha
        return np.where(w > self.w_hi, s * (self.w_hi / np.maximum(w, 1e-300)) ** 2, s)

    def features(self) -> list[tuple[float, float]]:
        """(centre, width) in rad/s of what the quadrature grid must resolve."""
        return [(self.w_lo, self.w_lo / 4), (self.w_hi, self.w_hi / 4)]


@dataclass(frozen=True)
class OhmicNoise:
    """Ohmic spectrum with an exponential cutoff: eta |w| exp(-|w| / w_c) in rad^2/s (eta in rad^2, w_c in rad/s)."""

    eta: float
    w_c: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.eta) and self.eta >= 0 and np.isfinite(self.w_c) and self.w_c > 0):
            raise ValueError(f"ohmic noise needs eta >= 0 rad^2 and w_c > 0 rad/s, got {self}")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """S(w) in rad^2/s."""
        w = np.abs(w)
        return self.eta * w * np.exp(-w / self.w_c)

    def features(self) -> list[tuple[float, float]]:
        """(centre, width) in rad/s of what the quadrature grid must resolve."""
        return [(self.w_c, self.w_c / 4)]


@dataclass(frozen=True)
class NoiseSpectrum:
    """A sum of noise components (any of the classes above)."""

    parts: tuple

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """S(w) in rad^2/s."""
        return sum(p(w) for p in self.parts)

    def features(self) -> list[tuple[float, float]]:
        """(centre, width) in rad/s of what the quadrature grid must resolve."""
        return [f for p in self.parts for f in p.features()]


def filter_function_cpmg(wt: np.ndarray, n_pulses: int) -> np.ndarray:
    """F(w t) of CPMG-n (0: FID, 1: echo), docs/physics.md section 3.1; written as 8 sin^4(wt/4n) U^2 with
    U = sin(n phi)/sin(phi), phi = pi/2 - wt/2n, so the 0/0 at cos(wt/2n) = 0 never occurs."""
    if n_pulses == 0:
        return 2.0 * np.sin(wt / 2.0) ** 2
    n = n_pulses
    theta = wt / (2.0 * n)
    phi = np.pi / 2.0 - theta
    s = np.sin(phi)
    tiny = np.abs(s) < 1e-9
    ratio = np.where(tiny, n * np.cos(n * phi) / np.where(tiny, np.cos(phi), 1.0),
                     np.sin(n * phi) / np.where(tiny, 1.0, s))
    return 8.0 * np.sin(theta / 2.0) ** 4 * ratio**2


def mean_filter(n_pulses: int) -> float:
    """F(w t) averaged over its period (4 pi n; 2 pi for FID): what a slowly varying S(w)/w^2 sees
    far above the filter's peaks."""
    period = 4.0 * np.pi * max(n_pulses, 1)
    x = (np.arange(8192 * max(n_pulses, 1)) + 0.5) * period / (8192 * max(n_pulses, 1))
    return float(filter_function_cpmg(x, n_pulses).mean())


def filter_function_times(w: np.ndarray, t: float, pi_times: np.ndarray) -> np.ndarray:
    """F(w t) of ideal pi pulses at `pi_times` (s) inside (0, t), w in rad/s, by brute force:
    (w^2/2) |int_0^t y(s) exp(i w s) ds|^2 = (1/2) |sum_j c_j exp(i w s_j)|^2 over the switching
    times s_j = 0, pi_times, t with c = -1, 2 (-1)^(j-1) (j = 1..n), (-1)^n."""
    s = np.concatenate([[0.0], np.sort(np.asarray(pi_times, dtype=np.float64)), [t]])
    n = s.size - 2
    c = np.concatenate([[-1.0], 2.0 * (-1.0) ** np.arange(n), [(-1.0) ** n]])
    re = np.zeros_like(w, dtype=np.float64)
    im = np.zeros_like(w, dtype=np.float64)
    for cj, sj in zip(c, s):
        re += cj * np.cos(w * sj)
        im += cj * np.sin(w * sj)
    return 0.5 * (re * re + im * im)


def quadrature_grid(spectrum, t: float, n_pulses: float, per_period: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Angular frequencies (rad/s) and a mask of where the filter must be evaluated exactly.

    Uniform with `per_period` points per filter period 2 pi / t up to 80 pi max(n, 1) / t; around
    every spectral feature (centre +- 60 widths) at a sixth of its width; above that, a log grid
    where the fast filter oscillation is replaced by its mean (exact inside feature windows).
    n is the number of pi pulses of CPMG-n, or t / (2 x the shortest switching interval).
    """
    dw = 2.0 * np.pi / (per_period * t)
    w_f = 80.0 * np.pi * max(n_pulses, 1) / t
    parts = [np.linspace(0.0, w_f, int(w_f / dw) + 1)]
    windows = []
    top = w_f
    for c, width in spectrum.features():
        lo, hi = max(c - 60.0 * width, 0.0), c + 60.0 * width
        step = min(width / 6.0, dw)
        parts.append(np.linspace(lo, hi, min(int((hi - lo) / step) + 1, 200_000)))
        windows.append((lo, hi))
        top = max(top, c + 1000.0 * width)
    parts.append(np.geomspace(w_f, 100.0 * top, 4000))
    w = np.unique(np.concatenate(parts))
    exact = w <= w_f
    for lo, hi in windows:
        exact |= (w >= lo) & (w <= hi)
    return w, exact


def _chi(spectrum, t: float, n_grid: float, filt, f_mean, extra: np.ndarray = np.zeros(0)) -> float:
    """The quadrature; f_mean: the filter's mean far above its peaks (a number, or a function of w);
    extra: more frequencies (rad/s) for the grid."""
    w, exact = quadrature_grid(spectrum, t, n_grid)
    if extra.size:
        w_exact = w[exact]
        w = np.unique(np.concatenate([w, extra]))
        exact = np.isin(w, w_exact) | (w <= w_exact.max(initial=0.0))
    w[0] = max(w[0], 1e-9 / t)  # the integrand is finite as w -> 0
    f = np.full_like(w, f_mean) if np.isscalar(f_mean) else f_mean(w)
    f[exact] = filt(w[exact])
    return float(np.trapezoid(spectrum(w) * f / w**2, w) / np.pi)


def chi_quadrature(spectrum, t: np.ndarray, n_pulses: int) -> np.ndarray:
    """chi(t) of CPMG-n = (1/pi) int_0^inf S(w) F(w t)/w^2 dw by trapezoidal quadrature on `quadrature_grid`,
    with the CPMG closed form of F (t in s)."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    f_mean = mean_filter(n_pulses)
    return np.array([_chi(spectrum, ti, n_pulses, lambda w, ti=ti: filter_function_cpmg(w * ti, n_pulses), f_mean)
                     for ti in t])


def chi_pulse_times(spectrum, t: float, pi_times: np.ndarray) -> float:
    """chi(t) of ideal pi pulses at `pi_times` (s) over total time t (s), by the same quadrature with the
    brute-force filter function of those times (its mean far above the peaks is 2 n + 1)."""
    pi_times = np.sort(np.asarray(pi_times, dtype=np.float64))
    gaps = np.diff(np.concatenate([[0.0], pi_times, [t]]))
    if gaps.min() <= 0:
        raise ValueError(f"pi pulses at {pi_times} s do not lie strictly inside (0, {t}) s")
    n_grid = t / (2.0 * gaps.min())  # CPMG-n: n
    return _chi(spectrum, t, n_grid, lambda w: filter_function_times(w, t, pi_times), 2.0 * pi_times.size + 1.0)


@dataclass(frozen=True)
class PulseEvents:
    """The microwave pulses of a coherence shot as switching events: centres (s, from the first
    pi/2 pulse's centre), durations (s), and the sign of y before each (+1 before the first pi/2).
    The first and last pulses are the pi/2 pulses, those between are pi pulses."""

    centres: tuple[float, ...]
    durations: tuple[float, ...]

    @property
    def t(self) -> float:
        """The sequence's length (s): from the first pi/2 pulse's centre to the last's."""
        return self.centres[-1] - self.centres[0]

    def signs(self) -> np.ndarray:
        """y just before each event: 0 before the first pi/2, then +1, -1, ... flipped by each pi pulse."""
        n = len(self.centres) - 2
        return np.concatenate([[0.0], (-1.0) ** np.arange(n + 1)])

    def transforms(self, w: np.ndarray) -> np.ndarray:
        """D_j(w) (shape (events,) + w.shape): int y'_j(s) e^{i w (s - c_j)} ds of each event."""
        w = np.asarray(w, dtype=np.float64)
        sg = self.signs()
        out = np.empty((len(self.centres),) + w.shape, dtype=np.complex128)
        last = len(self.centres) - 1
        for j, tp in enumerate(self.durations):
            if j in (0, last):  # pi/2: jump +1 up (first), -sign down (last)
                jump = 1.0 if j == 0 else -sg[j]
                if tp == 0.0:
                    out[j] = jump
                    continue
                gam = 0.5 * np.pi / tp
                cm = 0.5 * tp * np.sinc((gam - w) * tp / (2.0 * np.pi))  # sin((gam - w) tp/2)/(gam - w)
                cp = 0.5 * tp * np.sinc((gam + w) * tp / (2.0 * np.pi))
                # y' = gam cos(gam v + pi/4) (up) or -sign gam sin(gam v + pi/4) (down), v from the centre
                odd = (cm - cp) * (-1j if j == 0 else 1j)
                out[j] = jump * gam / np.sqrt(2.0) * ((cm + cp) + odd)
            else:  # pi: jump -2 sign, spread as -sign (pi/tp) sin(pi u/tp)
                u = np.abs(w) * tp
                env = 0.5 * np.pi * np.sinc((np.pi - u) / (2.0 * np.pi)) / (1.0 + u / np.pi)  # cos(u/2)/(1-(u/pi)^2)
                out[j] = -2.0 * sg[j] * env
        return out

    def filter_function(self, w: np.ndarray) -> np.ndarray:
        """F(w) = (1/2) |sum_j D_j(w) e^{i w c_j}|^2 (dimensionless), w in rad/s."""
        d = self.transforms(w)
        c = np.asarray(self.centres)[:, None] - self.centres[0]
        return 0.5 * np.abs(np.sum(d * np.exp(1j * np.asarray(w)[None, :] * c), axis=0)) ** 2

    def mean_filter(self, w: np.ndarray) -> np.ndarray:
        """F averaged over its fast oscillations at w (rad/s): (1/2) sum_j |D_j(w)|^2."""
        return 0.5 * np.sum(np.abs(self.transforms(w)) ** 2, axis=0)

    def integral(self) -> float:
        """int y(s) ds (s): the phase a static frequency offset of 1 rad/s adds."""
        sg = self.signs()
        c, d = np.asarray(self.centres), np.asarray(self.durations)
        ends, starts = c + 0.5 * d, c - 0.5 * d
        free = sum(sg[j + 1] * (starts[j + 1] - ends[j]) for j in range(len(c) - 1))
        return float(free + (2.0 / np.pi) * (d[0] + sg[-1] * d[-1]))  # the pi/2 ramps; a pi ramp adds 0


def pulse_events(sequence: Sequence) -> PulseEvents | None:
    """The microwave pulses of a compiled coherence shot as `PulseEvents`; None for fewer than two."""
    mw = sequence.on("mw")
    if len(mw) < 2:
        return None
    c0 = mw[0].centre_s
    return PulseEvents(tuple(p.centre_s - c0 for p in mw), tuple(p.duration_s for p in mw))


def chi_pulses(spectrum, events: PulseEvents) -> float:
    """chi of the played pulses `events` (finite lengths included) by the quadrature of
    `chi_pulse_times`, with the filter and mean filter of `PulseEvents`; the grid also resolves
    the pulses' own envelopes up to 64 pi / (shortest pulse)."""
    t = events.t
    centres = np.asarray(events.centres)
    gaps = np.diff(centres)
    if not (t > 0 and gaps.min() > 0):
        raise ValueError(f"microwave pulses at {centres} s are not in time order")
    n_grid = t / (2.0 * gaps.min())
    lengths = [d for d in events.durations if d > 0]
    extra = np.zeros(0)
    if lengths:
        top = 64.0 * np.pi / min(lengths)
        extra = np.linspace(0.0, top, int(top / (np.pi / (8.0 * max(lengths)))) + 1)[1:]
    return _chi(spectrum, t, n_grid, events.filter_function, events.mean_filter, extra)


def is_cpmg(t: float, pi_times: np.ndarray) -> bool:
    """True when `pi_times` (s) are those of CPMG-n over t (s), n = their number (FID and echo included)."""
    pi_times = np.sort(np.asarray(pi_times, dtype=np.float64))
    return bool(np.allclose(pi_times, cpmg_pulse_times(t, pi_times.size), rtol=0.0, atol=1e-9 * t))


@dataclass(frozen=True)
class ReadoutParams:
    """Optical readout: photons per shot in a readout gate of `gate_s` s in ms=0, the contrast of
    ms=-1 in that first `gate_s` of the laser pulse (after it the spin is back in ms=0), and the CW
    count rate (counts/s) of ungated counting (docs/physics.md sections 2.4 and 3.5)."""

    photons_per_shot: float = 0.03
    contrast: float = 0.25
    gate_s: float = 300e-9
    cw_rate: float = 150e3

    def __post_init__(self) -> None:
        if not (self.photons_per_shot >= 0 and 0 <= self.contrast <= 1 and self.gate_s > 0 and self.cw_rate >= 0):
            raise ValueError("readout: photons_per_shot >= 0, 0 <= contrast <= 1, gate_s > 0 s and cw_rate >= 0 "
                             f"counts/s, got {self}")


def shot_noise_coherence(spectrum, n_pulses: int, t: np.ndarray, repetitions: int, rng: np.random.Generator,
                         readout: ReadoutParams = ReadoutParams()) -> tuple[np.ndarray, np.ndarray]:
    """An off-line CPMG-n curve at total times t (s): (C, sigma) with C = exp(-chi) by quadrature and
    photon shot noise; each shot ends in ms=0 with probability (1 + C)/2 and yields Poisson photons,
    and C is read against perfectly known bright/dark levels (for fitting tests and benchmarks; the
    rig measures its references, rt/readout.py)."""
    c = np.exp(-chi_quadrature(spectrum, t, n_pulses))
    r0 = readout.photons_per_shot
    r1 = r0 * (1.0 - readout.contrast)
    p0 = rng.binomial(repetitions, np.clip((1.0 + c) / 2.0, 0.0, 1.0))
    mean = rng.poisson(p0 * r0 + (repetitions - p0) * r1) / repetitions
    return 2.0 * (mean - r1) / (r0 - r1) - 1.0, 2.0 * np.sqrt(np.maximum(mean, r1) / repetitions) / (r0 - r1)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class SimQubit:
    """The simulated NV spin: plays sequences of channel pulses and returns the photons of its gates.

    The spin starts every shot in ms=0 (the previous shot's laser re-polarized it). No microwave
    pulse leaves it there; one is a pi pulse (ms=-1); with two or more, the first and the last are
    the pi/2 pulses of a coherence measurement and those between are pi pulses, and the final
    projection gives ms=0 with probability (1 + C)/2, C = exp(-chi) of the pulses played (their
    times and lengths) times the 14N hyperfine and detuning factor (module docstring):
    `detuning_hz` (static, from the m_I = 0 line) and `hyperfine_hz` (A, 14N: -2.16 MHz).
    The laser pulse after the microwave reads the spin out: during its first `readout.gate_s` an
    ms=-1 spin fluoresces `contrast` less; each gate counts Poisson photons of what it overlaps.
    """

    def __init__(self, spectrum, readout: ReadoutParams = ReadoutParams(), seed: int = 0,
                 detuning_hz: float = 0.3e6, hyperfine_hz: float = -2.16e6):
        if not (np.isfinite(detuning_hz) and np.isfinite(hyperfine_hz)):
            raise ValueError(f"detuning and hyperfine splitting must be finite Hz, got {detuning_hz!r}, {hyperfine_hz!r}")
        self.spectrum = spectrum
        self.readout = readout
        self.detuning_hz = float(detuning_hz)
        self.hyperfine_hz = float(hyperfine_hz)
        self.rng = np.random.default_rng(seed)
        self._known: dict[tuple, float] = {}  # the bath's C of sequences played before

    def true_coherence(self, t: np.ndarray, n_pulses: int, timing: ShotTiming | None = None) -> np.ndarray:
        """C(t) of CPMG-n (t in s) without noise: timing None, the bath's exp(-chi(t)) with ideal
        pulses (no hyperfine beats); else the coherence of the shots compiled with `timing`, as
        played (finite pulses, beats of the FID)."""
        if timing is None:
            return np.exp(-chi_quadrature(self.spectrum, t, n_pulses))
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return np.array([self.shot_coherence(coherence_shot(ti, cpmg_pulse_times(ti, n_pulses), timing)) for ti in t])

    def static_factor(self, events: PulseEvents) -> float:
        """(1/3) sum_mI cos(2 pi (detuning + m_I A) int y ds): the 14N lines and the detuning (module docstring)."""
        area = events.integral()
        return float(np.mean([np.cos(2.0 * np.pi * (self.detuning_hz + m * self.hyperfine_hz) * area)
                              for m in (-1, 0, 1)]))

    def shot_coherence(self, sequence: Sequence) -> float:
        """The coherence (-1..1) a coherence shot ends with: exp(-chi) of the microwave pulses played
        (ideal pulses: `coherence`; finite ones: `chi_pulses`) times `static_factor`; 1 without
        a pi/2 pair."""
        events = pulse_events(sequence)
        if events is None:
            return 1.0
        if not any(events.durations):
            t, pi_times = microwave_pi_times(sequence)
            bath = self.coherence(t, pi_times)
        else:
            key = (events.centres, events.durations)
            bath = self._known.get(key)
            if bath is None:
                bath = float(np.exp(-chi_pulses(self.spectrum, events)))
                self._remember(key, bath)
        return bath * self.static_factor(events)

    def _remember(self, key, c: float) -> None:  # type: ignore[no-untyped-def]
        if len(self._known) >= 100_000:
            self._known.clear()
        self._known[key] = c

    def coherence(self, t: float, pi_times: np.ndarray) -> float:
        """C = exp(-chi) of ideal pi pulses at `pi_times` (s) over t (s): the CPMG closed form of the
        filter when the times are CPMG's, else the brute-force sum over the switching times; a
        sequence played again is not integrated again (a quadrature takes milliseconds)."""
        key = (float(t), tuple(np.asarray(pi_times, dtype=float).tolist()))
        c = self._known.get(key)
        if c is None:
            if is_cpmg(t, pi_times):
                c = float(self.true_coherence(np.array([t]), len(pi_times))[0])
            else:
                c = float(np.exp(-chi_pulse_times(self.spectrum, t, pi_times)))
            self._remember(key, c)
        return c

    def ms0_probability(self, sequence: Sequence, factor: float = 1.0) -> float:
        """Probability (0-1) that a shot of `sequence` ends in ms=0 before its readout; `factor`
        multiplies the coherence (a DEER factor of dark spins, 0-1)."""
        mw = sequence.on("mw")
        if len(mw) < 2:
            return 1.0 - len(mw)
        return float(np.clip(0.5 * (1.0 + factor * self.shot_coherence(sequence)), 0.0, 1.0))

    def gate_means(self, sequence: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Mean photons per shot in the signal and reference gates: (in ms=0, less in ms=-1)."""
        r0 = self.readout.photons_per_shot / self.readout.gate_s  # photons/s under the laser in ms=0
        mw_end = max([p.end_s for p in sequence.on("mw")], default=-np.inf)
        lasers = sequence.on("laser")
        readout = next((p for p in lasers if p.start_s >= mw_end), None)
        bright, deficit = np.zeros(2), np.zeros(2)
        for k, channel in enumerate(("gate", "gate_ref")):
            for g in sequence.on(channel):
                bright[k] += r0 * sum(_overlap(g.start_s, g.end_s, p.start_s, p.end_s) for p in lasers)
                if readout is not None:
                    deficit[k] += r0 * self.readout.contrast * _overlap(
                        g.start_s, g.end_s, readout.start_s, min(readout.end_s, readout.start_s + self.readout.gate_s))
        return bright, deficit

    def play(self, sequence: Sequence, repetitions: int, factor: float = 1.0) -> GateCounts:
        """Photons counted in the signal and reference gates over `repetitions` shots of `sequence`,
        its coherence multiplied by `factor` (0-1: the dark spins' DEER factor; 1: none)."""
        bright, deficit = self.gate_means(sequence)
        in_ms0 = self.rng.binomial(repetitions, self.ms0_probability(sequence, factor))
        lam = repetitions * bright - (repetitions - in_ms0) * deficit
        signal, reference = self.rng.poisson(np.maximum(lam, 0.0))
        return GateCounts(int(signal), int(reference))


__all__ = ["LorentzianNoise", "OneOverFNoise", "OhmicNoise", "NoiseSpectrum", "filter_function_cpmg",
           "filter_function_times", "mean_filter", "quadrature_grid", "chi_quadrature", "chi_pulse_times",
           "is_cpmg", "PulseEvents", "pulse_events", "chi_pulses", "ReadoutParams", "SimQubit"]
