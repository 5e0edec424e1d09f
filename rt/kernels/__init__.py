"""rt.kernels: the kernels the rig runs, pure and importable by everyone (binning, pulse timing, the
NV frequency lock, tip stepping, spin constants, the three-level emitter's g2 shape).

`warm_up()` compiles every Numba kernel of the rig (or loads it from Numba's on-disk cache) on
tiny inputs; the rig calls it before it says `bound`, so its first pixel does not pay the compile.
"""

from __future__ import annotations

import numpy as np

from .three_level import g2_shape_from_rates


def warm_up() -> None:
    """Run every rig kernel once on tiny inputs (compiles them, or loads them from the cache)."""
    from nvscope.proto.histogram import HISTOGRAM_MODES

    from .binning import HistogramBinner, histogram_tags

    t_a = np.array([0, 100_000, 700_000], dtype=np.int64)
    t_b = np.array([50_000, 400_000, 800_000], dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    for mode in HISTOGRAM_MODES:
        binner = HistogramBinner(mode)
        binner.add(t_a[:2], t_b[:1], 300_000)
        binner.add(t_a[2:], t_b[1:], 900_000)
        binner.add(empty, empty, 1_000_000)
        binner.finish()
        histogram_tags(t_a, t_b, mode)
    _warm_up_lock()


def _warm_up_lock() -> None:
    """Compile (or load) the lock's kernels with the argument types the rig passes (rt/mri.py)."""
    from .lock import feedforward, lock_cycles, lock_pixel, lock_step, sweep_minimum

    counts = np.array([[120, 130], [125, 126], [128, 121]], dtype=np.int64)
    lock_step(5.5e9, counts[0, 0], counts[0, 1], 2.3e6, 2.7e-8, 0.3)
    lock_cycles(5.5e9, counts, 2.3e6, 2.7e-8, 0.3)
    lock_pixel(5.5e9, counts, 2.3e6, 8e6, 0.15, 0.3, 1)
    feedforward(np.array([5.5e9, 5.51e9]), np.nan)
    freqs = np.linspace(5.4e9, 5.6e9, 9)
    sweep_minimum(freqs, 100.0 - 10.0 * np.exp(-((freqs - 5.5e9) / 1e7) ** 2), 8e6)


__all__ = ["warm_up", "g2_shape_from_rates"]
