"""VQNS noise spectroscopy benchmark: the numbers issue 13 asks for, then the older comparisons.

    python benchmarks/bench_vqns.py [--quick] [--sections speed,incremental,accuracy,nnls,baseline,kernel]

Every figure is measured in this run (wall times on this machine, whatever else it runs: the load
average is printed). Default sections: speed, incremental, accuracy, nnls; `--quick` runs a reduced
configuration (fewer restarts, noisy cases only) whose PASS/FAIL lines are marked as such.

speed        fit_spectrum, 100 restarts, 10 sequences (echo .. CPMG-32) of 60 log-spaced points, Gaussian
             noise sigma = 0.01 on a 3-Lorentzian bath (truth by firmware_sim's quadrature): wall time with
             8 Lorentzians (goal <= 20 s on 2 cores) and with 20 (goal <= 60 s).
incremental  the same curves: cold fit of all 10 vs fit of the first 9 then `fit_spectrum(data10, cfg,
             warm=fit9)`, with the loop's default FitConfig (lorentzians="auto"): time ratio warm/cold
             (goal <= 0.1).
accuracy     Lorentzian (3 lines), 1/f, Ohmic, NV-proton-like (narrow line on a broad background) baths:
             truth coherence by firmware_sim.qubit's quadrature (independent of the model), once with
             photon shot noise (10^7 shots per point: sigma ~ 0.01-0.015) and once noise-free (fitted
             with the same sigma as error bars); FitConfig(lorentzians="auto"). Columns and goals are
             defined in the printout.
nnls         models/vqns/nnls.py (batched non-negative amplitudes) against scipy.optimize.nnls row by row.
baseline     the first pass's comparison with a paper-style Adam loop (3 Lorentzians, 7 curves).
kernel       the values-only kernel against the one with gradients.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, OneOverFNoise, chi_quadrature,
                                        filter_function_cpmg, shot_noise_coherence)
from nvscope.models.vqns import fit as fit_module, proposal as proposal_module, varpro as varpro_module
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.data import CoherenceSet, coherence_set
from nvscope.models.vqns.fit import FitConfig, SpectrumFit, fit_spectrum, random_starts
from nvscope.models.vqns.kernel import chi_and_grads, chi_values, lorentzian_j, lorentzian_j_values
from nvscope.models.vqns.nnls import nnls_batched

TWO_PI = 2 * np.pi
A3 = np.array([4e10, 2e11, 1e10])  # rad^2/s^2
W3 = np.array([TWO_PI * 5e4, TWO_PI * 2e6, TWO_PI * 0.5e6])  # rad/s
G3 = np.array([1e5, 3e5, 5e4])  # rad/s
THREE_LINES = NoiseSpectrum(tuple(LorentzianNoise(A3[j], W3[j], G3[j]) for j in range(3)))
RESTARTS = 100
QUICK_RESTARTS = 30

# speed / incremental data set: 10 sequences of 60 points
SPEED_NS = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
SPEED_T = (0.1e-6, 30e-6, 60)
SPEED_SIGMA = 0.01

# accuracy
REPETITIONS = 10_000_000  # shots per point: sigma ~ 0.01-0.015 (photon shot noise)
ACC_TIMES = 50
SENSITIVE_SIGMAS = 1.0
CORE_SIGMAS = 10.0
"""A second, stricter mask (printed beside the first): where that move is >= 10 sigma."""

GOALS: list[tuple[str, bool, str]] = []  # (goal, passed, measured) for the closing summary


def section(title: str) -> None:
    print()
    print("=" * 100)
    print(title)
    print("=" * 100)


def goal(name: str, passed: bool, measured: str, quick: bool) -> None:
    """Print and remember one PASS/FAIL line."""
    tag = ("PASS" if passed else "FAIL") + (" (quick run)" if quick else "")
    print(f"  [{tag}] {name}: {measured}")
    GOALS.append((name, passed, measured + (" (quick run)" if quick else "")))


def truth_coherence(spectrum, ns, t) -> np.ndarray:
    """exp(-chi) (S, T) by firmware_sim's quadrature of the filter integral (ideal pulses)."""
    return np.array([np.exp(-chi_quadrature(spectrum, t, int(n))) for n in ns])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- speed and incremental ---------------------------------------------------------------------


def speed_data(seed: int = 1) -> CoherenceSet:
    """10 sequences x 60 points of the 3-Lorentzian bath, Gaussian noise SPEED_SIGMA."""
    t = np.geomspace(*SPEED_T[:2], SPEED_T[2])
    c = truth_coherence(THREE_LINES, SPEED_NS, t)
    rng = np.random.default_rng(seed)
    noisy = c + SPEED_SIGMA * rng.standard_normal(c.shape)
    return coherence_set(SPEED_NS, np.tile(t, (len(SPEED_NS), 1)), noisy, np.full(c.shape, SPEED_SIGMA))


