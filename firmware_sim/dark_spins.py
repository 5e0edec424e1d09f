"""Dark electron spins (g = 2.0023, S = 1/2) seen by the NV through DEER (docs/physics.md section 2,
"Dark spins and DEER").

A spin echo on the NV with an RF pi pulse on the dark spins at f_RF flips, with probability p, each
dark spin whose resonance gamma_dark |B0 + B_tip(r)| lies in the resonant slice; a flipped spin's
dipolar field is then not refocused and multiplies the echo by 1 - p (1 - cos(pi J tau)), J the
secular dipolar coupling. Over any set of spins the DEER signal (echo with RF over echo without RF)
is the product of these factors. p is the Rabi formula averaged over the dark spin's own line
(T2*), by quadrature: no closed form is assumed. The flip probability and the coupling are defined
once, in `nvscope.rt.kernels.deer` (the NV-MRI analysis uses the same ones); they are re-exported here.

The field is not computed here: `deer_signal` is handed `field_at(points) -> B`, the total field
(bias + tip) in T, so the tip model lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from nvscope.rt.kernels.spin_constants import G_DARK, NU_DD_HZ_M3 as NU_DD
from nvscope.rt.kernels.spin_constants import GAMMA_DARK_HZ_PER_T as GAMMA_DARK
from nvscope.rt.kernels.deer import LINES, flip_probability, line_width, rabi_probability, secular_coupling


@dataclass(frozen=True)
class DarkSpins:
    """Positions (K, 3) in m of dark electron spins (diamond surface z = 0, +z towards the tip)."""

    positions: np.ndarray

    def __post_init__(self) -> None:
        p = np.asarray(self.positions, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
            raise ValueError(f"dark spin positions must be a finite (K, 3) array in m, got shape {p.shape}")
        p.setflags(write=False)
        object.__setattr__(self, "positions", p)

    def __len__(self) -> int:
        return self.positions.shape[0]

    @classmethod
    def single(cls, r: np.ndarray) -> "DarkSpins":
        """One dark spin at r (3,) m."""
        return cls(np.asarray(r, dtype=np.float64).reshape(1, 3))

    @classmethod
    def pair(cls, r1: np.ndarray, r2: np.ndarray) -> "DarkSpins":
        """Two dark spins at r1 and r2 (3,) m."""
        return cls(np.stack([np.asarray(r1, dtype=np.float64), np.asarray(r2, dtype=np.float64)]))

    @classmethod
    def surface_layer(cls, density_per_m2: float, height_m: float, extent_m: float,
                      rng: np.random.Generator) -> "DarkSpins":
        """A random layer (a Poisson point process of density spins/m^2) in the plane z = height_m (m),
        over the square |x|, |y| <= extent_m / 2 (m) centred on the z axis."""
        if not (np.isfinite(density_per_m2) and density_per_m2 >= 0 and np.isfinite(height_m)
                and np.isfinite(extent_m) and extent_m > 0):
            raise ValueError("a surface layer needs density >= 0 spins/m^2, a finite height (m) and extent > 0 m, "
                             f"got {density_per_m2}, {height_m}, {extent_m}")
        n = rng.poisson(density_per_m2 * extent_m**2)
        xy = rng.uniform(-0.5 * extent_m, 0.5 * extent_m, size=(n, 2))
        return cls(np.column_stack([xy, np.full(n, float(height_m))]))


def dark_resonance(b_total: np.ndarray) -> np.ndarray:
    """Dark-spin resonance gamma_dark |B| in Hz of the total field B (..., 3) in T."""
    return GAMMA_DARK * np.linalg.norm(np.asarray(b_total, dtype=np.float64), axis=-1)


def deer_signal(spins: DarkSpins, field_at: Callable[[np.ndarray], np.ndarray], nv_position: np.ndarray,
                n_nv: np.ndarray, f_rf: float, tau: float, t_pi_rf: float, t2star: float,
                line: str = "lorentzian") -> np.ndarray:
    """DEER signal (echo with RF / echo without RF, -1 to 1) = prod_k [1 - p_k (1 - cos(pi J_k tau))].

    field_at(points (K, 3) m) -> total field (..., K, 3) T at the spins (bias + tip; leading axes,
    e.g. one per tip position, give the signal's shape); nv_position (3,) m; n_nv the NV axis;
    f_rf (Hz), tau the echo's total evolution time (s), t_pi_rf the RF pi pulse (s), t2star the
    dark spins' T2* (s)."""
    if len(spins) == 0:
        b = np.asarray(field_at(np.zeros((1, 3))))
        return np.ones(b.shape[:-2])
    b = np.asarray(field_at(spins.positions), dtype=np.float64)
    if b.ndim < 2 or b.shape[-2:] != (len(spins), 3):
        raise ValueError(f"field_at must return (..., {len(spins)}, 3) T for {len(spins)} spins, got {b.shape}")
    mod = np.linalg.norm(b, axis=-1)
    if np.any(mod == 0):
        raise ValueError("deer_signal: zero total field at a dark spin (no quantization axis)")
    r = spins.positions - np.asarray(nv_position, dtype=np.float64)
    j = secular_coupling(r, n_nv, b / mod[..., None])
    p = flip_probability(f_rf - GAMMA_DARK * mod, t_pi_rf, t2star, line)
    return np.prod(1.0 - p * (1.0 - np.cos(np.pi * j * tau)), axis=-1)


def count_ratio(signal: np.ndarray, contrast: float = 0.25, coherence: float = 1.0) -> np.ndarray:
    """Expected n_rf / n_ref of the pulsed readout for a DEER signal (-1 to 1): a shot ends in ms=0 with
    probability (1 + C S)/2 (C the echo's own coherence), and ms=-1 gives `contrast` fewer photons."""
    s = np.asarray(signal, dtype=np.float64)
    return (1.0 - contrast * (1.0 - coherence * s) / 2.0) / (1.0 - contrast * (1.0 - coherence) / 2.0)


def signal_from_counts(n_rf: np.ndarray, n_ref: np.ndarray, contrast: float = 0.25,
                       coherence: float = 1.0) -> np.ndarray:
    """The DEER signal (-1 to 1) estimated from the counts with and without RF (inverse of count_ratio)."""
    ratio = np.asarray(n_rf, dtype=np.float64) / np.asarray(n_ref, dtype=np.float64)
    ref = 1.0 - contrast * (1.0 - coherence) / 2.0
    return (1.0 - 2.0 * (1.0 - ratio * ref) / contrast) / coherence


def deer_counts(signal: np.ndarray, shots: int, rng: np.random.Generator, photons_per_shot: float = 0.03,
                contrast: float = 0.25, coherence: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson photon counts (n_rf, n_ref) of `shots` pulsed readouts of the echo with RF (DEER signal
    S) and of the reference echo without RF: means shots x photons_per_shot x (1 - contrast (1 - C S)/2)
    with C = coherence, and C in place of C S for the reference."""
    s = np.asarray(signal, dtype=np.float64)
    if not (shots >= 0 and photons_per_shot >= 0 and 0 <= contrast <= 1 and 0 <= coherence <= 1):
        raise ValueError("deer counts need shots >= 0, photons_per_shot >= 0, 0 <= contrast <= 1 and "
                         f"0 <= coherence <= 1, got {shots}, {photons_per_shot}, {contrast}, {coherence}")
    if not np.all((s >= -1) & (s <= 1)):  # an echo ratio: a spin with pi J tau near pi inverts the echo
        raise ValueError("deer counts: the DEER signal must lie in [-1, 1]")
    lam = shots * photons_per_shot
    n_rf = rng.poisson(lam * (1.0 - contrast * (1.0 - coherence * s) / 2.0))
    n_ref = rng.poisson(np.broadcast_to(lam * (1.0 - contrast * (1.0 - coherence) / 2.0), s.shape))
    return n_rf, n_ref


__all__ = ["LINES", "G_DARK", "GAMMA_DARK", "NU_DD", "DarkSpins", "dark_resonance", "rabi_probability", "line_width",
           "flip_probability", "secular_coupling", "deer_signal", "count_ratio", "signal_from_counts",
           "deer_counts"]
