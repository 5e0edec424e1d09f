"""The variational fit of a sum of Lorentzians to every coherence curve, from many starts at once,
with a calibrated confidence band, a reported spectrum that fits the data, and M chosen by an
information criterion (docs/physics.md section 3.3).

Model: every measured curve is C = A exp(-chi) + B, chi the sum of M Lorentzians' attenuations
(VQNS paper Eq. 1), A > 0 and B the readout amplitude and offset common to all curves (imperfect
bright/dark references scale and shift the coherence, docs/physics.md section 3.5; without them
the fit invents spectral features). A and B are profiled out exactly (weighted linear least
squares in every residual evaluation, Kaufman's projected Jacobian), so the optimizer moves only
the 3M log-parameters; P = 3M + 2 parameters count against the data.

How the spectrum and its band are made (also written into every output file, `BAND_METHOD`):
1. Restarts at one M: random starts, log-uniform over the probed band, fitted in widths and
   centres by variable projection in log-coherence (`varpro.py`: the best non-negative amplitudes
   solved exactly, dead Lorentzians re-drawn), then every parameter polished by batched
   Levenberg-Marquardt on (C_model - C) / sigma. From the second M on, most starts are
   continuations of the best fits at the previous M (a Lorentzian split in two, or one added at
   random, or one added with a negligible amplitude, which makes a larger M never worse in chi^2).
   A restart succeeds when its chi^2 is within P + 3 sqrt(2P) of the best.
2. M: fixed (`FitConfig.lorentzians`), or "auto": the ladder `LADDER`, each rung continued from the
   previous, scored by BIC = chi^2 + P ln N (sigma given) or N ln(RSS/N) + P ln N (no sigma), stopping
   once two rungs in a row have not improved it; the lowest wins (`SpectrumFit.selection` says so).
3. Reported spectrum (`SpectrumFit.point`, files' `S_fit`): the best restart's spectrum, a fit to
   the data (the population mean is not: it is heavy-tailed in S and lay above its own S_hi).
4. Band: the successful restarts refitted to noise-resampled copies of the data (parametric
   bootstrap around the best fit), plus Laplace (Gauss-Newton) draws around each success that still
   fit the data; 16th-84th percentile of that population's spectra at each frequency.
Without sigma, sigma is estimated from the residuals, so a reduced chi^2 of 1 says nothing; the
fit is then judged by the residuals' lag-1 autocorrelation per curve (`RESIDUAL_Z_FAIL`).
Parameters are logarithms (a = e^u / tau^2, g = e^v / tau, w0 = e^w / tau with tau the longest
time), so every step stays physical (a, g, w0 > 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .batched_lm import levenberg_marquardt
from .data import CoherenceSet
from .kernel import chi_and_grads, chi_values
from .spectrum import lorentzian_spectrum, sensitive_band
from .varpro import varpro_fit

BAND_METHOD = ("16th-84th percentile over frequency of the spectra of (a) the successful restarts "
               "refitted by Levenberg-Marquardt to noise-resampled copies of the data (parametric "
               "bootstrap around the best fit) and (b) Laplace (Gauss-Newton) draws around each "
               "successful restart that still fit the data (chi^2 <= dof + 4 sqrt(2 dof) + P + 3 sqrt(2P), "
               "the bootstrap refits' acceptance); success: chi^2 within P + 3 sqrt(2P) of the best restart; "
               "readout amplitude and offset profiled in every fit (C = A exp(-chi) + B)")
CHI2_RED_FAIL = 3.0
"""With sigma given: a best reduced chi^2 above this means no sum of Lorentzians fits the data."""
RESIDUAL_Z_FAIL = 3.0
"""Without sigma: the residuals' lag-1 autocorrelation, as a z-score combined over curves (or
`RESIDUAL_Z_CURVE_FAIL` for any one curve), above which the model misses structure in the data."""
RESIDUAL_Z_CURVE_FAIL = 4.0
NOISE_FREE_RMS = 1e-5
"""Without sigma: residuals below this RMS (coherence units) are numerical, not noise; the fit is ok."""
MAX_LORENTZIANS = 24
"""The largest M a fit takes (the paper fits its non-Lorentzian baths with 20)."""
LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24)
"""The values of M that `lorentzians="auto"` tries, in order, each continued from the previous."""
AUTO_PATIENCE = 2
"""`auto` stops after this many rungs in a row without a better criterion."""
MIN_READOUT_AMPLITUDE = 1e-3
"""The profiled readout amplitude A is kept above this (A > 0: a coherence cannot be inverted)."""


@dataclass(frozen=True)
class FitConfig:
    """Fit settings: Lorentzians per spectrum (1..MAX_LORENTZIANS or "auto"), random starts, LM
    iterations, random seed, whether the readout amplitude/offset are fitted."""

    lorentzians: int | str = "auto"
    restarts: int = 100
    max_iter: int = 150
    seed: int = 0
    fresh_fraction: float = 0.05
    """Incremental update: fresh random starts, as a fraction of `restarts`, beside the warm ones."""
    revivals: int = 3
    readout: bool = True
    """Fit C = A exp(-chi) + B (A, B profiled); False forces A = 1, B = 0."""

    def __post_init__(self) -> None:
        m = self.lorentzians
        if isinstance(m, str):
            if m != "auto":
                raise ValueError(f"FitConfig.lorentzians must be 1..{MAX_LORENTZIANS} or 'auto', got {m!r}")
        elif isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= MAX_LORENTZIANS:
            raise ValueError(f"FitConfig.lorentzians must be 1..{MAX_LORENTZIANS} or 'auto', got {m!r}")
        if self.restarts < 1:
            raise ValueError(f"FitConfig.restarts must be >= 1, got {self.restarts}")


@dataclass
class SpectrumFit:
    """Every restart's Lorentzians (R, M) in rad^2/s^2, rad/s, rad/s, their chi^2 and success, the
    bootstrap population (B, M) that makes the band, and the readout terms (C = A exp(-chi) + B)."""

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
    lorentzians: int = 0
    """M used."""
    selection: str = ""
    """How M was chosen, in words, with the criterion's values."""
    estimate: str = ""
    """What the point estimate (`point`, files' S_fit) is, in words."""
    amplitude: float = 1.0
    """Readout amplitude A of the point estimate (dimensionless)."""
    offset: float = 0.0
    """Readout offset B of the point estimate (coherence units)."""
    boot_amplitude: np.ndarray = field(default_factory=lambda: np.ones(0))
    boot_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rungs: dict = field(default_factory=dict)
    """Best chi^2 at every M tried ({M: chi^2}, against the sigma used; continuation makes it fall with M)."""

    @property
    def best(self) -> int:
        """Index of the restart with the lowest chi^2."""
        return int(np.argmin(self.chi2))

    def spectra(self, omega: np.ndarray) -> np.ndarray:
        """S(w) (B, F) of the bootstrap population, rad^2/s."""
        return lorentzian_spectrum(omega, self.boot_a, self.boot_w0, self.boot_g)

    def point(self, omega: np.ndarray) -> np.ndarray:
        """The reported spectrum S(w) (F,) in rad^2/s at omega (rad/s): the best fit to the data."""
        b = self.best
        return lorentzian_spectrum(omega, self.a[b], self.w0[b], self.g[b])

    def band(self, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S_fit, S_lo, S_hi) at omega (rad/s), rad^2/s: the point estimate and the population's
        16th/84th percentiles."""
        s = self.spectra(omega)
        return self.point(omega), np.percentile(s, 16, axis=0), np.percentile(s, 84, axis=0)

    def predict(self, n_pulses: int, t: np.ndarray, pi_s: float = 0.0) -> np.ndarray:
        """The measured coherence (T,) of CPMG-n (0 FID, 1 echo) at times t (s) with pi pulses of
        pi_s (s) that the point estimate predicts, readout terms included."""
        b = self.best
        return _predict(self.a[b : b + 1], self.w0[b : b + 1], self.g[b : b + 1], np.array([self.amplitude]),
                        np.array([self.offset]), n_pulses, t, pi_s)[0]

    def population_predictions(self, n_pulses: int, t: np.ndarray, pi_s: float = 0.0) -> np.ndarray:
        """`predict` (B, T) for every member of the band's population (its own readout terms)."""
        return _predict(self.boot_a, self.boot_w0, self.boot_g, self.boot_amplitude, self.boot_offset,
                        n_pulses, t, pi_s)


