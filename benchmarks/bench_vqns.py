"""VQNS noise spectroscopy: fit speed against a paper-style baseline, incremental update, accuracy.

    python benchmarks/bench_vqns.py [--sections 1,2,3]

Every figure is measured in this run; speeds are printed as ratios to a baseline run here too.

1. Fit speed on one 7-curve data set (3-Lorentzian spectrum, FID, echo, CPMG-2, 3, 8, 16, 32,
   40 log-spaced times 0.05-30 us, Gaussian noise sigma = 0.01, closed-form truth):
   (a) paper-style baseline (VQNS paper, Sec. II and App. B): one restart at a time, its own
       torch Adam optimizer (lr 0.05 on the log-parameters ln(a tau^2), ln(g tau), ln(w0 tau)),
       random log-uniform start over the probed band (`fit.random_starts`, the same draw our fit
       uses before its variable projection), the TEXTBOOK closed form in torch (float64), loss =
       mean squared coherence residual, stop when the loss reaches the threshold or after 10,000
       iterations. Threshold = our success rule: chi^2 <= chi^2_best(ours) + P + 3 sqrt(2P), P = 9,
       i.e. loss <= that chi^2 * sigma^2 / N_points.
       Timing: a few restarts of the torch loop are timed (capped, see BASELINE_TIMED_*) to get
       seconds per Adam iteration. Statistics (success rate, iterations to success, iterations per
       restart including the failures that run to the cap) come from the same Adam algorithm on
       more starts, advanced as a batch with the stable numba kernel (Adam is element-wise, so each
       row follows exactly its own single-restart trajectory; the timed torch restarts share their
       starts with the first rows and their outcome is printed next to the batch's as a check).
       Time per successful restart = iterations per restart x seconds per iteration / success rate.
   (b) ours: `fit_spectrum(data, FitConfig(restarts=100))` (batched, wall time incl. its bootstrap band).
2. Incremental update: cold fit of the 7 curves vs a fit of the first 6 then
   `fit_spectrum(data7, cfg, warm=fit6)`; times, ratio and how far the two bands differ.
3. Accuracy on simulated data (firmware_sim's quadrature truth, photon shot noise): 3 Lorentzians,
   1/f, Ohmic, a narrow nuclear-spin-like line on a broad background. Definitions are printed.
4. The kernel without gradients: `chi_values` (values-only kernel) against `chi_and_grads` on the
   fit's arrays, and a whole `fit_spectrum` with the values-only kernel where no gradient is used
   (LM trial steps, predictions) against the same fit with gradients computed everywhere.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, OneOverFNoise,
                                        SimQubit, shot_noise_coherence)
from nvscope.models.vqns import fit as fit_module, proposal as proposal_module, varpro as varpro_module
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.data import CoherenceSet, coherence_set
from nvscope.models.vqns.filters import filter_function
from nvscope.models.vqns.fit import FitConfig, SpectrumFit, fit_spectrum, random_starts
from nvscope.models.vqns.kernel import chi_and_grads, chi_values, lorentzian_j, lorentzian_j_values
from nvscope.models.vqns.proposal import predict_coherence

# --- section 1 / 2 data set -------------------------------------------------------------------
A3 = np.array([4e10, 2e11, 1e10])  # rad^2/s^2
W3 = np.array([2 * np.pi * 5e4, 2 * np.pi * 2e6, 2 * np.pi * 0.5e6])  # rad/s
G3 = np.array([1e5, 3e5, 5e4])  # rad/s
NS7 = np.array([0, 1, 2, 3, 8, 16, 32])
SIGMA = 0.01
N_TIMES = 40
RESTARTS = 100

# --- baseline settings ----------------------------------------------------------------------
ADAM_LR = 0.05
MAX_ITER = 10_000  # the paper's cap (App. B)
BASELINE_STATS_RESTARTS = 64  # starts whose Adam trajectories give success rate and iterations
BASELINE_TIMED_RESTARTS = 4  # of those, run one at a time in the torch textbook loop and timed
BASELINE_TIMED_CAP = 2_000  # iterations at most per timed restart (only seconds/iteration is used)


def section(title: str) -> None:
    print()
    print("=" * 100)
    print(title)
    print("=" * 100)


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
    section("1. FIT SPEED: paper-style Adam loop (baseline) vs batched fit_spectrum (ours), same 7 curves")
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
    print("\nSUMMARY (1)")
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


# --- section 2 ---------------------------------------------------------------------------------


def bench_incremental(data7: CoherenceSet) -> None:
    section("2. INCREMENTAL UPDATE: cold 7-curve fit vs warm update (6-curve fit, then warm=fit6 with CPMG-32 added)")
    cfg = FitConfig(restarts=RESTARTS, lorentzians=3, seed=0)
    t0 = time.perf_counter()
    cold2 = fit_spectrum(data7, cfg)
    t_cold = time.perf_counter() - t0
    data6 = first_rows(data7, 6)
    t0 = time.perf_counter()
    fit6 = fit_spectrum(data6, cfg)
    t_six = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = fit_spectrum(data7, cfg, warm=fit6)
    t_warm = time.perf_counter() - t0
    print(f"cold 7-curve fit: {t_cold:.2f} s  ({cold2.message})")
    print(f"6-curve fit (n = {data6.n_pulses.tolist()}): {t_six:.2f} s  ({fit6.message})")
    print(f"warm update to 7 curves: {t_warm:.2f} s  ({warm.message}); restarts in the warm fit: "
          f"{len(warm.chi2)} ({int(fit6.success.sum())} warm + fresh)")
    for name, f in (("cold", cold2), ("6-curve", fit6), ("warm", warm)):
        print(f"  {name} fit.timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in f.timings.items())
              + f"; LM+varpro iterations per restart: max {int(f.iterations.max())}, "
              f"median {np.median(f.iterations):.0f}")
    ratio = t_warm / t_cold
    print(f"time ratio warm / cold = {ratio:.3f}x  (goal <= 0.1x: {'met' if ratio <= 0.1 else 'NOT met'})")
    print(f"best chi^2: cold {cold2.chi2[cold2.best]:.1f}, warm {warm.chi2[warm.best]:.1f} "
          f"(dof {warm.dof})")
    omega = np.geomspace(*cold2.omega_range, 300)
    sc, lc, hc = cold2.band(omega)
    sw, lw, hw = warm.band(omega)
    print(f"band over {omega.size} log-spaced omega in the cold fit's omega_range "
          f"[{cold2.omega_range[0]:.3g}, {cold2.omega_range[1]:.3g}] rad/s:")
    print(f"  median |ln(S_hi/S_lo)|: cold {np.median(np.abs(np.log(hc / lc))):.3f}, "
          f"warm {np.median(np.abs(np.log(hw / lw))):.3f}")
    d = np.abs(np.log(sw / sc))
    print(f"  mean |ln S_mean_warm - ln S_mean_cold| = {d.mean():.3f} (max {d.max():.3f}); "
          f"fraction of omega where the warm mean lies in the cold band: "
          f"{np.mean((sw >= lc) & (sw <= hc)):.2f}")
    truth = sum(LorentzianNoise(A3[j], W3[j], G3[j])(omega) for j in range(3))
    for name, s in (("cold", sc), ("warm", sw)):
        print(f"  log-RMS error vs the true spectrum over the same grid, {name}: "
              f"{np.sqrt(np.mean(np.log(s / truth) ** 2)):.3f}")


# --- section 3 ---------------------------------------------------------------------------------

REPETITIONS = 10_000_000  # shots per point: sigma ~ 0.014 (photon shot noise)


def simulated_case(name, spectrum, ns, t_range, held_out, lorentzians, seed, line=None):
    """Measure the curves (quadrature + shot noise), fit, and score the fit against the true spectrum."""
    q = SimQubit(spectrum, seed=seed)  # its true_coherence is the truth for the held-out sequences
    rng = np.random.default_rng(seed)
    t = np.geomspace(*t_range, N_TIMES)
    t0 = time.perf_counter()
    rows, sig, clipped = [], [], 0
    for n in ns:
        c, s = shot_noise_coherence(spectrum, int(n), t, REPETITIONS, rng)
        clipped += int(((c < -0.05) | (c > 1.05)).sum())
        rows.append(np.clip(c, -0.05, 1.05))
        sig.append(s)
    data = coherence_set(np.array(ns), np.tile(t, (len(ns), 1)), np.array(rows), np.array(sig))
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_spectrum(data, FitConfig(restarts=RESTARTS, lorentzians=lorentzians, seed=0))
    t_fit = time.perf_counter() - t0

    omega = np.geomspace(*fit.omega_range, 400)
    weight = np.zeros(omega.shape)
    for i, n in enumerate(data.n_pulses):
        ti = data.t[i][data.mask[i]]
        ci = np.clip(data.coherence[i][data.mask[i]], 0.0, None)
        f = filter_function(omega[None, :] * ti[:, None], int(n)) / omega[None, :] ** 2
        weight += (f * ci[:, None]).max(0)
    sens = weight >= 0.01 * weight.max()
    s_mean, s_lo, s_hi = fit.band(omega)
    truth = spectrum(omega)
    err = np.log(s_mean[sens] / truth[sens])
    cover = np.mean((s_lo[sens] <= truth[sens]) & (truth[sens] <= s_hi[sens]))
    width = np.median(np.log(s_hi[sens] / s_lo[sens]))
    noise = float(np.median(data.sigma[data.mask]))
    w_s = omega[sens]
    print(f"\n({name}) n = {list(ns)}, t = {t_range[0] * 1e6:.2f}-{t_range[1] * 1e6:.0f} us x {N_TIMES}, "
          f"{REPETITIONS:.0e} shots/point -> median sigma {noise:.4f}; clipped points {clipped}; "
          f"simulate {t_sim:.1f} s")
    print(f"    fit M = {lorentzians}: {t_fit:.2f} s; {fit.message}; ok={fit.ok}")
    print(f"    sensitive omega: {sens.sum()}/{omega.size} grid points, {w_s.min():.3g}-{w_s.max():.3g} rad/s "
          f"(omega_range {fit.omega_range[0]:.3g}-{fit.omega_range[1]:.3g})")
    print(f"    log-RMS error of S_mean: {np.sqrt(np.mean(err ** 2)):.3f} (mean bias {err.mean():+.3f}, "
          f"max |err| {np.abs(err).max():.3f}); band covers truth at {cover:.0%}; median band width "
          f"ln(S_hi/S_lo) {width:.3f}")
    if line is not None:  # the narrow line itself, on a fine linear grid w0 (1 +- 25%)
        w0, g = line
        wl = np.linspace(0.75 * w0, 1.25 * w0, 4001)
        sm_l, lo_l, hi_l = fit.band(wl)
        tr_l = spectrum(wl)
        k = int(np.argmax(sm_l))
        half = wl[sm_l >= 0.5 * sm_l[k]]
        area = np.trapezoid(sm_l, wl) / np.trapezoid(tr_l, wl)
        j = int(np.argmax(tr_l))
        covered = bool(lo_l[j] <= tr_l[j] <= hi_l[j])
        print(f"    narrow line: S_mean peak at {wl[k] / w0:.4f} w0 (true 1), height {sm_l[k] / tr_l.max():.3f} x true "
              f"peak, FWHM {(half.max() - half.min()) / (2 * g):.2f} x true (2g); area over w0 +- 25%: "
              f"{area:.3f} x true; band covers the true peak: {covered}")
    for n in held_out:
        c_pred = predict_coherence(fit, int(n), t)
        c_true = q.true_coherence(t, int(n))
        rms = float(np.sqrt(np.mean((c_pred.mean(0) - c_true) ** 2)))
        spread = float(np.mean(c_pred.std(0)))
        worst = float(np.max(np.abs(c_pred.mean(0) - c_true)))
        print(f"    unmeasured CPMG-{n}: prediction RMS error {rms:.4f} = {rms / noise:.2f} sigma "
              f"(max {worst:.4f} = {worst / noise:.2f} sigma; band's own predicted spread {spread:.4f})")
    return fit


def bench_accuracy() -> None:
    section("3. ACCURACY ON SIMULATED DATA (SimQubit: quadrature of the filter integral, photon shot noise)")
    print("definitions:")
    print("  omega grid: 400 log-spaced points over fit.omega_range; sensitive frequencies: those where")
    print("    W(omega) = sum_curves max_t [F(omega t) / omega^2 * max(C_measured(t), 0)] >= 1% of max W")
    print("  log-RMS error = sqrt(mean over sensitive omega of ln(S_mean / S_true)^2)  (S_mean: fit.band mean)")
    print("  coverage = fraction of sensitive omega with S_lo <= S_true <= S_hi  (fit.band: 16th-84th pct)")
    print("  prediction error: RMS over the same 40 times of mean_band(predict_coherence) - "
          "SimQubit.true_coherence, for sequences never measured; also / median measured sigma")
    two_pi = 2 * np.pi
    cases = [
        ("i: 3 Lorentzians", NoiseSpectrum(tuple(LorentzianNoise(A3[j], W3[j], G3[j]) for j in range(3))),
         [0, 1, 2, 3, 8, 16, 32], (0.05e-6, 30e-6), [5, 12], 3),
        ("ii: 1/f, A/|w| between 2pi 1 kHz and 2pi 100 MHz", NoiseSpectrum((OneOverFNoise(2e11),)),
         [1, 2, 3, 4, 8, 16, 32], (0.1e-6, 60e-6), [5, 12], 4),
        ("iii: Ohmic eta |w| exp(-|w|/w_c), w_c = 2pi 1 MHz (the paper fits it with 20 Lorentzians)",
         NoiseSpectrum((OhmicNoise(eta=0.5, w_c=two_pi * 1e6),)),
         [0, 1, 2, 3, 4, 5, 6], (0.05e-6, 30e-6), [8, 12], 6),
        ("iv: narrow line (2pi 1.9 MHz, g = 2pi 10 kHz) on a broad background (w0 = 0, g = 2pi 300 kHz)",
         NoiseSpectrum((LorentzianNoise(4e11, 0.0, two_pi * 3e5), LorentzianNoise(1e11, two_pi * 1.9e6, two_pi * 1e4))),
         [0, 1, 2, 3, 8, 16, 32], (0.05e-6, 30e-6), [5, 12], 3, (two_pi * 1.9e6, two_pi * 1e4)),
    ]
    for k, (name, spec, ns, tr, held, m, *line) in enumerate(cases):
        simulated_case(name, spec, ns, tr, held, m, seed=10 + k, line=line[0] if line else None)


def bench_values_only(data7: CoherenceSet) -> None:
    section("4. THE KERNEL WITHOUT GRADIENTS: chi_values vs chi_and_grads, and a whole fit")
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

    cfg = FitConfig(restarts=RESTARTS, seed=0)
    t_new = min(_timed(lambda: fit_spectrum(data7, cfg)) for _ in range(2))
    saved = [(m, m.chi_values) for m in (fit_module, varpro_module, proposal_module)]
    try:
        for m, _ in saved:
            m.chi_values = with_grads_everywhere
        t_old = min(_timed(lambda: fit_spectrum(data7, cfg)) for _ in range(2))
    finally:
        for m, f in saved:
            m.chi_values = f
    print(f"fit_spectrum(restarts={RESTARTS}) on the 7 curves, best of 2: gradients computed everywhere "
          f"{t_old:.2f} s, values-only kernel where no gradient is used {t_new:.2f} s: {t_old / t_new:.2f}x")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def warm_up() -> None:
    """Compile / load the numba kernels before anything is timed."""
    t = np.geomspace(1e-7, 1e-5, 8)
    c = np.exp(-t / 5e-6)
    data = coherence_set(np.array([0, 1]), np.array([t, t]), np.array([c, c]), np.full((2, 8), 0.01))
    fit_spectrum(data, FitConfig(restarts=4, lorentzians=2, seed=0))
    predict_coherence(fit_spectrum(data, FitConfig(restarts=4, lorentzians=2, seed=0)), 2, t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    args = ap.parse_args()
    want = {int(s) for s in args.sections.split(",") if s.strip()}
    t_all = time.perf_counter()
    print(f"bench_vqns: python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} (other processes skew the timings)")
    warm_up()
    data7 = three_lorentzian_data()
    if 1 in want:
        bench_speed(data7)
    if 2 in want:
        bench_incremental(data7)
    if 3 in want:
        bench_accuracy()
    if 4 in want:
        bench_values_only(data7)
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
