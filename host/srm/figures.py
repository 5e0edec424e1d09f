"""PNG figures of an SRM run's maps, readable in a paper (SI axes in micrometres)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvscope.models.g2.reasons import G2_REASONS  # noqa: E402

G2_SHOWN_BELOW_STD = 0.5
"""The g2(0) panel leaves blank the pixels whose g2(0) error exceeds this (the file keeps them)."""

SRM_PANELS = (("pl_cps", "PL", "PL (kcps)", 1e-3, "viridis"),
              ("g2", f"g$^{{(2)}}$(0) (where std < {G2_SHOWN_BELOW_STD})", "g$^{(2)}$(0)", 1.0, "coolwarm"),
              ("g2_std", "std of g$^{(2)}$(0)", "std of g$^{(2)}$(0)", 1.0, "magma"),
              ("G2", r"G$_2$ = $\langle N\rangle^2$(1-g$^{(2)}$(0))", "G$_2$ / its maximum", None, "viridis"))
"""The map panels: key in the maps, title, colour bar label (with units; g2 is dimensionless), scale
(None: normalized to the map's maximum) and colour map."""


def blank_pixels_note(maps: dict[str, np.ndarray], reasons: tuple[str, ...] = G2_REASONS,
                      hidden_above_std: float | None = G2_SHOWN_BELOW_STD) -> str:
    """What the blank (NaN) pixels of an SRM run's maps mean, with their counts: not scanned (no PL),
    no g2(0) estimate by reason (`g2_reason` codes of `reasons`), and on the g2(0) panel an error
    above `hidden_above_std` (None: nothing hidden)."""
    shape = next(iter(maps.values())).shape
    scanned = np.isfinite(maps["pl_cps"]) if "pl_cps" in maps else np.ones(shape, bool)
    parts = []
    if (~scanned).any():
        parts.append(f"{int((~scanned).sum())} not scanned (blank everywhere)")
    if "g2" in maps:
        no_g2 = scanned & ~np.isfinite(maps["g2"])
        if no_g2.any():
            code = maps.get("g2_reason", np.zeros(shape))[no_g2]
            counts = {}
            for c in code:
                k = int(c) if np.isfinite(c) else 0
                name = reasons[k] if 0 < k < len(reasons) else "reason unknown"
                counts[name] = counts.get(name, 0) + 1
            parts.append("no g$^{(2)}$(0) estimate (blank in g$^{(2)}$(0), its std and G$_2$): "
                         + ", ".join(f"{n} {name}" for name, n in counts.items()))
        if hidden_above_std is not None and "g2_std" in maps:
            hidden = scanned & np.isfinite(maps["g2"]) & ~(maps["g2_std"] < hidden_above_std)
            if hidden.any():
                parts.append(f"{int(hidden.sum())} with std of g$^{{(2)}}$(0) >= {hidden_above_std} (blank in "
                             "g$^{(2)}$(0) only; kept in the file)")
    return "blank pixels: " + ("; ".join(parts) if parts else "none")


def hatch_blank(ax: plt.Axes) -> None:
    """Show a map's blank (NaN) pixels hatched, unlike any colour of its colour map."""
    ax.set_facecolor("white")
    ax.patch.set_hatch("xx")
    ax.patch.set_edgecolor("0.6")


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
    """The PL, g2(0), g2 error and G2 maps side by side, with a labelled colour bar each, and a line
    profile of PL, G2 and g2(0) along the row through the brightest pixel (dashed on the maps); a
    line under them says what the blank pixels mean (`blank_pixels_note`)."""
    fig = srm_figure_of(maps, positions, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def srm_figure_of(maps: dict[str, np.ndarray], positions: np.ndarray, title: str = "") -> plt.Figure:
    """`srm_figure`'s figure (the caller saves and closes it)."""
    extent = pixel_extent_um(positions, next(iter(maps.values())).shape)
    panels = [p for p in SRM_PANELS if p[0] in maps]
    row = profile_row(maps) if "pl_cps" in maps else None
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 4.1), constrained_layout=True)
    for ax, (key, label, bar_label, scale, cmap) in zip(axes[:-1], panels):
        m = maps[key]
        if key == "g2" and "g2_std" in maps:
            m = np.where(maps["g2_std"] < G2_SHOWN_BELOW_STD, m, np.nan)
        if scale is None:
            peak = np.nanmax(m) if np.isfinite(m).any() else 1.0
            m, scale = m / (peak if peak > 0 else 1.0), 1.0
        kw = {"vmin": 0.0, "vmax": 1.0} if key == "g2" else {}
        im = ax.imshow(m * scale, origin="lower", extent=extent, cmap=cmap, aspect="equal", **kw)
        hatch_blank(ax)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.85, label=bar_label)
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
                ax.plot(x_um, v / (peak if peak > 0 else 1.0), style, ms=3, label=f"{label} / row maximum")
        if "g2" in maps:
            g, sd = maps["g2"][row], maps.get("g2_std", np.full(nx, np.nan))[row]
            ax.errorbar(x_um, g, sd, fmt="^", ms=3, color="C3", label="g$^{(2)}$(0) ± std")
        ax.set_ylim(-0.1, 1.3)
        ax.set_title(f"profile at y = {y_um:.2f} µm")
        ax.legend(fontsize=7)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("PL, G$_2$ (/ row maximum); g$^{(2)}$(0)")
    fig.supxlabel(blank_pixels_note(maps) + " (hatched)", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