def _predict(a, w0, g, amp, off, n_pulses: int, t: np.ndarray, pi_s: float) -> np.ndarray:
    """A exp(-sum chi) + B (B, T) for Lorentzians (B, M) and readout terms (B,)."""
    t = np.asarray(t, dtype=float)
    chi = chi_values(a[:, :, None], w0[:, :, None], g[:, :, None], t[None, None], int(n_pulses), float(pi_s))
    return np.asarray(amp)[:, None] * np.exp(-chi.sum(1)) + np.asarray(off)[:, None]


def lorentzians(theta: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, g, w0), each (B, M), in rad^2/s^2, rad/s, rad/s, from log-parameters theta (B, 3M)."""
    p = np.exp(theta.reshape(theta.shape[0], -1, 3))
    return p[..., 0] / tau**2, p[..., 1] / tau, p[..., 2] / tau


def _grid(data: CoherenceSet, tau: float):
    """Times (S, T) with padding at tau, pulses (1, 1, S, 1), pi_s (1, 1, S, 1)."""
    return (np.where(data.mask, data.t, tau), data.n_pulses[None, None, :, None],
            np.asarray(data.pi_s, dtype=float)[None, None, :, None])


def model_coherence(theta: np.ndarray, tau: float, t: np.ndarray, n: np.ndarray,
                    pi_s: np.ndarray | None = None) -> np.ndarray:
    """exp(-sum_j chi_j) (B, S, T) for log-parameters theta (B, 3M) at times t (S, T) s, pulses n (S,),
    pi-pulse lengths pi_s (S,) s (readout terms not included)."""
    a, g, w0 = lorentzians(theta, tau)
    pi = np.zeros(len(n)) if pi_s is None else np.asarray(pi_s, dtype=float)
    chi = chi_values(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None],
                     t[None, None], n[None, None, :, None], pi[None, None, :, None])
    return np.exp(-chi.sum(1))


def readout_terms(e: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted least-squares A > 0, B (each (B,)) of y ~ A e + B, weights w (1/sigma): e, y
    (B, N) or broadcastable, w (N,)."""
    u, v, z = e * w, np.broadcast_to(w, e.shape), y * w
    uu, uv, vv = (u * u).sum(-1), (u * v).sum(-1), (v * v).sum(-1)
    uz, vz = (u * z).sum(-1), (v * z).sum(-1)
    det = uu * vv - uv**2
    safe = np.abs(det) > 1e-12 * np.maximum(uu * vv, 1e-300)
    amp = np.where(safe, (uz * vv - uv * vz) / np.where(safe, det, 1.0), 1.0)
    amp = np.where(np.isfinite(amp), np.maximum(amp, MIN_READOUT_AMPLITUDE), 1.0)
    off = (vz - amp * uv) / np.maximum(vv, 1e-300)
    return amp, off


