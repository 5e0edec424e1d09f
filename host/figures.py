"""PNG figures of a run's results, readable in a paper (SI axes in micrometres)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SRM_PANELS = (("pl_cps", "PL (kcps)", 1e-3, "viridis"),
              ("g2", "g$^{(2)}$(0)", 1.0, "coolwarm"),
              ("g2_std", "std g$^{(2)}$(0)", 1.0, "magma"),
              ("G2", r"G$_2$ = $\langle N\rangle^2$(1-g$^{(2)}$(0)) (norm.)", None, "viridis"))


def srm_figure(maps: dict[str, np.ndarray], positions: np.ndarray, path: Path, title: str = "") -> None:
    """The PL, g2(0), g2 error and G2 maps side by side, with a colour bar each."""
    x_um, y_um = positions[:, 0] * 1e6, positions[:, 1] * 1e6
    extent = (x_um.min(), x_um.max(), y_um.min(), y_um.max())
    panels = [p for p in SRM_PANELS if p[0] in maps]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), constrained_layout=True)
    for ax, (key, label, scale, cmap) in zip(np.atleast_1d(axes), panels):
        m = maps[key]
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
