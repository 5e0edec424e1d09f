"""The variational fit of a sum of Lorentzians to every coherence curve, from many starts at once,
with a calibrated confidence band.

How the spectrum and its band are made (also written into every output file, `BAND_METHOD`):
1. Restarts: `restarts` starts, log-uniform at random over the probed band. For each, the widths
   and centres are fitted by variable projection in log-coherence (`varpro.py`: the best
   non-negative amplitudes are solved exactly; a Lorentzian whose amplitude goes to zero is
   re-drawn), then every parameter is polished by batched Levenberg-Marquardt on the residuals
   (C_model - C) / sigma. A restart succeeds when its chi^2 is within P + 3 sqrt(2P) of the best
   (P parameters: statistically as good as the best). The whole fit fails when even the best has
   reduced chi^2 above `CHI2_RED_FAIL` (sigma given).
2. Band: the paper's spread of successful restarts ignores the measurement noise. So the
   successful restarts are refitted to noise-resampled copies of the data (parametric bootstrap
   around the best fit: C_best + N(0, sigma)), and each success adds draws from its Laplace
   (Gauss-Newton) posterior, which carries the directions the data hardly constrain. A Laplace
   draw is kept only when it still fits the data as well as an accepted bootstrap refit: the
   Gaussian is the linearization, and far along a weakly constrained direction (log-std up to 2)
   about half the draws contradict the measured curves; kept, they dominated the spread of the
   predictions even where the data pin the spectrum down, and made the proposal's ranking hang
   on the last bits of the optimizer (it flipped between CPUs). The band is
   the 16th-84th percentile of that population's spectra at each frequency; `S_mean` its mean.
Parameters are logarithms (a = e^u / tau^2, g = e^v / tau, w0 = e^w / tau with tau the longest
time), so every step stays physical (a, g, w0 > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import CoherenceSet
from .kernel import chi_and_grads, chi_values
from .batched_lm import levenberg_marquardt
from .spectrum import lorentzian_spectrum, sensitive_band
from .varpro import varpro_fit

BAND_METHOD = ("16th-84th percentile over frequency of the spectra of (a) the successful restarts "
               "refitted by Levenberg-Marquardt to noise-resampled copies of the data (parametric "
               "bootstrap around the best fit) and (b) Laplace (Gauss-Newton) draws around each "
               "successful restart that still fit the data (chi^2 <= dof + 4 sqrt(2 dof) + P + 3 sqrt(2P), "
               "the bootstrap refits' acceptance); success: chi^2 within P + 3 sqrt(2P) of the best restart")
CHI2_RED_FAIL = 3.0
"""With sigma given: a best reduced chi^2 above this means no sum of Lorentzians fits the data."""


@dataclass(frozen=True)
class FitConfig:
    """Fit settings: Lorentzians per spectrum, random starts, LM iterations, random seed."""

    lorentzians: int = 3
    restarts: int = 100
    max_iter: int = 150
    seed: int = 0
    fresh_fraction: float = 0.05
    """Incremental update: fresh random starts, as a fraction of `restarts`, beside the warm ones."""
    revivals: int = 3


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


def lorentzians(theta: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, g, w0), each (B, M), in rad^2/s^2, rad/s, rad/s, from log-parameters theta (B, 3M)."""
    p = np.exp(theta.reshape(theta.shape[0], -1, 3))
    return p[..., 0] / tau**2, p[..., 1] / tau, p[..., 2] / tau


def model_coherence(theta: np.ndarray, tau: float, t: np.ndarray, n: np.ndarray) -> np.ndarray:
    """C = exp(-sum_j chi_j) (B, S, T) for log-parameters theta (B, 3M) at times t (S, T) s, pulses n (S,)."""
    a, g, w0 = lorentzians(theta, tau)
    chi = chi_values(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None],
                     t[None, None], n[None, None, :, None])
    return np.exp(-chi.sum(1))