def _residual_fn(data: CoherenceSet, targets: np.ndarray, tau: float, readout: bool = True):
    """Weighted residuals (A e + B - target) / sigma (B, S*T), e = exp(-sum chi), with A, B profiled
    per row (`readout`; else A = 1, B = 0), and their Jacobian in theta (Kaufman's variable-projection
    Jacobian: the fixed-(A, B) Jacobian projected off the span of the A and B columns), with the chain
    rule d/du = a d/da (and so on) through the log-parameters. `fun.readout(theta, rows)` gives (A, B)."""
    mask = data.mask
    t, n, pi = _grid(data, tau)
    w = np.where(mask, 1.0 / np.where(mask, data.sigma, 1.0), 0.0)
    wf = w.ravel()

    def model(theta, rows, jac):
        a, g, w0 = lorentzians(theta, tau)
        args = (a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None], t[None, None], n, pi)
        grads = chi_and_grads(*args) if jac else (chi_values(*args),)  # trial steps: values only
        e = np.exp(-grads[0].sum(1))
        y = targets[rows % targets.shape[0]]
        if readout:
            amp, off = readout_terms(e.reshape(len(theta), -1), y.reshape(len(theta), -1), wf)
        else:
            amp, off = np.ones(len(theta)), np.zeros(len(theta))
        return a, g, w0, e, y, amp, off, grads

    def fun(theta: np.ndarray, rows: np.ndarray, jac: bool):
        a, g, w0, e, y, amp, off, grads = model(theta, rows, jac)
        bsz = len(theta)
        r = ((amp[:, None, None] * e + off[:, None, None] - y) * w).reshape(bsz, -1)
        if not jac:
            return r, None
        _, d_a, d_g, d_w0 = grads
        cw = -(amp[:, None, None] * e * w)[:, None]  # dr/dchi_j, (B, 1, S, T)
        parts = [cw * d_a * a[:, :, None, None], cw * d_g * g[:, :, None, None], cw * d_w0 * w0[:, :, None, None]]
        J = np.stack(parts, axis=2).reshape(bsz, -1, r.shape[1]).transpose(0, 2, 1)  # (B, N, P)
        if readout:  # project off span{w, e w} (orthonormal q1, q2 per row)
            q1 = np.broadcast_to(wf / max(np.linalg.norm(wf), 1e-300), (bsz, wf.size))
            u = e.reshape(bsz, -1) * wf
            u = u - (u * q1).sum(1, keepdims=True) * q1
            nu = np.linalg.norm(u, axis=1, keepdims=True)
            q2 = np.where(nu > 1e-12 * np.linalg.norm(wf), u / np.maximum(nu, 1e-300), 0.0)
            for q in (q1, q2):
                J = J - q[:, :, None] * np.einsum("bn,bnp->bp", q, J)[:, None, :]
        return r, J

    def terms(theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(theta):
            return np.ones(0), np.zeros(0)
        *_, amp, off, _ = model(theta, rows, False)
        return amp, off

    fun.readout = terms
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
    t, n, pi = _grid(data, tau)
    chi = chi_values(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None], t[None, None], n, pi)
    c = np.exp(-chi.sum(1))[:, None]
    effect = np.where(data.mask, c * np.minimum(chi, 50.0) / np.where(data.mask, data.sigma, 1.0), 0.0)
    return effect.reshape(*effect.shape[:2], -1).max(-1) < threshold


LM_FTOL = 1e-5
"""LM on the coherence residuals stops when a Gauss-Newton-like step lowers chi^2 by less than this
fraction (about 0.005 in chi^2 at N = 600 points: far below a meaningful difference; 1e-7 made
over-complete fits crawl along their flat directions to the iteration cap)."""


def _lm(data, targets, theta0, tau, max_iter, rng=None, revivals: int = 0, readout: bool = True):
    """Batched LM; then, `revivals` times, the rows with dead Lorentzians get those re-drawn at random
    and are refitted, keeping whichever of old and new fits is better. Returns theta, chi^2, iterations."""
    fun = _residual_fn(data, targets, tau, readout)
    res = levenberg_marquardt(fun, theta0, max_iter=max_iter, ftol=LM_FTOL)
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
                                    max_iter=max_iter, ftol=LM_FTOL)
        better = again.cost < cost[rows]
        theta[rows[better]], cost[rows[better]] = again.theta[better], again.cost[better]
        iters[rows] += again.iterations
    return theta, 2.0 * cost, iters