def bench_fit_speed(data: CoherenceSet, quick: bool) -> None:
    section("SPEED: fit_spectrum, 100 restarts, 10 sequences of 60 points "
            "(goals: M=8 <= 20 s, M=20 <= 60 s on 2 cores)")
    print(f"data: n = {data.n_pulses.tolist()}, {data.t.shape[1]} log-spaced times {SPEED_T[0] * 1e6:.1f}-"
          f"{SPEED_T[1] * 1e6:.0f} us, Gaussian noise sigma = {SPEED_SIGMA}, truth: 3 Lorentzians by quadrature")
    for m, limit in ((8, 20.0), (20, 60.0)):
        if quick and m == 20:
            print("  M = 20: skipped in --quick")
            continue
        cfg = FitConfig(restarts=RESTARTS, lorentzians=m, seed=0)
        t0 = time.perf_counter()
        fit = fit_spectrum(data, cfg)
        wall = time.perf_counter() - t0
        tm = ", ".join(f"{k} {v:.1f} s" for k, v in fit.timings.items() if isinstance(v, float))
        print(f"  M = {m}: wall {wall:.1f} s ({tm}); {fit.message}; ok={fit.ok}")
        print(f"    continuation: {fit.selection}")
        goal(f"fit_spectrum 100 restarts, M = {m}, 10 x 60 points <= {limit:.0f} s", wall <= limit,
             f"{wall:.1f} s (load average {os.getloadavg()[0]:.1f})", False)


def bench_incremental(data: CoherenceSet, quick: bool) -> None:
    restarts = QUICK_RESTARTS if quick else RESTARTS
    section(f"INCREMENTAL UPDATE: cold fit of 10 curves vs warm update from a 9-curve fit (restarts={restarts}, "
            "lorentzians='auto'; goal: warm/cold <= 0.1)")
    cfg = FitConfig(restarts=restarts, seed=0)
    t0 = time.perf_counter()
    cold = fit_spectrum(data, cfg)
    t_cold = time.perf_counter() - t0
    data9 = data.rows(np.arange(len(data.n_pulses) - 1))
    t0 = time.perf_counter()
    fit9 = fit_spectrum(data9, cfg)
    t_nine = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = fit_spectrum(data, cfg, warm=fit9)
    t_warm = time.perf_counter() - t0
    for name, f, tt in (("cold 10-curve fit", cold, t_cold), ("9-curve fit", fit9, t_nine),
                        ("warm update to 10", warm, t_warm)):
        tm = ", ".join(f"{k} {v:.2f}" for k, v in f.timings.items() if isinstance(v, float))
        print(f"  {name}: {tt:.2f} s; M = {f.lorentzians}; {f.message}; timings: {tm}")
        print(f"    {f.selection}")
    omega = np.geomspace(*cold.omega_range, 300)
    d = np.abs(np.log(warm.point(omega) / cold.point(omega)))
    print(f"  warm vs cold point estimate: mean |ln S_warm - ln S_cold| = {d.mean():.3f} (max {d.max():.3f}); "
          f"best reduced chi^2 cold {cold.chi2[cold.best] / cold.dof:.3f}, warm {warm.chi2[warm.best] / warm.dof:.3f}")
    ratio = t_warm / t_cold
    goal("incremental update <= 0.1 x cold fit", ratio <= 0.1, f"{ratio:.3f} x ({t_warm:.2f} s / {t_cold:.2f} s)",
         quick)


# --- accuracy ----------------------------------------------------------------------------------


def accuracy_cases():
    """(name, spectrum, measured n, (t_min, t_max), unmeasured n)."""
    return [
        ("Lorentzian x3", THREE_LINES, [0, 1, 2, 3, 8, 16, 32], (0.05e-6, 30e-6), [5, 12, 24]),
        ("1/f", NoiseSpectrum((OneOverFNoise(2e11),)), [1, 2, 3, 4, 8, 16, 32], (0.1e-6, 60e-6), [5, 12, 24]),
        ("Ohmic", NoiseSpectrum((OhmicNoise(eta=0.5, w_c=TWO_PI * 1e6),)), [0, 1, 2, 3, 4, 5, 6],
         (0.05e-6, 30e-6), [8, 12]),
        ("NV-proton-like", NoiseSpectrum((LorentzianNoise(4e11, 0.0, TWO_PI * 3e5),
                                          LorentzianNoise(1e11, TWO_PI * 1.9e6, TWO_PI * 1e4))),
         [0, 1, 2, 3, 8, 16, 32], (0.05e-6, 30e-6), [5, 12, 24]),
    ]