def _residual_fn(data: CoherenceSet, targets: np.ndarray, tau: float):
    """Weighted residuals (C_model - target) / sigma (B, S*T) and their Jacobian in theta, with
    the chain rule d/du = a d/da (and so on) through the log-parameters."""
    mask = data.mask
    t = np.where(mask, data.t, tau)
    n = data.n_pulses
    w = np.where(mask, 1.0 / np.where(mask, data.sigma, 1.0), 0.0)

    def fun(theta: np.ndarray, rows: np.ndarray, jac: bool):
        a, g, w0 = lorentzians(theta, tau)
        args = (a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None], t[None, None], n[None, None, :, None])
        if jac:
            chi, d_a, d_g, d_w0 = chi_and_grads(*args)
        else:  # LM's trial steps and first costs: the values-only kernel
            chi = chi_values(*args)
        c = np.exp(-chi.sum(1))
        r = ((c - targets[rows % targets.shape[0]]) * w).reshape(len(theta), -1)
        if not jac:
            return r, None
        cw = -(c * w)[:, None]  # dr/dchi_j, (B, 1, S, T)
        parts = [cw * d_a * a[:, :, None, None], cw * d_g * g[:, :, None, None], cw * d_w0 * w0[:, :, None, None]]
        J = np.stack(parts, axis=2)  # (B, M, 3, S, T)
        return r, J.reshape(len(theta), -1, r.shape[1]).transpose(0, 2, 1)

    return fun


def random_starts(rng: np.random.Generator, n: int, m: int, data: CoherenceSet, tau: float) -> np.ndarray:
    """Log-uniform random Lorentzians over the probed band: theta (n, 3M)."""
    w_lo, w_hi = sensitive_band(data.t, data.n_pulses, data.coherence, data.sigma if data.sigma_given else None)
    lw0 = rng.uniform(np.log(w_lo * tau), np.log(w_hi * tau), (n, m))
    lg = rng.uniform(np.log(w_lo * tau) - 1.0, np.log(w_hi * tau), (n, m))
    la = rng.uniform(-2.0, 2.0, (n, m)) + np.maximum(lg, 0.0)  # chi(tau) ~ 1 for g tau >~ 1
    return np.stack([la, lg, lw0], axis=-1).reshape(n, 3 * m)


def dead_lorentzians(theta: np.ndarray, data: CoherenceSet, tau: float, threshold: float = 0.3) -> np.ndarray:
    """(B, M) True where a Lorentzian changes no measured point by more than `threshold` sigma:
    a parameter the fit no longer uses (its gradient vanishes, so no optimizer step revives it)."""
    a, g, w0 = lorentzians(theta, tau)
    t = np.where(data.mask, data.t, tau)
    chi = chi_values(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None],
                     t[None, None], data.n_pulses[None, None, :, None])
    c = np.exp(-chi.sum(1))[:, None]
    effect = np.where(data.mask, c * np.minimum(chi, 50.0) / np.where(data.mask, data.sigma, 1.0), 0.0)
    return effect.reshape(*effect.shape[:2], -1).max(-1) < threshold


def _lm(data, targets, theta0, tau, max_iter, rng=None, revivals: int = 0):
    """Batched LM; then, `revivals` times, the rows with dead Lorentzians get those re-drawn at random
    and are refitted, keeping whichever of old and new fits is better."""
    fun = _residual_fn(data, targets, tau)
    res = levenberg_marquardt(fun, theta0, max_iter=max_iter)
    theta, cost, iters = res.theta, res.cost, res.iterations
    for _ in range(revivals):
        dead = dead_lorentzians(theta, data, tau)
        rows = np.flatnonzero(dead.any(1))
        if rows.size == 0:
            break
        fresh = random_starts(rng, rows.size, dead.shape[1], data, tau).reshape(rows.size, -1, 3)
        trial = theta[rows].reshape(rows.size, -1, 3).copy()
        trial[dead[rows]] = fresh[dead[rows]]
        again = levenberg_marquardt(lambda th, idx, jac: fun(th, rows[idx], jac), trial.reshape(rows.size, -1),
                                    max_iter=max_iter)
        better = again.cost < cost[rows]
        theta[rows[better]], cost[rows[better]] = again.theta[better], again.cost[better]
        iters[rows] += again.iterations
    return theta, 2.0 * cost, iters


