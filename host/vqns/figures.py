"""PNG figure of a VQNS run: spectrum with its band at each step, curves with fits, rankings.
Sequences are named by `rt.kernels.pulses.sequence_name` (FID, echo, CPMG-n), as in the run's text."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvscope.rt.kernels.pulses import sequence_name  # noqa: E402


def vqns_figure(path: Path, steps: list, curves: dict, fits: list, truth: dict) -> None:
    """Spectrum (S_fit) with its band at each step on the loop's fixed frequency grid (and the truth
    when simulated), the measured curves with the reported spectrum's prediction, and the
    candidates' expected information per second of measurement at each step."""
    fig, (ax_s, ax_c, ax_r) = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0.15, 0.9, len(steps)))
    for i, (step, col) in enumerate(zip(steps, colors)):
        f_mhz = step.omega / (2 * np.pi * 1e6)
        s_mean, s_lo, s_hi = step.band
        last = i == len(steps) - 1
        ax_s.fill_between(f_mhz, s_lo, s_hi, color=col, alpha=0.35 if last else 0.12, lw=0)
        ax_s.plot(f_mhz, s_mean, color=col, lw=2 if last else 1, label=f"{step.n_curves} curves, M = {step.lorentzians}")
    if truth.get("noise_omega"):
        ax_s.plot(np.array(truth["noise_omega"]) / (2 * np.pi * 1e6), truth["noise_S"], "k--", lw=1, label="true")
    f_all = np.concatenate([s.omega for s in steps]) / (2 * np.pi * 1e6)
    ax_s.set_xlim(f_all.min(), f_all.max())
    lows = np.concatenate([s.band[1] for s in steps])
    highs = np.concatenate([s.band[2] for s in steps])
    ax_s.set_ylim(0.3 * lows[lows > 0].min(), 3.0 * highs.max())
    ax_s.set_xscale("log")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("frequency (MHz)")
    ax_s.set_ylabel("S(ω) (rad²/s)")
    ax_s.set_title("noise spectrum, band at each step")
    ax_s.legend(fontsize=7)
    for n, t, c, sd, fit in zip(curves["n_pulses"], curves["t"], curves["coherence"], curves["sigma"], fits):
        ok = np.isfinite(t)
        line = ax_c.errorbar(t[ok] * 1e6, c[ok], sd[ok], fmt=".", ms=3, label=sequence_name(int(n)))
        ax_c.plot(t[ok] * 1e6, fit, color=line[0].get_color(), lw=1)
    ax_c.set_xscale("log")
    ax_c.set_xlabel("total time (µs)")
    ax_c.set_ylabel("coherence")
    ax_c.set_title("measured curves and fit")
    ax_c.legend(fontsize=7, ncol=2)
    for i, (step, col) in enumerate(zip(steps, colors)):
        p = step.proposal
        best = sequence_name(int(p.ranked[0])) if len(p.ranked) else "none"
        ax_r.plot(np.maximum(p.candidates, 0.8), p.scores, "o-", color=col, ms=3,
                  label=f"after {step.n_curves}: best {best}")
    ax_r.set_xscale("log")
    ax_r.set_yscale("log")
    ticks = sorted({int(n) for step in steps for n in step.proposal.candidates})
    ax_r.minorticks_off()
    ax_r.set_xticks([max(n, 0.8) for n in ticks], [sequence_name(n) for n in ticks], fontsize=6, rotation=60)
    ax_r.set_xlabel("candidate sequence")
    ax_r.set_ylabel("expected information / measurement time (nats/s)")
    ax_r.set_title("ranking of the next sequence")
    ax_r.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
