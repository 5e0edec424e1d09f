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


def srm_figure(maps: dict[str, np.ndarray], positions: np.ndarray, path: Path, title: str = "") -> None:
    """The PL, g2(0), g2 error and G2 maps side by side, with a colour bar each."""
    extent = pixel_extent_um(positions, next(iter(maps.values())).shape)
    panels = [p for p in SRM_PANELS if p[0] in maps]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), constrained_layout=True)
    for ax, (key, label, scale, cmap) in zip(np.atleast_1d(axes), panels):
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
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
