"""rt.kernels: the Numba kernels the rig runs, pure and importable by everyone (binning, pulse timing, lock step)."""
