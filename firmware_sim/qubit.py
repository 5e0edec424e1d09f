"""A qubit (the NV's ms=0/-1 transition) dephasing under Gaussian noise of any spectrum, read out
with photon shot noise (physics.md section 3).

chi(t) is computed by numerical quadrature of the filter-function integral
chi(t) = (1/pi) int_0^inf S(w) F(w t) / w^2 dw for whatever spectrum is given, never by the
Lorentzian closed form of the fitting model: the simulator must not share the model's assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nvscope.rt.hal import DeviceError


@dataclass(frozen=True)
class LorentzianNoise:
    """a [g/((w-w0)^2+g^2) + g/((w+w0)^2+g^2)]: a in rad^2/s^2, w0 and g in rad/s."""

    a: float
    w0: float
    g: float

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
    """F(w t) of CPMG-n (0: FID, 1: echo), physics.md; written as 8 sin^4(wt/4n) U^2 with
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


def quadrature_grid(spectrum, t: float, n_pulses: int, per_period: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Angular frequencies (rad/s) and a mask of where the filter must be evaluated exactly.

    Uniform with `per_period` points per filter period 2 pi / t up to 80 pi max(n, 1) / t; around
    every spectral feature (centre +- 60 widths) at a sixth of its width; above that, a log grid
    where the fast filter oscillation is replaced by its mean (exact inside feature windows).
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


def chi_quadrature(spectrum, t: np.ndarray, n_pulses: int) -> np.ndarray:
    """chi(t) = (1/pi) int_0^inf S(w) F(w t)/w^2 dw by trapezoidal quadrature on `quadrature_grid`."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    f_mean = mean_filter(n_pulses)
    out = np.empty_like(t)
    for i, ti in enumerate(t):
        w, exact = quadrature_grid(spectrum, ti, n_pulses)
        w[0] = max(w[0], 1e-9 / ti)  # the integrand is finite as w -> 0
        filt = np.where(exact, filter_function_cpmg(w * ti, n_pulses), f_mean)
        out[i] = np.trapezoid(spectrum(w) * filt / w**2, w) / np.pi
    return out


@dataclass(frozen=True)
class ReadoutParams:
    """Pulsed optical readout: photons per shot in ms=0 and the contrast of ms=-1 (physics.md)."""

    photons_per_shot: float = 0.03
    contrast: float = 0.25


class SimQubit:
    """Measures coherence curves of the simulated NV under CPMG-n with photon shot noise."""

    def __init__(self, spectrum, readout: ReadoutParams = ReadoutParams(), seed: int = 0):
        self.spectrum = spectrum
        self.readout = readout
        self.rng = np.random.default_rng(seed)

    def true_coherence(self, t: np.ndarray, n_pulses: int) -> np.ndarray:
        """C(t) = exp(-chi(t)) without noise."""
        return np.exp(-chi_quadrature(self.spectrum, t, n_pulses))

    def measure_coherence(self, pulse_times: list[np.ndarray], t: np.ndarray,
                          repetitions: int) -> tuple[np.ndarray, np.ndarray]:
        """Coherence and its one-sigma error at total times t (s), given each point's pi-pulse times.

        The projection of the final pi/2 gives ms=0 with probability (1 + C)/2; each shot yields
        Poisson photons (rate r0 in ms=0, r0 (1 - contrast) in ms=-1); C is estimated from the counts.
        """
        t = np.asarray(t, dtype=float)
        n = len(pulse_times[0])
        for ti, p in zip(t, pulse_times):  # CPMG-n: n pulses, equally spaced by t/n, half a space from 0
            if len(p) != n or not np.allclose(p, (np.arange(n) + 0.5) * ti / max(n, 1), rtol=1e-9, atol=1e-15):
                raise DeviceError(f"the simulated qubit plays CPMG-n sequences only (t = {ti:.3g} s)")
        c = self.true_coherence(t, n)
        r0 = self.readout.photons_per_shot
        r1 = r0 * (1.0 - self.readout.contrast)
        p0 = self.rng.binomial(repetitions, np.clip((1.0 + c) / 2.0, 0.0, 1.0))  # shots ending in ms=0
        counts = self.rng.poisson(p0 * r0 + (repetitions - p0) * r1)
        mean = counts / repetitions
        c_est = 2.0 * (mean - r1) / (r0 - r1) - 1.0
        sigma = 2.0 * np.sqrt(np.maximum(mean, r1) / repetitions) / (r0 - r1)
        return c_est, sigma