def sensitivity(spectrum, omega: np.ndarray, ns, t: np.ndarray, c_true: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """By how many of its sigma the most affected measured point's C = exp(-chi) moves when ln S changes
    by 1 over one e-fold of omega there: max_points C(t) S(w) F(w t) / (pi w sigma)
    (chi = (1/pi) int S F / w^2 dw); the sensitive frequencies are where it is >= SENSITIVE_SIGMAS."""
    s = spectrum(omega)
    best = np.zeros(omega.shape)
    for i, n in enumerate(ns):
        f = filter_function_cpmg(omega[None, :] * t[:, None], int(n))
        best = np.maximum(best, (c_true[i][:, None] * s[None] * f / (np.pi * omega[None] * sigma[i][:, None])).max(0))
    return best


def efold_mean(omega: np.ndarray, s: np.ndarray) -> np.ndarray:
    """S averaged over one e-fold of omega (ln omega +- 1/2) on a log-spaced grid: what the filters of
    a few pulses resolve (a comb of narrow lines and a smooth bath with the same e-fold means give
    the same curves)."""
    step = np.log(omega[1] / omega[0])
    half = max(int(round(0.5 / step)), 0)
    box = np.ones(2 * half + 1)
    return np.convolve(s, box, mode="same") / np.convolve(np.ones_like(s), box, mode="same")


def accuracy_case(name, spectrum, ns, t_range, held, noisy: bool, restarts: int, seed: int) -> dict:
    """Simulate, fit with lorentzians='auto', score against the truth at the sensitive frequencies."""
    t = np.geomspace(*t_range, ACC_TIMES)
    rng = np.random.default_rng(seed)
    c_true = truth_coherence(spectrum, ns, t)
    rows, sig = [], []
    for n in ns:
        c, s = shot_noise_coherence(spectrum, int(n), t, REPETITIONS, rng)
        rows.append(c)
        sig.append(s)
    sig = np.array(sig)
    c_meas = np.array(rows) if noisy else c_true
    data = coherence_set(np.array(ns), np.tile(t, (len(ns), 1)), c_meas, sig)
    t0 = time.perf_counter()
    fit = fit_spectrum(data, FitConfig(restarts=restarts, seed=0))
    wall = time.perf_counter() - t0
    omega = np.geomspace(0.3 / t_range[1], 30 * max(ns) / t_range[0], 600)
    weight = sensitivity(spectrum, omega, ns, t, c_true, sig)
    sens = weight >= SENSITIVE_SIGMAS
    s_fit, s_lo, s_hi = fit.band(omega[sens])
    truth = spectrum(omega[sens])
    err = np.log(s_fit / truth)
    core = weight[sens] >= CORE_SIGMAS
    smooth = np.log(efold_mean(omega, fit.point(omega)) / efold_mean(omega, spectrum(omega)))[sens]
    noise = float(np.median(sig))
    pred = [float(np.sqrt(np.mean((fit.predict(int(n), t) - truth_coherence(spectrum, [n], t)[0]) ** 2)))
            for n in held]
    return dict(name=name, noisy=noisy, m=fit.lorentzians, log_rms=float(np.sqrt(np.mean(err**2))),
                bias=float(err.mean()), core_rms=float(np.sqrt(np.mean(err[core] ** 2))) if core.any() else np.nan,
                smooth_rms=float(np.sqrt(np.mean(smooth**2))),
                cover=float(np.mean((s_lo <= truth) & (truth <= s_hi))),
                pred=max(pred) / noise, pred_each=[p / noise for p in pred], held=held,
                red=float(fit.chi2[fit.best] / fit.dof), ok=fit.ok, wall=wall, sigma=noise,
                w_lo=float(omega[sens].min()), w_hi=float(omega[sens].max()), n_sens=int(sens.sum()),
                selection=fit.selection, message=fit.message, dof=fit.dof,
                width=float(np.median(np.log(s_hi / s_lo))))


def bench_accuracy(quick: bool) -> None:
    restarts = QUICK_RESTARTS if quick else RESTARTS
    section(f"ACCURACY: 4 baths, paper-like noise and noise-free, FitConfig(lorentzians='auto', restarts={restarts})")
    print("definitions:")
    print(f"  data: {ACC_TIMES} log-spaced times per curve; truth C = exp(-chi) by "
          "firmware_sim.qubit.chi_quadrature;")
    print(f"    noisy: shot_noise_coherence, {REPETITIONS:.0e} shots per point (its sigma given to the fit); "
          "noise-free: the truth itself, fitted with the same sigma as error bars")
    print("  sensitive frequencies: omega (600 log-spaced) where a unit change of ln S over one e-fold of omega")
    print(f"    moves some measured point by >= {SENSITIVE_SIGMAS:g} sigma: max_points C S F(w t)/(pi w sigma) >= "
          f"{SENSITIVE_SIGMAS:g} (truth S, C)")
    print("  log-RMS = sqrt(mean over sensitive omega of ln(S_fit/S_true)^2), S_fit = SpectrumFit.point "
          "(the reported spectrum)")
    print(f"  log-RMS core: the same over the frequencies where that move is >= {CORE_SIGMAS:g} sigma")
    print("  log-RMS e-fold: the same (all sensitive omega) of ln(<S_fit>/<S_true>), <> = mean over ln omega +- 1/2 "
          "(the resolution the sensitivity is defined at)")
    print("  cover = fraction of sensitive omega with S_lo <= S_true <= S_hi "
          "(SpectrumFit.band: 16th/84th percentiles)")
    print("  pred = max over unmeasured sequences of RMS(fit.predict(n, t) - truth C) / median sigma")
    print("  chi2r = best chi^2 / dof on the measured curves; M = the number chosen by 'auto'")
    print("  goals (noisy cases): log-RMS <= 0.1, cover in [0.6, 0.9], pred <= 1; the Ohmic case fitted "
          "(ok and chi2r <= 1 + 3 sqrt(2/dof)); noise-free: pred <= 1")
    results = []
    for k, (name, spec, ns, tr, held) in enumerate(accuracy_cases()):
        for noisy in ((True,) if quick else (True, False)):
            r = accuracy_case(name, spec, ns, tr, held, noisy, restarts, seed=10 + k)
            results.append(r)
            print(f"\n({name}, {'noisy' if noisy else 'noise-free'}) n = {ns}, "
                  f"t = {tr[0] * 1e6:.2f}-{tr[1] * 1e6:.0f} us; median sigma {r['sigma']:.4f}; sensitive omega "
                  f"{r['n_sens']}/600 in {r['w_lo']:.3g}-{r['w_hi']:.3g} rad/s")
            print(f"    {r['message']}; fit {r['wall']:.1f} s")
            print(f"    {r['selection']}")
            print(f"    log-RMS {r['log_rms']:.3f} (bias {r['bias']:+.3f}); cover {r['cover']:.2f} "
                  f"(median ln(S_hi/S_lo) {r['width']:.3f}); unmeasured "
                  + ", ".join(f"CPMG-{n}: {p:.2f} sigma" for n, p in zip(r['held'], r['pred_each'])))
    print("\nTABLE")
    print(f"  {'case':16s} {'noise':10s} {'M':>3s} {'log-RMS':>8s} {'core':>6s} {'e-fold':>6s} {'cover':>6s} "
          f"{'pred/sig':>9s} {'chi2r':>7s} {'ok':>5s} {'wall s':>7s}")
    for r in results:
        print(f"  {r['name']:16s} {'noisy' if r['noisy'] else 'noise-free':10s} {r['m']:3d} {r['log_rms']:8.3f} "
              f"{r['core_rms']:6.3f} {r['smooth_rms']:6.3f} {r['cover']:6.2f} {r['pred']:9.2f} {r['red']:7.3f} "
              f"{str(r['ok']):>5s} {r['wall']:7.1f}")
    print()
    for r in results:
        tag = f"{r['name']} ({'noisy' if r['noisy'] else 'noise-free'})"
        if r["noisy"]:
            goal(f"{tag}: log-RMS of S_fit <= 0.1", r["log_rms"] <= 0.1, f"{r['log_rms']:.3f}", quick)
            goal(f"{tag}: band coverage in [0.6, 0.9]", 0.6 <= r["cover"] <= 0.9, f"{r['cover']:.2f}", quick)
        goal(f"{tag}: unmeasured-sequence prediction <= 1 sigma", r["pred"] <= 1.0, f"{r['pred']:.2f} sigma", quick)
        if r["name"] == "Ohmic" and r["noisy"]:
            lim = 1 + 3 * math.sqrt(2 / r["dof"])
            goal(f"{tag}: fitted (ok, chi2r <= {lim:.2f})", r["ok"] and r["red"] <= lim,
                 f"ok={r['ok']}, chi2r {r['red']:.3f}, M = {r['m']}", quick)


# --- nnls --------------------------------------------------------------------------------------


def bench_nnls() -> None:
    from scipy.optimize import nnls

    section("NNLS: batched non-negative amplitudes (models/vqns/nnls.py) vs scipy.optimize.nnls row by row")
    print("B = 100 rows of N = 600 points (10 sequences x 60 times), unit-amplitude Lorentzian kernels with random")
    print("log-uniform widths and centres (1e4..1e8 rad/s), half of the true amplitudes zero, 5 % noise;")
    print("'warm': the support of the previous solution as the first guess (what varpro does between LM steps),")
    print("on kernels perturbed by 0.1 %; best of 5")
    rng = np.random.default_rng(7)
    t = np.geomspace(*SPEED_T[:2], SPEED_T[2])
    for m in (8, 20, 24):
        b = 100
        lw0 = rng.uniform(np.log(1e4), np.log(1e8), (b, m))
        lg = rng.uniform(np.log(1e4) - 1, np.log(1e8), (b, m))
        k = chi_values(1.0, np.exp(lw0)[:, :, None, None], np.exp(lg)[:, :, None, None], t[None, None, None],
                       SPEED_NS[None, None, :, None]).reshape(b, m, -1) * SPEED_T[1] ** 2
        a = np.exp(rng.uniform(-3, 3, (b, m))) * (rng.random((b, m)) > 0.5)
        y = np.einsum("bm,bmn->bn", a, k)
        y = y + 0.05 * np.abs(y).mean() * rng.standard_normal(y.shape)

        def rows() -> tuple[np.ndarray, np.ndarray]:
            x, c = np.zeros((b, m)), np.zeros(b)
            for i in range(b):
                x[i], rn = nnls(k[i].T, y[i], maxiter=50 * m)
                c[i] = rn**2
            return x, c

        x_ref, c_ref = rows()
        x, c = nnls_batched(k, y)
        k2 = k * (1 + 1e-3 * rng.standard_normal((b, m)))[..., None]
        t_rows = min(_timed(rows) for _ in range(5))
        t_cold = min(_timed(lambda: nnls_batched(k, y)) for _ in range(5))
        t_warm = min(_timed(lambda: nnls_batched(k2, y, x > 0)) for _ in range(5))
        yy = np.einsum("bn,bn->b", y, y)
        print(f"  M = {m:2d}: scipy rows {t_rows * 1e3:6.2f} ms; batched {t_cold * 1e3:6.2f} ms "
              f"(speed-up {t_rows / t_cold:.2f}x); warm {t_warm * 1e3:6.2f} ms ({t_rows / t_warm:.2f}x); "
              f"max |cost - scipy's| / |y|^2 = {np.max(np.abs(c - c_ref) / yy):.1e}; "
              f"support sizes mean {(x > 0).sum(1).mean():.1f}")


# --- baseline (first pass): paper-style Adam vs ours ----------------------------------------

NS7 = np.array([0, 1, 2, 3, 8, 16, 32])
SIGMA = 0.01
N_TIMES = 40

# --- baseline settings ----------------------------------------------------------------------
ADAM_LR = 0.05
MAX_ITER = 10_000  # the paper's cap (App. B)
BASELINE_STATS_RESTARTS = 64  # starts whose Adam trajectories give success rate and iterations
BASELINE_TIMED_RESTARTS = 4  # of those, run one at a time in the torch textbook loop and timed
BASELINE_TIMED_CAP = 2_000  # iterations at most per timed restart (only seconds/iteration is used)




def three_lorentzian_data(seed: int = 1) -> CoherenceSet:
    """7 curves built with `CoherenceSet.append` (the 7th is the incremental update's new curve)."""
    t = np.geomspace(0.05e-6, 30e-6, N_TIMES)
    rng = np.random.default_rng(seed)
    rows = []
    for n in NS7:
        c = np.exp(-sum(attenuation(A3[j], W3[j], G3[j], t, n) for j in range(3)))
        rows.append(np.clip(c + SIGMA * rng.standard_normal(t.shape), -0.05, 1.05))
    s = np.full(t.shape, SIGMA)
    data = coherence_set(NS7[:1], t[None], rows[0][None], s[None])
    for n, c in zip(NS7[1:], rows[1:]):
        data = data.append(int(n), t, c, s)
    return data


def first_rows(data: CoherenceSet, k: int) -> CoherenceSet:
    return coherence_set(data.n_pulses[:k], data.t[:k], data.coherence[:k], data.sigma[:k])


# --- baseline: paper-style Adam with the textbook closed form in torch -------------------------


def chi_textbook_torch(a, w0, g, t, n):
    """The textbook closed form of `attenuation_textbook`, in torch (complex, autograd).

    FID: (k t - 1 + e^-kt)/k^2; n >= 1: [n (2x - 3 + 4 e^-x - e^-2x) + (1 - e^-x)^4
    (n - 1 - n p + p^n) / (1 - p)^2] / k^2, x = k t / 2n, p = -e^-2x, k = g - i w0.
    p^n is written (-1)^n e^-2nx: torch's complex pow has a 0 * inf = nan gradient where p
    underflows to 0 (large g t), which would make the baseline fail for a reason the paper's
    formula does not have."""
    import torch

    k = torch.complex(g, -w0)
    nn = torch.clamp(n, min=1).to(t.dtype)
    x = k * t / (2 * nn)
    e1 = torch.exp(-x)
    p = -torch.exp(-2 * x)
    pn = (1.0 - 2.0 * (n % 2)).to(t.dtype) * torch.exp(-2 * nn * x)
    fid = (k * t - 1 + torch.exp(-k * t)) / k**2
    cells = nn * (2 * x - 3 + 4 * e1 - e1 * e1)
    pairs = (1 - e1) ** 4 * (nn - 1 - nn * p + pn) / (1 - p) ** 2
    cpmg = (cells + pairs) / k**2
    return a * torch.real(torch.where(n == 0, fid, cpmg))


def check_textbook_torch(data: CoherenceSet, tau: float) -> float:
    """Max relative difference of the torch port from `attenuation_textbook` at 10 random starts."""
    import torch

    from nvscope.models.vqns.attenuation import attenuation_textbook

    th = random_starts(np.random.default_rng(99), 10, 3, data, tau).reshape(10, 3, 3)
    a, g, w0 = np.exp(th[..., 0]) / tau**2, np.exp(th[..., 1]) / tau, np.exp(th[..., 2]) / tau
    ref = attenuation_textbook(a[..., None, None], w0[..., None, None], g[..., None, None], data.t,
                               data.n_pulses[:, None])
    got = chi_textbook_torch(*(torch.tensor(v)[..., None, None] for v in (a, w0, g)), torch.tensor(data.t),
                             torch.tensor(data.n_pulses)[:, None]).numpy()
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)))


