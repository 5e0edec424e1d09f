"""The SRM figures label every axis and colour bar with units and say what blank (NaN) pixels mean."""

from __future__ import annotations

import h5py
import matplotlib.pyplot as plt
import numpy as np

from nvscope.host.srm.dwell_figure import dwell_figure, dwell_figure_of
from nvscope.host.srm.figures import srm_figure, srm_figure_of
from nvscope.models.g2.reasons import G2_REASONS, REASON_FEW_EVENTS, REASON_NO_EVENTS


def srm_maps() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """3 x 4 maps: two pixels not scanned, one with no events, one with too few, one with a large error."""
    rng = np.random.default_rng(0)
    pl = rng.uniform(1e3, 1e5, (3, 4))
    g2, std = rng.uniform(0, 1, (3, 4)), np.full((3, 4), 0.1)
    reason = np.zeros((3, 4))
    pl[2, 2:] = g2[2, 2:] = std[2, 2:] = reason[2, 2:] = np.nan  # the run stopped before these
    g2[0, 0] = std[0, 0] = np.nan
    reason[0, 0] = REASON_NO_EVENTS
    g2[0, 1] = std[0, 1] = np.nan
    reason[0, 1] = REASON_FEW_EVENTS
    std[1, 1] = 0.9
    maps = {"pl_cps": pl, "g2": g2, "g2_std": std, "G2": pl**2 * (1 - g2), "g2_reason": reason,
            "dwell_s": np.where(np.isfinite(pl), 0.5, np.nan)}
    iy, ix = np.divmod(np.arange(12), 4)
    return maps, np.c_[ix * 1e-7, iy * 1e-7, np.zeros(12)]


def assert_labelled(fig: plt.Figure) -> str:
    """Every plot axis has x and y labels with units where it shows a map, every colour bar a label;
    returns the figure's note under the panels."""
    bars = [im.colorbar.ax for ax in fig.axes for im in ax.images if im.colorbar is not None]
    plots = [ax for ax in fig.axes if ax not in bars]
    assert bars and all(bar.get_ylabel() for bar in bars), [bar.get_ylabel() for bar in bars]
    for ax in plots:
        assert ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
        if ax.images:
            assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (µm)", "y (µm)")
    assert any("(kcps)" in b.get_ylabel() or "(s)" in b.get_ylabel() or "g$^{(2)}$" in b.get_ylabel() for b in bars)
    return fig.get_supxlabel()


def test_srm_figure_labels_every_axis_and_says_what_blank_pixels_mean(tmp_path):
    maps, positions = srm_maps()
    fig = srm_figure_of(maps, positions, "run")
    try:
        note = assert_labelled(fig)
    finally:
        plt.close(fig)
    assert "2 not scanned" in note
    assert f"1 {G2_REASONS[REASON_NO_EVENTS]}" in note and f"1 {G2_REASONS[REASON_FEW_EVENTS]}" in note
    assert "1 with std of g$^{(2)}$(0) >= 0.5" in note
    srm_figure(maps, positions, tmp_path / "srm.png")
    assert (tmp_path / "srm.png").stat().st_size > 0


def test_dwell_figure_labels_every_axis_and_says_what_blank_pixels_mean(tmp_path):
    maps, positions = srm_maps()
    paths = []
    for name in ("fixed", "adaptive"):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            for key, m in maps.items():
                f[f"maps/{key}"] = m
            f["pixels/position"] = positions
        paths.append(path)
    fig = dwell_figure_of(*paths, 0.2)
    try:
        note = assert_labelled(fig)
    finally:
        plt.close(fig)
    assert note.count("2 not scanned") == 2 and note.count(G2_REASONS[REASON_NO_EVENTS]) == 2
    assert "dwell (s)" in [im.colorbar.ax.get_ylabel() for ax in fig.axes for im in ax.images if im.colorbar]
    dwell_figure(*paths, tmp_path / "dwell.png", 0.2)
    assert (tmp_path / "dwell.png").stat().st_size > 0
