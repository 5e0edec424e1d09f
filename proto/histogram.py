"""The start-stop histogram bin convention shared by rt, host and models (docs/physics.md section 1.1)."""

from __future__ import annotations

import numpy as np

N_BINS: int = 215
"""Number of histogram bins."""
HALF_RANGE_PS: int = 250_000
"""The histogram spans [-HALF_RANGE_PS, +HALF_RANGE_PS) picoseconds of delay tau = t_B - t_A."""
FULL_RANGE_PS: int = 2 * HALF_RANGE_PS
BIN_WIDTH_S: float = FULL_RANGE_PS * 1e-12 / N_BINS
"""Bin width D = 500/215 ns, in seconds."""
CENTRE_BIN: int = 107
"""The bin centred on tau = 0."""


def bin_of_delay(tau_ps: int) -> int:
    """Bin index of a delay in ps, k = ((tau + 250000) * 215) // 500000; -1 when outside the range."""
    if tau_ps < -HALF_RANGE_PS or tau_ps >= HALF_RANGE_PS:
        return -1
    return ((tau_ps + HALF_RANGE_PS) * N_BINS) // FULL_RANGE_PS


def bin_edges_s() -> np.ndarray:
    """The N_BINS + 1 bin edges in seconds (edge k is where the integer rule switches to bin k)."""
    # Bin k holds the integer delays tau_ps with k*500000/215 <= tau_ps + 250000 < (k+1)*500000/215;
    # on a continuous delay axis its edges are exactly these (the ps grid is finer than any physics).
    k = np.arange(N_BINS + 1)
    return (k * FULL_RANGE_PS / N_BINS - HALF_RANGE_PS) * 1e-12

HISTOGRAM_MODES: tuple[str, ...] = ("allpairs", "startstop")
"""How a histogram is acquired: every A-B pair within the window (`allpairs`) or a time-to-amplitude
converter's first stop after each start (`startstop`); named so in configs, messages and files."""
