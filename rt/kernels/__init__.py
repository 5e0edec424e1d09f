"""rt.kernels: the kernels the rig runs, pure and importable by everyone (binning, pulse timing).

`warm_up()` compiles every Numba kernel of the rig (or loads it from Numba's on-disk cache) on
tiny inputs; the rig calls it before it says `bound`, so its first pixel does not pay the compile.
"""

from __future__ import annotations

import numpy as np


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


__all__ = ["warm_up"]
