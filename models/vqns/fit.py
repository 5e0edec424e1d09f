"""The variational fit of a sum of Lorentzians to every coherence curve, from many starts at once,
with a calibrated confidence band.

How the band is made (also written into every output file, `BAND_METHOD`):
1. Restarts: `restarts` random starts (log-uniform over the frequencies the sequences probe) are
   fitted together by batched Levenberg-Marquardt to the measured curves, residuals
   (C_model - C) / sigma. A restart succeeds when its chi^2 is within P + 3 sqrt(2P) of the best
   (P parameters: statistically as good as the best). The whole fit fails when even the best has
   reduced chi^2 above `CHI2_RED_FAIL` (sigma given).
2. Band: the paper's spread of successful restarts ignores the measurement noise, so each
   successful restart is refitted to its own noise-resampled copy of the data (parametric
   bootstrap around the best fit: C_best + N(0, sigma)). The band is the 16th-84th percentile of
   the refitted spectra at each frequency; `S_mean` is their mean.
Parameters are logarithms (a = e^u / tau^2, g = e^v / tau, w0 = e^w / tau with tau the longest
time), so every step stays physical (a, g, w0 > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .attenuation import attenuation_torch
from .data import CoherenceSet
from .lm import levenberg_marquardt
from .spectrum import lorentzian_spectrum, sensitive_band

BAND_METHOD = ("16th-84th percentile over frequency of the spectra of successful restarts, each "
               "refitted by Levenberg-Marquardt to its own noise-resampled copy of the data "
               "(parametric bootstrap around the best fit); success: chi^2 within P + 3 sqrt(2P) of "
               "the best restart")
CHI2_RED_FAIL = 3.0
"""With sigma given: a best reduced chi^2 above this means no sum of Lorentzians fits the data."""


@dataclass(frozen=True)
class FitConfig:
    """Fit settings: Lorentzians per spectrum, random starts, LM iterations, random seed."""

    lorentzians: int = 3
    restarts: int = 100
    max_iter: int = 150
    seed: int = 0
    fresh_fraction: float = 0.2


@dataclass
class SpectrumFit:
    """Every restart's Lorentzians (R, M) in rad^2/s^2, rad/s, rad/s, their chi^2 and success, and the
    bootstrap population (B, M) that makes the band."""

    a: np.ndarray
    w0: np.ndarray
    g: np.ndarray
    chi2: np.ndarray
    success: np.ndarray
    iterations: np.ndarray
    boot_a: np.ndarray
    boot_w0: np.ndarray
    boot_g: np.ndarray
    boot_chi2: np.ndarray
    sigma_used: np.ndarray
    dof: int
    ok: bool
    message: str
    band_method: str = BAND_METHOD
    omega_range: tuple[float, float] = (0.0, 0.0)
    timings: dict = field(default_factory=dict)

    @property
    def best(self) -> int:
        """Index of the restart with the lowest chi^2."""
        return int(np.argmin(self.chi2))

    def spectra(self, omega: np.ndarray) -> np.ndarray:
        """S(w) (B, F) of the bootstrap population, rad^2/s."""
        return lorentzian_spectrum(omega, self.boot_a, self.boot_w0, self.boot_g)

    def band(self, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S_mean, S_lo, S_hi) at omega (rad/s): mean and 16th/84th percentiles."""
        s = self.spectra(omega)
        return s.mean(0), np.percentile(s, 16, axis=0), np.percentile(s, 84, axis=0)


def _to_physical(theta: torch.Tensor, m: int, tau: float):
    p = theta.view(theta.shape[0], m, 3)
    return p[..., 0].exp() / tau**2, p[..., 1].exp() / tau, p[..., 2].exp() / tau  # a, g, w0


def model_coherence(theta: torch.Tensor, m: int, tau: float, t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """C = exp(-sum_j chi_j) (B, S, T) for parameters theta (B, 3M) at times t (S, T), pulses n (S,)."""
    a, g, w0 = _to_physical(theta, m, tau)
    chi = attenuation_torch(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None],
                            t[None, None], n[None, None, :, None])
    return torch.exp(-chi.sum(1))