def paper_restart_torch(data: CoherenceSet, theta0: np.ndarray, tau: float, loss_thr: float,
                        max_iter: int) -> tuple[int, float, bool, float]:
    """One paper-style restart: its own Adam, textbook form, MSE loss, stop at threshold or cap.
    Returns (iterations, final loss, success, seconds)."""
    import torch

    t = torch.tensor(data.t)
    n = torch.tensor(data.n_pulses)[:, None]
    y = torch.tensor(data.coherence)
    t0 = time.perf_counter()
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=ADAM_LR)
    it, lv = 0, math.inf
    while True:
        opt.zero_grad()
        p = torch.exp(theta.reshape(-1, 3))
        a, g, w0 = p[:, 0] / tau**2, p[:, 1] / tau, p[:, 2] / tau
        chi = chi_textbook_torch(a[:, None, None], w0[:, None, None], g[:, None, None], t, n).sum(0)
        loss = ((torch.exp(-chi) - y) ** 2).mean()
        lv = loss.item()
        if lv <= loss_thr or not math.isfinite(lv) or it >= max_iter:
            break
        loss.backward()
        opt.step()
        it += 1
    return it, lv, lv <= loss_thr, time.perf_counter() - t0


def paper_adam_batch(data: CoherenceSet, theta0: np.ndarray, tau: float, loss_thr: float,
                     max_iter: int, snap_at: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same Adam (torch defaults: betas 0.9/0.999, eps 1e-8, lr ADAM_LR) on many starts at once,
    each row stopped on its own at the threshold or the cap; gradients from the stable numba kernel.
    Returns (iterations (R,), success (R,), final loss (R,), loss at iteration `snap_at` (R,))."""
    th = np.array(theta0, dtype=np.float64)
    r = len(th)
    m1, m2 = np.zeros_like(th), np.zeros_like(th)
    iters = np.zeros(r, dtype=np.int64)
    success = np.zeros(r, dtype=bool)
    final = np.full(r, np.inf)
    snap = np.full(r, np.nan)
    active = np.ones(r, dtype=bool)
    t, n, y = data.t, data.n_pulses, data.coherence
    npts = t.size
    for it in range(max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        p = np.exp(th[idx].reshape(idx.size, -1, 3))
        a, g, w0 = p[..., 0] / tau**2, p[..., 1] / tau, p[..., 2] / tau
        chi, _, dg, dw0 = chi_and_grads(a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None],
                                        t[None, None], n[None, None, :, None])
        c = np.exp(-chi.sum(1))
        loss = ((c - y) ** 2).mean((1, 2))
        final[idx] = loss
        if it == snap_at:
            snap[idx] = loss
        hit = loss <= loss_thr
        stop = hit | ~np.isfinite(loss) | (it >= max_iter)
        success[idx[hit]] = True
        iters[idx] = it
        active[idx[stop]] = False
        go = ~stop
        if not go.any():
            continue
        idx, chi, dg, dw0, c, a, g, w0 = (v[go] for v in (idx, chi, dg, dw0, c, a, g, w0))
        dl_dchi = (-2.0 / npts * (c - y) * c)[:, None]  # (B, 1, S, T)
        grad = np.stack([(dl_dchi * chi).sum((2, 3)),  # d/d ln a: a dchi/da = chi
                         (dl_dchi * dg * g[:, :, None, None]).sum((2, 3)),
                         (dl_dchi * dw0 * w0[:, :, None, None]).sum((2, 3))], axis=-1).reshape(idx.size, -1)
        step = it + 1
        m1[idx] = 0.9 * m1[idx] + 0.1 * grad
        m2[idx] = 0.999 * m2[idx] + 0.001 * grad * grad
        th[idx] -= ADAM_LR / (1 - 0.9**step) * m1[idx] / (np.sqrt(m2[idx] / (1 - 0.999**step)) + 1e-8)
    return iters, success, final, snap


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def bench_speed(data7: CoherenceSet) -> SpectrumFit:
    section("BASELINE: paper-style Adam loop vs batched fit_spectrum (ours), 3 Lorentzians, same 7 curves")
    import torch

    torch.set_num_threads(1)  # tiny tensors: 1 thread is the baseline's fastest setting here
    cfg = FitConfig(restarts=RESTARTS, lorentzians=3, seed=0)
    P = 3 * cfg.lorentzians
    tau = float(np.nanmax(data7.t))
    npts = data7.n_points
    print(f"data: {len(data7.n_pulses)} curves n = {data7.n_pulses.tolist()}, {N_TIMES} log-spaced times "
          f"{np.nanmin(data7.t) * 1e6:.2f}-{tau * 1e6:.0f} us, {npts} points, Gaussian noise sigma = {SIGMA}; "
          f"M = 3 Lorentzians (P = {P})")

    # (b) ours
    t0 = time.perf_counter()
    ours = fit_spectrum(data7, cfg)
    wall = time.perf_counter() - t0
    n_ok = int(ours.success.sum())
    chi2_best = float(ours.chi2[ours.best])
    chi2_thr = chi2_best + P + 3 * math.sqrt(2 * P)
    loss_thr = chi2_thr * SIGMA**2 / npts
    print(f"\n(b) ours: fit_spectrum(restarts={RESTARTS}): wall {wall:.2f} s "
          f"(restarts {ours.timings.get('restarts_s', float('nan')):.2f} s + bootstrap band "
          f"{ours.timings.get('bootstrap_s', float('nan')):.2f} s); {ours.message}; ok={ours.ok}")
    print(f"    success rule: chi^2 <= chi^2_best + P + 3 sqrt(2P) = {chi2_best:.1f} + {P} + "
          f"{3 * math.sqrt(2 * P):.1f} = {chi2_thr:.1f}  ->  baseline loss threshold "
          f"MSE <= {chi2_thr:.1f} * sigma^2 / {npts} = {loss_thr:.3e}")

    # (a) baseline
    print(f"\n(a) paper-style baseline: torch {torch.__version__}, {torch.get_num_threads()} thread, Adam lr {ADAM_LR} "
          f"on log-parameters, textbook closed form (float64), MSE loss, cap {MAX_ITER} iterations")
    print(f"    torch textbook port vs attenuation_textbook (numpy): max relative difference "
          f"{check_textbook_torch(data7, tau):.1e} (both cancel catastrophically; different rounding)")
    starts = random_starts(np.random.default_rng(12345), BASELINE_STATS_RESTARTS, 3, data7, tau)
    timed = [paper_restart_torch(data7, starts[i], tau, loss_thr, BASELINE_TIMED_CAP)
             for i in range(BASELINE_TIMED_RESTARTS)]
    total_it = sum(max(r[0], 1) for r in timed)
    sec_per_it = sum(r[3] for r in timed) / total_it
    t0 = time.perf_counter()
    iters, succ, final, snap = paper_adam_batch(data7, starts, tau, loss_thr, MAX_ITER, BASELINE_TIMED_CAP)
    t_batch = time.perf_counter() - t0
    print(f"    timed: {BASELINE_TIMED_RESTARTS} restarts one at a time (each capped at {BASELINE_TIMED_CAP} "
          f"iterations for the timing), {total_it} Adam iterations in {sum(r[3] for r in timed):.2f} s "
          f"-> {sec_per_it * 1e3:.3f} ms per iteration")
    print("    check, same starts: torch textbook loop (timed, capped) vs batched Adam with the stable kernel")
    for i, (it, lv, ok, _) in enumerate(timed):
        at_cap = (f"chi^2 {snap[i] * npts / SIGMA**2:9.1f} at iteration {BASELINE_TIMED_CAP}"
                  if np.isfinite(snap[i]) else f"stopped before iteration {BASELINE_TIMED_CAP}")
        print(f"      start {i}: torch {'success' if ok else 'stopped'} at iteration {it}, chi^2 "
              f"{lv * npts / SIGMA**2:9.1f} | batch: {at_cap}, "
              f"{'success' if succ[i] else 'no success'} at iteration {iters[i]} (chi^2 "
              f"{final[i] * npts / SIGMA**2:.1f})")
    k, r = int(succ.sum()), len(succ)
    lo, hi = wilson(k, r)
    nan_rows = int((~np.isfinite(final)).sum())
    mean_it = float(iters.mean())
    t_restart = mean_it * sec_per_it
    print(f"    statistics over {r} starts (batch run took {t_batch:.1f} s, not part of any figure): "
          f"success {k}/{r} = {k / r:.1%} (95% CI {lo:.1%}-{hi:.1%}); non-finite loss: {nan_rows}")
    if k:
        print(f"    iterations to success: median {np.median(iters[succ]):.0f} "
              f"(min {iters[succ].min()}, max {iters[succ].max()}); failures run to the cap")
    chi2_fail = np.sort(final[~succ] * npts / SIGMA**2)
    if chi2_fail.size:
        print(f"    failed restarts' final chi^2: median {np.median(chi2_fail):.1f}, lowest {chi2_fail[:5].round(1)}")
    print(f"    mean iterations per restart (failures count {MAX_ITER}): {mean_it:.0f} -> "
          f"{t_restart:.2f} s per restart (extrapolated)")

    # figures
    ours_rps = RESTARTS / wall
    ours_srps = n_ok / wall
    base_rps = 1.0 / t_restart
    print("\nSUMMARY (baseline)")
    print(f"  {'':34s} {'baseline':>14s} {'ours':>14s} {'ratio ours/baseline':>22s}")
    print(f"  {'restarts per second':34s} {base_rps:14.4g} {ours_rps:14.4g} {ours_rps / base_rps:21.0f}x")
    if k:
        base_srps = (k / r) / t_restart
        ratio = ours_srps / base_srps
        print(f"  {'successful restarts per second':34s} {base_srps:14.4g} {ours_srps:14.4g} {ratio:21.0f}x")
        lo_r, hi_r = ours_srps / (hi / t_restart), ours_srps / (max(lo, 1e-12) / t_restart)
        print(f"  {'  (range from baseline 95% CI)':34s} {'':14s} {'':14s} {lo_r:9.0f}x - {hi_r:.0f}x")
        print(f"  {'time per successful restart (s)':34s} {1 / base_srps:14.4g} {1 / max(ours_srps, 1e-12):14.4g}")
    else:
        bound = 3.0 / r  # rule of three: 95% upper bound of the rate
        ratio = ours_srps / (bound / t_restart)
        print(f"  {'successful restarts per second':34s} {'<' + format(bound / t_restart, '.4g'):>14s} "
              f"{ours_srps:14.4g} {'>' + format(ratio, '.0f') + 'x':>22s}  (0 baseline successes: rule of three)")
    print(f"  {'success rate':34s} {k / r:14.1%} {n_ok / RESTARTS:14.1%}")
    verdict = "met" if ratio >= 200 else "NOT met"
    print(f"  goal >= 200x successful restarts/s (aim 1000x): {verdict} ({ratio:.0f}x); success rate ours "
          f"{'>=' if n_ok / RESTARTS >= k / r else '<'} baseline")
    return ours



# --- kernel ------------------------------------------------------------------------------------


def bench_values_only(data7: CoherenceSet) -> None:
    section("KERNEL WITHOUT GRADIENTS: chi_values vs chi_and_grads, and a whole fit")
    rng = np.random.default_rng(3)
    tau = float(np.nanmax(data7.t))
    theta = random_starts(rng, RESTARTS, 3, data7, tau)
    a, g, w0 = fit_module.lorentzians(theta, tau)
    t = np.where(data7.mask, data7.t, tau)
    args = (a[:, :, None, None], w0[:, :, None, None], g[:, :, None, None], t[None, None],
            data7.n_pulses[None, None, :, None])
    size = np.broadcast_shapes(*(np.shape(x) for x in args))
    reps = 20

    def best_of(fn) -> float:
        fn()
        return min(_timed(fn) for _ in range(reps))

    t_grads = best_of(lambda: chi_and_grads(*args))
    t_values = best_of(lambda: chi_values(*args))
    n_el = int(np.prod(size))
    print(f"{n_el} elements ({RESTARTS} restarts x 3 Lorentzians x {len(data7.n_pulses)} curves x {N_TIMES} "
          f"times), best of {reps}:")
    print(f"  chi_and_grads {t_grads * 1e3:8.2f} ms ({t_grads / n_el * 1e9:.1f} ns/element)")
    print(f"  chi_values    {t_values * 1e3:8.2f} ms ({t_values / n_el * 1e9:.1f} ns/element)")
    print(f"  speed-up of the values-only path: {t_grads / t_values:.2f}x")
    flat = [np.broadcast_to(x, size).ravel() for x in args[1:]]
    k_grads = best_of(lambda: lorentzian_j(*flat, workers=1))
    k_values = best_of(lambda: lorentzian_j_values(*flat, workers=1))
    print(f"  the kernels alone, one thread: lorentzian_j {k_grads / n_el * 1e9:.1f} ns/element, "
          f"lorentzian_j_values {k_values / n_el * 1e9:.1f} ns/element: {k_grads / k_values:.2f}x")
    assert np.array_equal(chi_values(*args), chi_and_grads(*args)[0])  # bit for bit

    def with_grads_everywhere(*a, **k):
        return chi_and_grads(*a, **k)[0]

    cfg = FitConfig(restarts=RESTARTS, lorentzians=3, seed=0)
    t_new = min(_timed(lambda: fit_spectrum(data7, cfg)) for _ in range(2))
    saved = [(m, m.chi_values) for m in (fit_module, varpro_module, proposal_module)
             if hasattr(m, "chi_values")]
    try:
        for m, _ in saved:
            m.chi_values = with_grads_everywhere
        t_old = min(_timed(lambda: fit_spectrum(data7, cfg)) for _ in range(2))
    finally:
        for m, f in saved:
            m.chi_values = f
    print(f"fit_spectrum(restarts={RESTARTS}) on the 7 curves, best of 2: gradients computed everywhere "
          f"{t_old:.2f} s, values-only kernel where no gradient is used {t_new:.2f} s: {t_old / t_new:.2f}x")


def warm_up() -> None:
    """Compile / load the numba kernels before anything is timed."""
    t = np.geomspace(1e-7, 1e-5, 8)
    c = np.exp(-t / 5e-6)
    data = coherence_set(np.array([1, 2]), np.array([t, t]), np.array([c, c]), np.full((2, 8), 0.01))
    fit_spectrum(data, FitConfig(restarts=4, lorentzians=2, seed=0)).predict(2, t)
    chi_values(1e10, 1e6, 1e5, t, 2, 40e-9)


SECTIONS = ("speed", "incremental", "accuracy", "nnls", "baseline", "kernel")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="speed,incremental,accuracy,nnls",
                    help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="reduced run: fewer restarts, noisy accuracy cases only")
    args = ap.parse_args()
    want = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(want) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    t_all = time.perf_counter()
    print(f"bench_vqns: python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} (other processes skew the timings)"
          + ("; --quick" if args.quick else ""))
    warm_up()
    if "speed" in want or "incremental" in want:
        data10 = speed_data()
        if "speed" in want:
            bench_fit_speed(data10, args.quick)
        if "incremental" in want:
            bench_incremental(data10, args.quick)
    if "accuracy" in want:
        bench_accuracy(args.quick)
    if "nnls" in want:
        bench_nnls()
    if "baseline" in want or "kernel" in want:
        data7 = three_lorentzian_data()
        if "baseline" in want:
            bench_speed(data7)
        if "kernel" in want:
            bench_values_only(data7)
    if GOALS:
        section("SUMMARY: issue 13's numbers")
        for name, passed, measured in GOALS:
            print(f"  {'PASS' if passed else 'FAIL'}  {name}: {measured}")
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
