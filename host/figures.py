"""PNG figures of a run's results, readable in a paper (SI axes in micrometres)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

G2_SHOWN_BELOW_STD = 0.5
"""The g2(0) panel leaves blank the pixels whose g2(0) error exceeds this (the file keeps them)."""

SRM_PANELS = (("pl_cps", "PL (kcps)", 1e-3, "viridis"),
              ("g2", f"g$^{{(2)}}$(0) (where std < {G2_SHOWN_BELOW_STD})", 1.0, "coolwarm"),
              ("g2_std", "std g$^{(2)}$(0)", 1.0, "magma"),
              ("G2", r"G$_2$ = $\langle N\rangle^2$(1-g$^{(2)}$(0)) (norm.)", None, "viridis"))


def pixel_extent_um(positions: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in um with pixel centres at the scanned positions."""
    out = []
    for axis, n in ((0, shape[1]), (1, shape[0])):
        v = positions[:, axis] * 1e6
        lo, hi = v.min(), v.max()
        half = 0.5 * ((hi - lo) / (n - 1) if n > 1 and hi > lo else 0.05)
        out += [lo - half, hi + half]
    return tuple(out)


def profile_row(maps: dict[str, np.ndarray]) -> int:
    """The row of the line profile: the one through the brightest pixel of the PL map."""
    pl = maps["pl_cps"]
    return int(np.unravel_index(np.nanargmax(pl), pl.shape)[0]) if np.isfinite(pl).any() else 0


def srm_figure(maps: dict[str, np.ndarray], positions: np.ndarray, path: Path, title: str = "") -> None:
    """The PL, g2(0), g2 error and G2 maps side by side, with a colour bar each, and a line profile
    of PL, G2 and g2(0) along the row through the brightest pixel (dashed on the maps)."""
    extent = pixel_extent_um(positions, next(iter(maps.values())).shape)
    panels = [p for p in SRM_PANELS if p[0] in maps]
    row = profile_row(maps) if "pl_cps" in maps else None
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.8), constrained_layout=True)
    for ax, (key, label, scale, cmap) in zip(axes[:-1], panels):
        m = maps[key]
        if key == "g2" and "g2_std" in maps:
            m = np.where(maps["g2_std"] < G2_SHOWN_BELOW_STD, m, np.nan)
        if scale is None:
            peak = np.nanmax(m) if np.isfinite(m).any() else 1.0
            m, scale = m / (peak if peak > 0 else 1.0), 1.0
        kw = {"vmin": 0.0, "vmax": 1.0} if key == "g2" else {}
        im = ax.imshow(m * scale, origin="lower", extent=extent, cmap=cmap, aspect="equal", **kw)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.85)
    ny, nx = next(iter(maps.values())).shape
    x_um = np.linspace(extent[0], extent[1], 2 * nx + 1)[1::2]
    ax = axes[-1]
    if row is not None:
        y_um = np.linspace(extent[2], extent[3], 2 * ny + 1)[1::2][row]
        for a in axes[:-1]:
            a.axhline(y_um, color="w", ls="--", lw=0.8)
        for key, label, style in (("pl_cps", "PL", "o-"), ("G2", "G$_2$", "s-")):
            if key in maps:
                v = maps[key][row]
                peak = np.nanmax(v) if np.isfinite(v).any() else 1.0
                ax.plot(x_um, v / (peak if peak > 0 else 1.0), style, ms=3, label=f"{label} (norm.)")
        if "g2" in maps:
            g, sd = maps["g2"][row], maps.get("g2_std", np.full(nx, np.nan))[row]
            ax.errorbar(x_um, g, sd, fmt="^", ms=3, color="C3", label="g$^{(2)}$(0) ± std")
        ax.set_ylim(-0.1, 1.3)
        ax.set_title(f"profile at y = {y_um:.2f} µm")
        ax.legend(fontsize=7)
    ax.set_xlabel("x (µm)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def vqns_figure(path: Path, steps: list, curves: dict, fits: list, truth: dict) -> None:
    """Spectrum with its band at each step (and the truth when simulated), the measured curves
    with the fit, and the ranking of the candidates at each step."""
    fig, (ax_s, ax_c, ax_r) = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0.15, 0.9, len(steps)))
    for i, (step, col) in enumerate(zip(steps, colors)):
        f_mhz = step.omega / (2 * np.pi * 1e6)
        s_mean, s_lo, s_hi = step.band
        last = i == len(steps) - 1
        ax_s.fill_between(f_mhz, s_lo, s_hi, color=col, alpha=0.35 if last else 0.12, lw=0)
        ax_s.plot(f_mhz, s_mean, color=col, lw=2 if last else 1, label=f"{step.n_curves} curves")
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
        line = ax_c.errorbar(t[ok] * 1e6, c[ok], sd[ok], fmt=".", ms=3, label=f"CPMG-{n}" if n else "FID")
        ax_c.plot(t[ok] * 1e6, fit, color=line[0].get_color(), lw=1)
    ax_c.set_xscale("log")
    ax_c.set_xlabel("total time (µs)")
    ax_c.set_ylabel("coherence")
    ax_c.set_title("measured curves and fit")
    ax_c.legend(fontsize=7, ncol=2)
    for i, (step, col) in enumerate(zip(steps, colors)):
        ax_r.plot(step.proposal.candidates, step.proposal.scores, "o-", color=col, ms=3,
                  label=f"after {step.n_curves}: next CPMG-{step.proposal.ranked[0]}")
    ax_r.set_xscale("log")
    ticks = sorted({int(n) for step in steps for n in step.proposal.candidates})
    ax_r.minorticks_off()
    ax_r.set_xticks(ticks, [str(n) for n in ticks], fontsize=7)
    ax_r.set_xlabel("candidate CPMG-n")
    ax_r.set_ylabel("predicted spread / noise")
    ax_r.set_title("ranking of the next sequence")
    ax_r.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