def _residual_fn(data: CoherenceSet, targets: torch.Tensor, m: int, tau: float):
    mask = torch.as_tensor(data.mask)
    t = torch.as_tensor(np.where(data.mask, data.t, tau))
    n = torch.as_tensor(data.n_pulses)
    w = torch.as_tensor(np.where(data.mask, 1.0 / np.where(data.mask, data.sigma, 1.0), 0.0))

    def fun(theta: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        c = model_coherence(theta, m, tau, t, n)
        r = (c - targets[rows % targets.shape[0]]) * w
        return torch.where(mask, r, torch.zeros_like(r)).flatten(1)

    return fun


def random_starts(rng: np.random.Generator, n: int, m: int, data: CoherenceSet, tau: float) -> np.ndarray:
    """Log-uniform random Lorentzians over the probed band: theta (n, 3M)."""
    w_lo, w_hi = sensitive_band(data.t, data.n_pulses)
    lw0 = rng.uniform(np.log(w_lo * tau), np.log(w_hi * tau), (n, m))
    lg = rng.uniform(np.log(w_lo * tau) - 1.0, np.log(w_hi * tau), (n, m))
    la = rng.uniform(-2.0, 2.0, (n, m)) + np.maximum(lg, 0.0)  # chi(tau) ~ 1 for g tau >~ 1
    return np.stack([la, lg, lw0], axis=-1).reshape(n, 3 * m)


def _lm(data, targets, theta0, cfg, tau, max_iter):
    fun = _residual_fn(data, targets, cfg.lorentzians, tau)
    res = levenberg_marquardt(fun, torch.as_tensor(theta0), max_iter=max_iter)
    return res.theta.numpy(), (2.0 * res.cost).numpy(), res.iterations.numpy()


def fit_spectrum(data: CoherenceSet, cfg: FitConfig = FitConfig(), warm: SpectrumFit | None = None) -> SpectrumFit:
    """Fit, from `cfg.restarts` starts (random, or warm from a previous fit plus a fresh fraction),
    then bootstrap the band (module docstring). Never raises for a bad fit: `ok` and `message` say."""
    import time

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(cfg.seed)
    m = cfg.lorentzians
    tau = float(np.nanmax(data.t))
    P = 3 * m
    dof = max(data.n_points - P, 1)
    timings = {}
    t0 = time.perf_counter()
    if warm is None:
        theta0 = random_starts(rng, cfg.restarts, m, data, tau)
    else:
        keep = _theta(warm.a, warm.g, warm.w0, tau)[warm.success]
        n_fresh = max(1, int(cfg.fresh_fraction * cfg.restarts))
        theta0 = np.concatenate([keep, random_starts(rng, n_fresh, m, data, tau)])
    given = data.sigma_given
    fit_data = data if given else data.with_sigma(1.0)
    target = torch.as_tensor(np.nan_to_num(fit_data.coherence))[None]
    theta, chi2, iters = _lm(fit_data, target, theta0, cfg, tau, cfg.max_iter)
    timings["restarts_s"] = time.perf_counter() - t0
    chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
    best = int(np.argmin(chi2))
    sigma_scale = 1.0 if given else float(np.sqrt(chi2[best] / dof))
    chi2 = chi2 / sigma_scale**2
    success = chi2 <= chi2[best] + P + 3.0 * np.sqrt(2.0 * P)
    red = chi2[best] / dof
    ok = bool(np.isfinite(red) and (red <= CHI2_RED_FAIL or not given))
    message = (f"{success.sum()} of {len(chi2)} restarts succeeded; best reduced chi^2 {red:.3g}"
               + ("" if ok else f" > {CHI2_RED_FAIL}: no sum of {m} Lorentzians fits these curves"))
    band_data = fit_data if given else data.with_sigma(sigma_scale)
    # bootstrap: each successful restart refitted to its own noise-resampled copy around the best fit
    t1 = time.perf_counter()
    starts = theta[success]
    if warm is not None and len(warm.boot_a):
        starts = np.concatenate([_theta(warm.boot_a, warm.boot_g, warm.boot_w0, tau), starts])[: max(len(starts), 1)]
    n_boot = len(starts)
    c_best = model_coherence(torch.as_tensor(theta[best : best + 1]), m, tau,
                             torch.as_tensor(np.where(data.mask, data.t, tau)), torch.as_tensor(data.n_pulses))[0]
    noise = rng.standard_normal((n_boot, *data.t.shape)) * np.nan_to_num(band_data.sigma)
    targets = c_best[None] + torch.as_tensor(noise)
    b_theta, b_chi2, _ = _lm(band_data, targets, starts, cfg, tau, cfg.max_iter)
    b_ok = np.isfinite(b_chi2) & (b_chi2 <= dof + 4.0 * np.sqrt(2.0 * dof) + P + 3.0 * np.sqrt(2.0 * P))
    if not b_ok.any():
        b_ok = np.isfinite(b_chi2)
    timings["bootstrap_s"] = time.perf_counter() - t1
    a, g, w0 = (v.numpy() for v in _to_physical(torch.as_tensor(theta), m, tau))
    ba, bg, bw0 = (v.numpy() for v in _to_physical(torch.as_tensor(b_theta[b_ok]), m, tau))
    return SpectrumFit(a=a, w0=w0, g=g, chi2=chi2, success=success, iterations=iters,
                       boot_a=ba, boot_w0=bw0, boot_g=bg, boot_chi2=b_chi2[b_ok],
                       sigma_used=np.nan_to_num(band_data.sigma), dof=dof, ok=ok, message=message,
                       omega_range=sensitive_band(data.t, data.n_pulses), timings=timings)


def _theta(a: np.ndarray, g: np.ndarray, w0: np.ndarray, tau: float) -> np.ndarray:
    """The log-parameters of Lorentzians (R, M) -> theta (R, 3M)."""
    return np.stack([np.log(a * tau**2), np.log(g * tau), np.log(w0 * tau)], axis=-1).reshape(len(a), -1)