def grow_starts(theta: np.ndarray, chi2: np.ndarray, m_new: int, count: int, rng: np.random.Generator,
                data: CoherenceSet, tau: float) -> np.ndarray:
    """`count` starts (count, 3 m_new) continued from the best rows of theta (R, 3m) with their chi^2:
    the first is the best fit plus Lorentzians of negligible amplitude (chi^2 unchanged: a larger M is
    never worse); the others cycle over the best rows with one Lorentzian (drawn by area) split in two
    (half the amplitude each, centres or widths e^+-0.35 apart), or new random ones added small."""
    m = theta.shape[1] // 3
    extra = m_new - m
    order = np.argsort(chi2)
    order = order[np.isfinite(chi2[order])]
    if order.size == 0 or count < 1:
        return np.zeros((0, 3 * m_new))
    top = order[: max(1, min(order.size, count // 3))]
    out = []
    for k in range(count):
        rows = theta[top[k % top.size]].reshape(m, 3).copy()
        variant = 0 if k == 0 else 1 + (k // top.size) % 3
        if variant == 0 or variant == 3:  # added: negligible, or small random ones
            new = random_starts(rng, 1, extra, data, tau).reshape(extra, 3)
            new[:, 0] = -30.0 if variant == 0 else new[:, 0] - 3.0
            rows = np.concatenate([rows, new])
        else:  # split one Lorentzian (by area) in two, `extra` times
            for _ in range(extra):
                area = np.exp(rows[:, 0])
                j = int(rng.choice(len(rows), p=area / area.sum())) if np.isfinite(area.sum()) and area.sum() > 0 else 0
                la, lg, lw = rows[j]
                d = 0.35 * rng.choice([-1.0, 1.0])
                if variant == 1 and lw > lg - 1.0:  # a line: split its centre
                    pair = [[la - np.log(2), lg, lw - d], [la - np.log(2), lg, lw + d]]
                else:  # a broad one (or variant 2): split its width
                    pair = [[la - np.log(2), lg - d, lw], [la - np.log(2), lg + d, lw]]
                rows = np.concatenate([np.delete(rows, j, 0), np.array(pair)])
        out.append(rows.reshape(-1))
    return np.array(out)


def shrink_starts(theta: np.ndarray, chi2: np.ndarray, m_new: int, count: int) -> np.ndarray:
    """Starts (count, 3 m_new) from the best rows of theta (R, 3m) with their smallest-area Lorentzians dropped."""
    m = theta.shape[1] // 3
    order = np.argsort(chi2)[:count]
    rows = theta[order].reshape(len(order), m, 3)
    keep = np.sort(np.argsort(-rows[..., 0], axis=1)[:, :m_new], axis=1)
    return np.take_along_axis(rows, keep[..., None], axis=1).reshape(len(order), 3 * m_new)


GREEDY_GRID = (32, 8, 7)
"""Continuation to more Lorentzians: the grid (centres, widths, amplitudes) over the probed band on
which each added Lorentzian is placed where it lowers chi^2 most."""
GREEDY_STARTS = 12
"""At most this many starts per rung come from that greedy placement."""


@dataclass
class _Rung:
    """The restarts at one M: log-parameters (R, 3M), chi^2 against the fit's sigma, iterations."""

    m: int
    theta: np.ndarray
    chi2: np.ndarray
    iters: np.ndarray


class _Fitter:
    """What every rung of one fit shares: data, sigma used, tau, random generator, settings."""

    def __init__(self, data: CoherenceSet, cfg: FitConfig, rng: np.random.Generator):
        self.data, self.cfg, self.rng = data, cfg, rng
        self.tau = float(np.nanmax(data.t))
        self.given = data.sigma_given
        self.rough = 1.0 if self.given else _rough_sigma(data)
        self.fit_data = data if self.given else data.with_sigma(self.rough)
        self.target = np.nan_to_num(self.fit_data.coherence)[None]
        self.n = data.n_points

    def params(self, m: int) -> int:
        """Parameters P of M Lorentzians plus the readout terms."""
        return 3 * m + (2 if self.cfg.readout else 0)

    def criterion(self, rung: _Rung) -> float:
        """BIC: chi^2 + P ln N (sigma given) or N ln(RSS/N) + P ln N."""
        best = float(np.min(rung.chi2))
        p = self.params(rung.m)
        if self.given:
            return best + p * np.log(self.n)
        rss = max(best * self.rough**2, 1e-300)
        return self.n * np.log(rss / self.n) + p * np.log(self.n)

    def polish(self, theta0: np.ndarray, revivals: int = 0, max_iter: int | None = None):
        """LM on the coherence residuals: theta, chi^2, iterations."""
        if not len(theta0):
            return theta0, np.zeros(0), np.zeros(0, dtype=np.int64)
        return _lm(self.fit_data, self.target, theta0, self.tau, max_iter or self.cfg.max_iter, self.rng,
                   revivals, self.cfg.readout)

    def fresh(self, count: int, m: int, revivals: int, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """Random starts fitted by variable projection: theta (count, 3M), iterations."""
        if count < 1:
            return np.zeros((0, 3 * m)), np.zeros(0, dtype=np.int64)
        phi0 = random_starts(self.rng, count, m, self.data, self.tau).reshape(count, m, 3)[..., 1:].reshape(count, -1)
        redraw = lambda k: random_starts(self.rng, k, 1, self.data, self.tau)[:, 1:]  # noqa: E731
        a, g, w0, _, it = varpro_fit(self.fit_data, phi0, self.tau, max_iter, redraw, revivals)
        return _theta(np.maximum(a, 1e-30 / self.tau**2), g, w0, self.tau), it

    def added_starts(self, prev: _Rung, m: int, count: int) -> np.ndarray:
        """`count` starts (count, 3M) from the best rows of `prev` with M - prev.m Lorentzians added
        where the residuals want them: each added one the best of a grid of centres, widths and
        amplitudes (GREEDY_GRID) scored by the exact chi^2 with the others held and the readout terms
        re-profiled; the first addition takes the best distinct grid cells, later ones the best."""
        order = np.argsort(prev.chi2)
        order = order[np.isfinite(prev.chi2[order])]
        if count < 1 or order.size == 0:
            return np.zeros((0, 3 * m))
        data, tau = self.fit_data, self.tau
        t, n, pi = _grid(data, tau)
        w_lo, w_hi = sensitive_band(data.t, data.n_pulses, data.coherence, data.sigma if self.given else None)
        nw, ng, na = GREEDY_GRID
        lw = np.linspace(np.log(w_lo * tau), np.log(w_hi * tau), nw)
        lg = np.linspace(np.log(w_lo * tau) - 1.0, np.log(w_hi * tau), ng)
        LW, LG = (x.ravel() for x in np.meshgrid(lw, lg, indexing="ij"))
        k = chi_values(1.0, (np.exp(LW) / tau)[:, None, None], (np.exp(LG) / tau)[:, None, None], t[None],
                       n[0], pi[0]).reshape(LW.size, -1)  # (C, N) per unit a
        la = np.maximum(LG, 0.0)[:, None] + np.linspace(-4.0, 2.0, na)[None, :]  # (C, na), as random_starts
        chi_c = (np.exp(la) / tau**2)[:, :, None] * k[:, None, :]  # (C, na, N)
        wf = np.where(data.mask, 1.0 / np.where(data.mask, data.sigma, 1.0), 0.0).ravel()
        y = self.target[0].ravel()

        def scores(theta_row):
            e = model_coherence(theta_row[None], tau, t, data.n_pulses, data.pi_s)[0].ravel()
            e_new = e[None, None] * np.exp(-chi_c)
            if self.cfg.readout:
                amp, off = readout_terms(e_new, y[None, None], wf)
            else:
                amp, off = np.ones(e_new.shape[:2]), np.zeros(e_new.shape[:2])
            r = (amp[..., None] * e_new + off[..., None] - y) * wf
            return np.where(np.isfinite(c := (r * r).sum(-1)), c, np.inf)  # (C, na)

        def add(theta_row, cell, amp_k):
            return np.concatenate([theta_row, [la[cell, amp_k], LG[cell], LW[cell]]])

        rows = order[: max(1, min(order.size, 3))]
        per_row = -(-count // rows.size)
        out = []
        for i in rows:
            sc = scores(prev.theta[i])
            best_a = np.argmin(sc, axis=1)
            cells = np.argsort(sc[np.arange(len(sc)), best_a])[:per_row]
            for c in cells:
                th = add(prev.theta[i], c, best_a[c])
                for _ in range(m - prev.m - 1):
                    sc2 = scores(th)
                    c2, a2 = np.unravel_index(np.argmin(sc2), sc2.shape)
                    th = add(th, c2, a2)
                out.append(th)
        return np.array(out[:count])

    def rung(self, m: int, prev: _Rung | None, count: int, extra: np.ndarray | None = None,
             fresh_share: float | None = None) -> _Rung:
        """Restarts at M: fresh ones and (from `prev`) continuations, plus `extra` starts, all polished."""
        cfg = self.cfg
        if prev is None:
            n_fresh = count
        else:
            n_fresh = int(round(count * (fresh_share if fresh_share is not None else (0.5 if m <= 4 else 0.1))))
        theta_f, it_f = self.fresh(n_fresh, m, cfg.revivals if prev is None else min(cfg.revivals, 1), cfg.max_iter)
        parts, its = [theta_f], [it_f]
        if prev is not None:
            if prev.m < m:
                n_add = min((count - n_fresh) // 3, GREEDY_STARTS)
                cont = np.concatenate([self.added_starts(prev, m, n_add), grow_starts(
                    prev.theta, prev.chi2, m, count - n_fresh - n_add, self.rng, self.data, self.tau)])
            else:
                cont = shrink_starts(prev.theta, prev.chi2, m, count - n_fresh)
            parts.append(cont)
            its.append(np.zeros(len(cont), dtype=np.int64))
        if extra is not None and len(extra):
            parts.insert(0, extra)
            its.insert(0, np.zeros(len(extra), dtype=np.int64))
        theta0 = np.concatenate(parts)
        theta, chi2, iters = self.polish(theta0)  # revivals: the continuations' added Lorentzians already are
        chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
        return _Rung(m, theta, chi2, iters + np.concatenate(its))


def _ladder_below(m: int) -> list[int]:
    """Continuation rungs up to a fixed M: the ladder's values below M (1, 2, 3, 4, 6, ...), then M
    itself. Random starts alone reach the right basin rarely even at M = 3 (a few in 100 on a
    3-Lorentzian bath); continuation from the best fits at fewer Lorentzians reaches it reliably."""
    return [r for r in LADDER if r < m] + [m]


def fit_spectrum(data: CoherenceSet, cfg: FitConfig = FitConfig(), warm: SpectrumFit | None = None) -> SpectrumFit:
    """Fit, from `cfg.restarts` starts (random, continued from fewer Lorentzians, or warm from a previous
    fit plus a fresh fraction), choose M ("auto"), then bootstrap the band (module docstring). Never
    raises for a bad fit: `ok` and `message` say."""
    rng = np.random.default_rng(cfg.seed)
    fitter = _Fitter(data, cfg, rng)
    timings: dict = {}
    t0 = time.perf_counter()
    auto = cfg.lorentzians == "auto"
    scores: dict[int, float] = {}
    rungs: dict[int, float] = {}
    chosen: _Rung | None = None
    how = ""
    warm_m = int(warm.lorentzians or warm.a.shape[1]) if warm is not None else 0
    if warm is not None and (auto or warm_m == cfg.lorentzians):
        chosen, how = _warm_update(fitter, warm, warm_m, auto, scores, timings, rungs)
    if chosen is None:
        scores.clear()
        rungs.clear()
        chosen, how = _cold(fitter, auto, scores, warm, rungs)
    timings["restarts_s"] = time.perf_counter() - t0
    m = chosen.m
    criterion = ("BIC = chi^2 + P ln N" if fitter.given else "BIC = N ln(RSS/N) + P ln N (sigma not given)")
    listed = ", ".join(f"M={k}: {v:.1f}" + (" (chosen)" if k == m else "") for k, v in sorted(scores.items()))
    if auto:
        selection = f"auto: {criterion}, P = 3M + {fitter.params(0)}, N = {fitter.n}: {listed}; {how}"
    else:
        selection = f"fixed: M = {m} (FitConfig.lorentzians); {how}" + (f"; {criterion}: {listed}" if listed else "")
    fit = _finish(fitter, chosen, selection, timings, warm)
    scale = fit.chi2[fit.best] / chosen.chi2.min() if chosen.chi2.min() > 0 else 1.0
    fit.rungs = {k: float(v * scale) for k, v in sorted(rungs.items())}
    return fit


def _cold(fitter: _Fitter, auto: bool, scores: dict, warm: SpectrumFit | None, rungs: dict) -> tuple[_Rung, str]:
    """A fit from scratch: the auto ladder, or the continuation rungs up to the fixed M."""
    cfg = fitter.cfg
    R = cfg.restarts
    extra_for = {}
    if warm is not None and len(warm.a):  # a cold fallback keeps the previous successes among its starts
        extra_for[warm.a.shape[1]] = _theta(warm.a, warm.g, warm.w0, fitter.tau)[warm.success]
    if not auto:
        prev = None
        steps = _ladder_below(int(cfg.lorentzians))
        for k, m in enumerate(steps):
            last = k == len(steps) - 1
            prev = fitter.rung(m, prev, R if last else max(R // 4, 4), extra_for.get(m))
            rungs[m] = float(prev.chi2.min())
            if len(steps) > 1:
                scores[m] = fitter.criterion(prev)
        text = "continued from M = " + ", ".join(map(str, steps[:-1])) if len(steps) > 1 else "one rung"
        return prev, text
    prev, best, since = None, None, 0
    kept: dict[int, _Rung] = {}
    stop = f"stopped after {AUTO_PATIENCE} rungs without improvement"
    for m in LADDER:
        prev = fitter.rung(m, prev, R if m <= 4 else max(R // 4, 4), extra_for.get(m))
        kept[m] = prev
        rungs[m] = float(prev.chi2.min())
        scores[m] = fitter.criterion(prev)
        if best is None or scores[m] < scores[best]:
            best, since = m, 0
        else:
            since += 1
            if since >= AUTO_PATIENCE:
                break
    else:
        stop = f"ladder ended at M = {LADDER[-1]}"
    return kept[best], stop


def _warm_update(fitter: _Fitter, warm: SpectrumFit, m0: int, auto: bool, scores: dict,
                 timings: dict, rungs: dict) -> tuple[_Rung | None, str]:
    """Incremental update: the previous successes go straight to the polish, beside a few fresh
    probes (no revivals, half the iterations); with "auto" also the neighbouring rungs (one
    Lorentzian-step up by continuation, one down by dropping the smallest). None: a cold fit is needed
    (a fresh start beat every warm one, or a curve stays badly fitted)."""
    cfg = fitter.cfg
    tau = fitter.tau
    order = np.argsort(np.where(warm.success, warm.chi2, np.inf))[: max(int(warm.success.sum()), 1)]
    kept = _theta(warm.a, warm.g, warm.w0, tau)[order[: max(cfg.restarts // 4, 4)]]  # the best successes
    theta_f, it_f = fitter.fresh(max(2, int(round(cfg.fresh_fraction * cfg.restarts))), m0, 0, cfg.max_iter // 2)
    theta, chi2, iters = fitter.polish(np.concatenate([kept, theta_f]), max_iter=cfg.max_iter // 2)
    chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
    P = fitter.params(m0)
    warm_best = chi2[: len(kept)].min() if len(kept) else np.inf
    fresh_best = chi2[len(kept):].min()
    worst = worst_curve_chi2(theta[np.argmin(chi2)], fitter.fit_data, tau, cfg.readout)
    if not fitter.given:
        worst /= float(np.min(chi2)) / max(fitter.n - P, 1)  # per-curve against the estimated sigma
    if worst > WARM_REFIT_CHI2 or fresh_best < warm_best - (P + 3.0 * np.sqrt(2.0 * P)):
        timings["warm_fallback"] = 1.0
        return None, ""
    here = _Rung(m0, theta, chi2, iters + np.concatenate([np.zeros(len(kept), dtype=np.int64), it_f]))
    rungs[m0] = float(chi2.min())
    if not auto:
        return here, f"warm update from the previous fit's {len(kept)} successes"
    scores[m0] = fitter.criterion(here)
    candidates = {m0: here}
    k = LADDER.index(m0) if m0 in LADDER else None
    n_side = max(4, cfg.restarts // 10)
    if k is not None and k + 1 < len(LADDER):
        up = fitter.rung(LADDER[k + 1], here, n_side, fresh_share=0.0)
        candidates[up.m], scores[up.m], rungs[up.m] = up, fitter.criterion(up), float(up.chi2.min())
    if k is not None and k > 0:
        down = fitter.rung(LADDER[k - 1], here, n_side, fresh_share=0.0)
        candidates[down.m], scores[down.m], rungs[down.m] = down, fitter.criterion(down), float(down.chi2.min())
    best = min(scores, key=scores.get)
    return candidates[best], f"warm update: M = {m0} and its neighbours on the ladder"


def _finish(fitter: _Fitter, chosen: _Rung, selection: str, timings: dict, warm: SpectrumFit | None) -> SpectrumFit:
    """Success, ok and message, the band's population (bootstrap + Laplace) and the point estimate."""
    cfg, data, tau, rng = fitter.cfg, fitter.data, fitter.tau, fitter.rng
    theta, chi2, iters, m = chosen.theta, chosen.chi2, chosen.iters, chosen.m
    P = fitter.params(m)
    dof = max(data.n_points - P, 1)
    best = int(np.argmin(chi2))
    sigma_scale = 1.0 if fitter.given else float(np.sqrt(chi2[best] / dof))  # relative to the rough sigma
    sigma_scale = sigma_scale if sigma_scale > 0 and np.isfinite(sigma_scale) else 1.0
    chi2 = chi2 / sigma_scale**2
    success = chi2 <= chi2[best] + P + 3.0 * np.sqrt(2.0 * P)
    red = chi2[best] / dof
    band_data = fitter.fit_data if fitter.given else data.with_sigma(sigma_scale * fitter.rough)
    fun = _residual_fn(band_data, np.nan_to_num(data.coherence)[None], tau, cfg.readout)
    r_best, _ = fun(theta[best : best + 1], np.zeros(1, dtype=int), False)
    if fitter.given:
        ok = bool(np.isfinite(red) and red <= CHI2_RED_FAIL)
        message = (f"{success.sum()} of {len(chi2)} restarts succeeded; M = {m}; best reduced chi^2 {red:.3g}"
                   + ("" if ok else f" > {CHI2_RED_FAIL}: no sum of {m} Lorentzians fits these curves"))
    else:
        z_all, z_max = residual_autocorrelation(r_best[0].reshape(data.t.shape), data.mask)
        z_var = curve_variance_z(r_best[0].reshape(data.t.shape), data.mask)
        rms = float(np.sqrt(chi2[best] / data.n_points)) * sigma_scale * fitter.rough
        ok = bool(np.isfinite(red) and (rms < NOISE_FREE_RMS or (z_all <= RESIDUAL_Z_FAIL
                                                                 and max(z_max, z_var) <= RESIDUAL_Z_CURVE_FAIL)))
        message = (f"{success.sum()} of {len(chi2)} restarts succeeded; M = {m}; sigma not given: estimated "
                   f"from the residuals as {sigma_scale * fitter.rough:.3g}, so the reduced chi^2 (1 by "
                   f"construction) says nothing; residuals' lag-1 autocorrelation z = {z_all:.2f} over curves, "
                   f"{z_max:.2f} worst curve; per-curve residual variance z {z_var:.2f} worst curve")
        message += ("" if ok else f" (> {RESIDUAL_Z_FAIL} or {RESIDUAL_Z_CURVE_FAIL}): the residuals have "
                    f"structure, no sum of {m} Lorentzians fits these curves")
    # bootstrap: each successful restart refitted to its own noise-resampled copy around the best fit
    t1 = time.perf_counter()
    n_boot = max(cfg.restarts // (2 if warm is None else 4), 20)
    pool = theta[success]
    if warm is not None and len(warm.boot_a) and warm.boot_a.shape[1] == m:
        pool = np.concatenate([_theta(warm.boot_a, warm.boot_g, warm.boot_w0, tau), pool])
    starts = pool[np.arange(n_boot) % len(pool)]
    amp_b, off_b = fun.readout(theta[best : best + 1], np.zeros(1, dtype=int))
    t_pad, _, _ = _grid(data, tau)
    c_best = amp_b[0] * model_coherence(theta[best : best + 1], tau, t_pad, data.n_pulses, data.pi_s)[0] + off_b[0]
    noise = np.zeros((n_boot, *data.t.shape))  # drawn at the measured points only: the same whatever the padding
    noise[:, data.mask] = rng.standard_normal((n_boot, int(data.mask.sum())))
    noise *= np.nan_to_num(band_data.sigma)
    targets = c_best[None] + noise
    b_theta, b_chi2, _ = _lm(band_data, targets, starts, tau, cfg.max_iter, readout=cfg.readout)
    b_amp, b_off = _residual_fn(band_data, targets, tau, cfg.readout).readout(b_theta, np.arange(n_boot))
    fits_data = dof + 4.0 * np.sqrt(2.0 * dof) + P + 3.0 * np.sqrt(2.0 * P)
    b_ok = np.isfinite(b_chi2) & (b_chi2 <= fits_data)
    if not b_ok.any():
        b_ok = np.isfinite(b_chi2)
    timings["bootstrap_s"] = time.perf_counter() - t1
    draws = laplace_samples(band_data, theta[success], tau, rng, cfg.readout)
    draws = draws[draw_chi2(draws, band_data, tau, cfg.readout) <= fits_data]  # (b) of BAND_METHOD
    d_amp, d_off = fun.readout(draws, np.zeros(len(draws), dtype=int))
    population = np.concatenate([b_theta[b_ok], draws])
    p_amp, p_off = np.concatenate([b_amp[b_ok], d_amp]), np.concatenate([b_off[b_ok], d_off])
    if not len(population):  # nothing refitted and no draw fits: the successes themselves
        population = theta[success]
        p_amp, p_off = fun.readout(population, np.zeros(len(population), dtype=int))
    a, g, w0 = lorentzians(theta, tau)
    ba, bg, bw0 = lorentzians(population, tau)
    estimate = (f"best fit: the lowest-chi^2 restart of {len(chi2)} with M = {m} Lorentzians (reduced chi^2 "
                f"{red:.3g}), readout amplitude {amp_b[0]:.4g}, offset {off_b[0]:+.4g}")
    return SpectrumFit(a=a, w0=w0, g=g, chi2=chi2, success=success, iterations=chosen.iters,
                       boot_a=ba, boot_w0=bw0, boot_g=bg, boot_chi2=b_chi2[b_ok],
                       sigma_used=np.nan_to_num(band_data.sigma), dof=dof, ok=ok, message=message,
                       omega_range=sensitive_band(data.t, data.n_pulses, data.coherence,
                                                  data.sigma if data.sigma_given else None),
                       timings=timings, lorentzians=m, selection=selection, estimate=estimate,
                       amplitude=float(amp_b[0]), offset=float(off_b[0]), boot_amplitude=p_amp, boot_offset=p_off)


def residual_autocorrelation(r: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Lag-1 autocorrelation of each curve's residuals r (S, T) in time order, as z-scores
    (rho + 1/n) sqrt(n) (about N(0, 1) for white noise): (combined over curves, largest curve)."""
    z = []
    for i in range(r.shape[0]):
        x = r[i][mask[i]]
        x = x - x.mean()
        n = x.size
        if n < 4 or not (x @ x) > 0:
            continue
        rho = float(x[:-1] @ x[1:]) / float(x @ x)
        z.append((rho + 1.0 / n) * np.sqrt(n))
    if not z:
        return 0.0, 0.0
    return float(np.sum(z) / np.sqrt(len(z))), float(np.max(z))


def curve_variance_z(r: np.ndarray, mask: np.ndarray) -> float:
    """Largest per-curve z = (sum r^2 - n) / sqrt(2n) of normalized residuals r (S, T) (chi^2_n under
    noise of the estimated size): a curve fitted much worse than the others."""
    n = mask.sum(1)
    ss = np.where(mask, r, 0.0) ** 2
    z = (ss.sum(1) - n) / np.sqrt(2.0 * np.maximum(n, 1))
    return float(z[n > 0].max()) if (n > 0).any() else 0.0


WARM_REFIT_CHI2 = 1.5
"""Incremental update: when the best warm fit leaves any curve with a reduced chi^2 above this,
the update falls back to a cold fit (the new curve revealed something the old population lacks)."""


def worst_curve_chi2(theta: np.ndarray, data: CoherenceSet, tau: float, readout: bool = True) -> float:
    """The largest per-curve reduced chi^2 of one parameter set."""
    fun = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau, readout)
    r, _ = fun(theta[None], np.zeros(1, dtype=int), False)
    per_curve = (r.reshape(data.t.shape) ** 2).sum(1) / np.maximum(data.mask.sum(1), 1)
    return float(per_curve.max())


LAPLACE_SAMPLES = 20
"""Parameter draws per successful restart from its Laplace (Gauss-Newton) posterior."""
LAPLACE_MAX_LOG_STD = 2.0
"""Cap on a log-parameter's Laplace std: a direction the data do not constrain at all is not sampled
beyond a factor e^2 (the band says so by being wide there, not infinite)."""


def laplace_samples(data: CoherenceSet, thetas: np.ndarray, tau: float, rng: np.random.Generator,
                    readout: bool = True) -> np.ndarray:
    """Draws theta ~ N(theta_i, (J^T J)^-1) around each successful restart i (the local width of
    the likelihood, which the restarts' spread alone misses; J with the readout terms profiled
    out), std capped at LAPLACE_MAX_LOG_STD."""
    fun = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau, readout)
    _, J = fun(thetas, np.zeros(len(thetas), dtype=int), True)
    A = np.einsum("bnp,bnq->bpq", J, J)
    p = thetas.shape[1]
    cov = np.linalg.pinv(A + 1e-9 * np.einsum("bpp->b", A)[:, None, None] * np.eye(p), hermitian=True)
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 0.0, LAPLACE_MAX_LOG_STD**2)
    z = rng.standard_normal((len(thetas), LAPLACE_SAMPLES, p)) * np.sqrt(w)[:, None, :]
    draws = thetas[:, None, :] + np.einsum("bpq,bsq->bsp", v, z)
    return draws.reshape(-1, p)


def draw_chi2(thetas: np.ndarray, data: CoherenceSet, tau: float, readout: bool = True) -> np.ndarray:
    """chi^2 (B,) of parameter sets theta (B, 3M) against the measured curves (values-only kernel)."""
    fun = _residual_fn(data, np.nan_to_num(data.coherence)[None], tau, readout)
    r, _ = fun(thetas, np.zeros(len(thetas), dtype=int), False)
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