def fit_spectrum(data: CoherenceSet, cfg: FitConfig = FitConfig(), warm: SpectrumFit | None = None) -> SpectrumFit:
    """Fit, from `cfg.restarts` starts (random, or warm from a previous fit plus a fresh fraction),
    then bootstrap the band (module docstring). Never raises for a bad fit: `ok` and `message` say."""
    import time

    rng = np.random.default_rng(cfg.seed)
    m = cfg.lorentzians
    tau = float(np.nanmax(data.t))
    P = 3 * m
    dof = max(data.n_points - P, 1)
    timings = {}
    t0 = time.perf_counter()
    given = data.sigma_given
    fit_data = data if given else data.with_sigma(_rough_sigma(data))
    target = np.nan_to_num(fit_data.coherence)[None]
    redraw = lambda k: random_starts(rng, k, 1, data, tau)[:, 1:]  # noqa: E731  (ln g tau, ln w0 tau)

    def restarts(n_fresh: int, kept: np.ndarray, revivals: int = cfg.revivals, max_iter: int = cfg.max_iter):
        # fresh starts: widths and centres by variable projection in log-coherence; then every
        # start (and the kept ones) polished on the coherence residuals themselves
        phi0 = random_starts(rng, n_fresh, m, data, tau).reshape(n_fresh, m, 3)[..., 1:].reshape(n_fresh, 2 * m)
        a, g, w0, _, it_vp = varpro_fit(fit_data, phi0, tau, max_iter, redraw, revivals)
        theta0 = np.concatenate([kept, _theta(np.maximum(a, 1e-30 / tau**2), g, w0, tau)])
        theta, chi2, iters = _lm(fit_data, target, theta0, tau, cfg.max_iter)
        return theta, chi2, iters + np.concatenate([np.zeros(len(kept), dtype=np.int64), it_vp])

    if warm is None:
        theta, chi2, iters = restarts(cfg.restarts, np.zeros((0, P)))
    else:  # incremental update: the previous successes go straight to the polish, beside a few fresh
        kept = _theta(warm.a, warm.g, warm.w0, tau)[warm.success]
        # (the fresh ones are a probe for what the new curve may add, so they get no revivals and
        # half the iterations; if they find it, the cold fit below does the job properly)
        theta, chi2, iters = restarts(max(2, int(round(cfg.fresh_fraction * cfg.restarts))), kept,
                                      revivals=0, max_iter=cfg.max_iter // 2)
        warm_best = chi2[: len(kept)].min() if len(kept) else np.inf
        fresh_best = chi2[len(kept):].min()
        worst = worst_curve_chi2(theta[np.argmin(chi2)], fit_data, tau)
        if worst > WARM_REFIT_CHI2 or fresh_best < warm_best - (P + 3.0 * np.sqrt(2.0 * P)):
            # the new curve shows what the old population lacks (a fresh start beat every warm
            # one, or a curve stays badly fitted): a cold fit, the warm ones kept among its starts
            timings["warm_fallback"] = 1.0
            theta, chi2, iters = restarts(cfg.restarts, theta)
    timings["restarts_s"] = time.perf_counter() - t0
    chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
    best = int(np.argmin(chi2))
    sigma_scale = 1.0 if given else float(np.sqrt(chi2[best] / dof))  # relative to _rough_sigma
    chi2 = chi2 / sigma_scale**2
    success = chi2 <= chi2[best] + P + 3.0 * np.sqrt(2.0 * P)
    red = chi2[best] / dof
    ok = bool(np.isfinite(red) and (red <= CHI2_RED_FAIL or not given))
    message = (f"{success.sum()} of {len(chi2)} restarts succeeded; best reduced chi^2 {red:.3g}"
               + ("" if ok else f" > {CHI2_RED_FAIL}: no sum of {m} Lorentzians fits these curves"))
    band_data = fit_data if given else data.with_sigma(sigma_scale * _rough_sigma(data))
    # bootstrap: each successful restart refitted to its own noise-resampled copy around the best fit
    t1 = time.perf_counter()
    n_boot = max(cfg.restarts // 2, 20)
    if warm is not None and len(warm.boot_a):
        pool = np.concatenate([_theta(warm.boot_a, warm.boot_g, warm.boot_w0, tau), theta[success]])
    else:
        pool = theta[success]
    starts = pool[np.arange(n_boot) % len(pool)]
    c_best = model_coherence(theta[best : best + 1], tau, np.where(data.mask, data.t, tau), data.n_pulses)[0]
    noise = rng.standard_normal((n_boot, *data.t.shape)) * np.nan_to_num(band_data.sigma)
    targets = c_best[None] + noise
    b_theta, b_chi2, _ = _lm(band_data, targets, starts, tau, cfg.max_iter)
    fits_data = dof + 4.0 * np.sqrt(2.0 * dof) + P + 3.0 * np.sqrt(2.0 * P)
    b_ok = np.isfinite(b_chi2) & (b_chi2 <= fits_data)
    if not b_ok.any():
        b_ok = np.isfinite(b_chi2)
    timings["bootstrap_s"] = time.perf_counter() - t1
    a, g, w0 = lorentzians(theta, tau)
    draws = laplace_samples(band_data, theta[success], tau, rng)
    draws = draws[draw_chi2(draws, band_data, tau) <= fits_data]  # (b) of BAND_METHOD: only draws that fit
    population = np.concatenate([b_theta[b_ok], draws])
    if not len(population):  # nothing refitted and no draw fits: the successes themselves
        population = theta[success]
    ba, bg, bw0 = lorentzians(population, tau)
    return SpectrumFit(a=a, w0=w0, g=g, chi2=chi2, success=success, iterations=iters,
                       boot_a=ba, boot_w0=bw0, boot_g=bg, boot_chi2=b_chi2[b_ok],
                       sigma_used=np.nan_to_num(band_data.sigma), dof=dof, ok=ok, message=message,
                       omega_range=sensitive_band(data.t, data.n_pulses, data.coherence,
                                                  data.sigma if data.sigma_given else None),
                       timings=timings)


WARM_REFIT_CHI2 = 1.5
"""Incremental update: when the best warm fit leaves any curve with a reduced chi^2 above this,
the update falls back to a cold fit (the new curve revealed something the old population lacks)."""


def worst_curve_chi2(theta: np.ndarray, data: CoherenceSet, tau: float) -> float:
    """The largest per-curve reduced chi^2 of one parameter set."""
    r, _ = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau)(theta[None], np.zeros(1, dtype=int), False)
    per_curve = (r.reshape(data.t.shape) ** 2).sum(1) / np.maximum(data.mask.sum(1), 1)
    return float(per_curve.max())


LAPLACE_SAMPLES = 20
"""Parameter draws per successful restart from its Laplace (Gauss-Newton) posterior."""
LAPLACE_MAX_LOG_STD = 2.0
"""Cap on a log-parameter's Laplace std: a direction the data do not constrain at all is not sampled
beyond a factor e^2 (the band says so by being wide there, not infinite)."""


def laplace_samples(data: CoherenceSet, thetas: np.ndarray, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Draws theta ~ N(theta_i, (J^T J)^-1) around each successful restart i (the local width of
    the likelihood, which the restarts' spread alone misses), std capped at LAPLACE_MAX_LOG_STD."""
    fun = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau)
    _, J = fun(thetas, np.zeros(len(thetas), dtype=int), True)
    A = np.einsum("bnp,bnq->bpq", J, J)
    p = thetas.shape[1]
    cov = np.linalg.pinv(A + 1e-9 * np.einsum("bpp->b", A)[:, None, None] * np.eye(p), hermitian=True)
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 0.0, LAPLACE_MAX_LOG_STD**2)
    z = rng.standard_normal((len(thetas), LAPLACE_SAMPLES, p)) * np.sqrt(w)[:, None, :]
    draws = thetas[:, None, :] + np.einsum("bpq,bsq->bsp", v, z)
    return draws.reshape(-1, p)


def draw_chi2(thetas: np.ndarray, data: CoherenceSet, tau: float) -> np.ndarray:
    """chi^2 (B,) of parameter sets theta (B, 3M) against the measured curves (values-only kernel)."""
    r, _ = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau)(thetas, np.zeros(len(thetas), dtype=int), False)
    chi2 = np.einsum("bn,bn->b", r, r)
    return np.where(np.isfinite(chi2), chi2, np.inf)


def _rough_sigma(data: CoherenceSet) -> float:
    """A first guess of the noise when none is given: the scatter of successive differences."""
    d = np.diff(data.coherence, axis=1)
    d = d[np.isfinite(d)]
    return float(max(np.median(np.abs(d)) / 0.954, 1e-4)) if d.size else 0.01


def _theta(a: np.ndarray, g: np.ndarray, w0: np.ndarray, tau: float) -> np.ndarray:
    """The log-parameters of Lorentzians (R, M) -> theta (R, 3M)."""
    return np.stack([np.log(a * tau**2), np.log(g * tau), np.log(w0 * tau)], axis=-1).reshape(len(a), -1)
