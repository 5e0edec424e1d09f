"""The demo's fixed-versus-adaptive dwell figure: the g2(0) error map of each scan and the adaptive dwell map."""

from __future__ import annotations

from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import blank_pixels_note, hatch_blank, pixel_extent_um  # noqa: E402

ERROR_SHOWN_UP_TO = 0.5
"""The error maps' colour scale ends here (the dark background's errors, of order 1, saturate it)."""


def scan_maps(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A finished SRM run's maps (ny, nx) that the figure shows or explains (g2 error, dwell, g2, its
    no-estimate reason, PL) and its pixel positions (m)."""
    with h5py.File(path, "r") as f:
        names = [n for n in ("g2_std", "dwell_s", "g2", "g2_reason", "pl_cps") if f"maps/{n}" in f]
        return {name: f[f"maps/{name}"][()] for name in names}, f["pixels/position"][()]


def dwell_figure(fixed: Path, adaptive: Path, png: Path, target: float) -> None:
    """Three panels: the g2(0) error of the fixed-dwell and the adaptive-dwell scan on one colour
    scale (the target marked on the colour bar), and the adaptive scan's dwell per pixel (s); a line
    under them says what each scan's blank pixels mean."""
    fig = dwell_figure_of(fixed, adaptive, target)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def dwell_figure_of(fixed: Path, adaptive: Path, target: float) -> plt.Figure:
    """`dwell_figure`'s figure (the caller saves and closes it)."""
    (f_maps, pos), (a_maps, _) = scan_maps(fixed), scan_maps(adaptive)
    extent = pixel_extent_um(pos, f_maps["g2_std"].shape)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.4), constrained_layout=True)
    error_label = "std of g$^{(2)}$(0)"
    panels = ((f_maps["g2_std"], f"g$^{{(2)}}$(0) error, fixed dwell ({np.nansum(f_maps['dwell_s']):.0f} s)",
               error_label, "magma"),
              (a_maps["g2_std"], f"g$^{{(2)}}$(0) error, adaptive ({np.nansum(a_maps['dwell_s']):.0f} s)",
               error_label, "magma"),
              (a_maps["dwell_s"], "adaptive dwell per pixel", "dwell (s)", "viridis"))
    for i, (ax, (m, title, bar_label, cmap)) in enumerate(zip(axes, panels)):
        kw = {"vmin": 0.0, "vmax": ERROR_SHOWN_UP_TO} if i < 2 else {"vmin": 0.0}
        im = ax.imshow(m, origin="lower", extent=extent, cmap=cmap, aspect="equal", **kw)
        hatch_blank(ax)
        bar = fig.colorbar(im, ax=ax, shrink=0.85, extend="max" if i < 2 else "neither", label=bar_label)
        if i < 2:
            bar.ax.axhline(target, color="c", lw=2)
        ax.set_title(title)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    fig.suptitle(f"the same field, fixed vs adaptive dwell (target g$^{{(2)}}$(0) error {target}, cyan)")
    notes = [f"{name}: {blank_pixels_note(maps, hidden_above_std=None)}"
             for name, maps in (("fixed", f_maps), ("adaptive", a_maps))]
    fig.supxlabel(" (hatched)\n".join(notes) + f" (hatched); errors above {ERROR_SHOWN_UP_TO} show at the top colour",
                  fontsize=8)
    return fig
