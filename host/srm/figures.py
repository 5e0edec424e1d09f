"""PNG figures of an SRM run's maps, readable in a paper (SI axes in micrometres)."""

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
