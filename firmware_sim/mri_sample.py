"""The NV-MRI sample as the simulated pulsed instrument sees it: the NV under the bias field and the
tip on the scanner (its line by diagonalization, `nv_center`), its CW ODMR dip, and the dark spins
that DEER reads (`dark_spins`), docs/physics.md section 2.

The tip's apex is where the scanner is (`scanner.position`, m: x, y from the NV's lateral position,
z the apex's height above the surface). `SimMriSample` answers what the pulse generator and the
photon counter need: the CW count rate at a microwave frequency, and the DEER factor of the dark
spins at the RF source's frequency. Both are cached per tip position (a scan asks for the same
position every dither cycle of a pixel). Configured by the rig's `[sim.mri]` table (`SimMriConfig`).

SI units: m, T, Hz, s, counts/s.
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nvscope.rt.kernels.spin_constants import D_HZ, GAMMA_NV_HZ_PER_T

from .dark_spins import LINES, DarkSpins, deer_signal
from .magnetic_tip import TipParams, tip_field
from .nv_center import NvParams, OdmrParams, nv_resonance, odmr_rate

B_ANTICROSSING_T: float = D_HZ / GAMMA_NV_HZ_PER_T
"""The ground-state level anticrossing (T, about 0.1024): gamma_NV B = D, where ms = 0 and -1 meet
(docs/physics.md section 2.3)."""

NEAR_ANTICROSSING_T: float = 0.05
"""A bias within this of the anticrossing (T) is warned about: the tip's field (tens of mT) mixes
ms = 0 and -1 there, the line is weak and far from the aligned-field formula."""

MIN_SPIN_NV_DISTANCE_M: float = 0.15e-9
"""A dark spin closer to the NV than a lattice bond (m) is refused: its coupling diverges."""


@dataclass(frozen=True)
class MriLayer:
    """`[sim.mri.layer]`: a random dark-spin layer of `density_per_m2` spins/m^2 in the plane
    z = `height_m` (m, lab frame; 0 is the surface) over a square of side `extent_m` (m) centred on
    the NV's lateral position, drawn with `seed`."""

    density_per_m2: float
    height_m: float = 0.0
    extent_m: float = 60e-9
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.density_per_m2) and self.density_per_m2 >= 0):
            raise ValueError(f"density_per_m2 must be >= 0 spins/m^2, got {self.density_per_m2!r}")
        if not (math.isfinite(self.height_m) and self.height_m <= 0):
            raise ValueError(f"height_m must be <= 0 m (at or below the diamond surface z = 0), got {self.height_m!r}")
        if not (math.isfinite(self.extent_m) and self.extent_m > 0):
            raise ValueError(f"extent_m must be > 0 m, got {self.extent_m!r}")


@dataclass(frozen=True)
class SimMriConfig:
    """`[sim.mri]`: the simulated NV-MRI sample (SI units).

    nv_depth_m: the NV's depth below the surface (m); b0_t: the bias field along the NV axis (T);
    tip_radius_m, tip_mu0_ms_t: the tip sphere's radius (m) and mu0 Ms (T); odmr_fwhm_hz,
    odmr_contrast, odmr_rate_cps: the CW ODMR dip (Hz, 0-1, counts/s off resonance);
    dark_spins: positions [x, y, z] (m, lab frame: surface z = 0) of single dark spins; layer: a
    table {density_per_m2, height_m, extent_m, seed} of a random layer (empty: none);
    t2star_dark_s: the dark spins' T2* (s); dark_line: their line shape (lorentzian, gaussian).
    """

    nv_depth_m: float = 10e-9
    b0_t: float = 0.30
    tip_radius_m: float = 20e-9
    tip_mu0_ms_t: float = 0.425
    odmr_fwhm_hz: float = 8e6
    odmr_contrast: float = 0.15
    odmr_rate_cps: float = 150e3
    dark_spins: list[list[float]] = field(default_factory=list)
    layer: dict = field(default_factory=dict)
    t2star_dark_s: float = 150e-9
    dark_line: str = "lorentzian"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nv_depth_m) and self.nv_depth_m > 0):
            raise ValueError(f"nv_depth_m must be > 0 m (the NV sits below the surface), "
                             f"got {self.nv_depth_m!r}")
        if not (math.isfinite(self.b0_t) and self.b0_t >= B_ANTICROSSING_T):
            raise ValueError(f"b0_t must be a bias along the NV axis above the level anticrossing at "
                             f"{B_ANTICROSSING_T:.4f} T (below it the ms = 0 <-> -1 line falls with B and B0 read "
                             f"from it, docs/physics.md section 2.3, is wrong; the default is 0.30 T), got {self.b0_t!r}")
        NvParams(self.nv_depth_m, self.b0_t)
        TipParams(self.tip_radius_m, self.tip_mu0_ms_t)
        OdmrParams(self.odmr_fwhm_hz, self.odmr_contrast, self.odmr_rate_cps)
        for i, r in enumerate(self.dark_spins):
            if len(r) != 3 or not all(math.isfinite(v) for v in r):
                raise ValueError(f"dark_spins[{i}] must be a finite [x, y, z] in m, got {r!r}")
            if r[2] > 0:
                raise ValueError(f"dark_spins[{i}] at z = {r[2]!r} m lies above the diamond surface (z = 0; the "
                                 "lab frame, the NV at z = -nv_depth_m): a dark spin must be at z <= 0")
            if math.dist(r, (0.0, 0.0, -self.nv_depth_m)) < MIN_SPIN_NV_DISTANCE_M:
                raise ValueError(f"dark_spins[{i}] {r!r} m sits on the NV at (0, 0, {-self.nv_depth_m!r}) m "
                                 f"(closer than {MIN_SPIN_NV_DISTANCE_M:.3g} m)")
        if not (self.t2star_dark_s > 0):
            raise ValueError(f"t2star_dark_s must be > 0 s, got {self.t2star_dark_s!r}")
        if self.dark_line not in LINES:
            raise ValueError(f"dark_line must be one of {', '.join(LINES)}, got {self.dark_line!r}")


def anticrossing_warning(b0_t: float) -> str | None:
    """A one-line warning (None when far) for a bias b0_t (T) within NEAR_ANTICROSSING_T of the anticrossing."""
    if abs(b0_t - B_ANTICROSSING_T) >= NEAR_ANTICROSSING_T:
        return None
    return (f"sim.mri.b0_t = {b0_t:.4g} T is within {NEAR_ANTICROSSING_T * 1e3:.0f} mT of the ground-state level "
            f"anticrossing at {B_ANTICROSSING_T:.4f} T: the NV line sits at "
            f"{abs(b0_t - B_ANTICROSSING_T) * GAMMA_NV_HZ_PER_T / 1e6:.0f} MHz, the tip's field mixes ms = 0 and -1 (a weak, shifted line, far from the aligned-field formula "
            "behind f_rf and the analysis); NV-MRI wants B0 well above it (default 0.30 T, docs/physics.md "
            "section 2.3)")


class SimMriSample:
    """The NV, the tip on `scanner` and the dark spins, read by the simulated pulsed instrument.

    microwave: the NV drive (its frequency, output and FM deviation); rf: the dark spins' RF source
    (None: no RF). `spins` are in the lab frame (m)."""

    def __init__(self, nv: NvParams, tip: TipParams, odmr: OdmrParams, spins: DarkSpins, t2star_s: float,
                 line: str, scanner: object, microwave: object, rf: object | None = None,
                 layer: MriLayer | None = None):
        self.nv = nv
        self.tip = tip
        self.odmr = odmr
        self.spins = spins
        self.t2star_s = t2star_s
        self.line = line
        self.scanner = scanner
        self.microwave = microwave
        self.rf = rf
        self.layer = layer
        self.line_offset_hz = 0.0
        """A jump of the NV line (Hz) added to its resonance (a B0 step; tests inject one)."""
        self._line_at: tuple[tuple, float] | None = None
        self._deer: dict[tuple, float] = {}

    @classmethod
    def from_config(cls, cfg: SimMriConfig, layer: MriLayer | None, scanner: object, microwave: object,
                    rf: object | None = None) -> "SimMriSample":
        """The sample of a `[sim.mri]` table (and its layer, drawn now from the layer's seed)."""
        nv = NvParams(cfg.nv_depth_m, cfg.b0_t)
        tip = TipParams(cfg.tip_radius_m, cfg.tip_mu0_ms_t)
        odmr = OdmrParams(cfg.odmr_fwhm_hz, cfg.odmr_contrast, cfg.odmr_rate_cps)
        points = np.asarray(cfg.dark_spins, dtype=np.float64).reshape(-1, 3)
        if layer is not None:
            drawn = DarkSpins.surface_layer(layer.density_per_m2, layer.height_m, layer.extent_m,
                                            np.random.default_rng(layer.seed))
            points = np.concatenate([points, drawn.positions])
        return cls(nv, tip, odmr, DarkSpins(points), cfg.t2star_dark_s, cfg.dark_line, scanner, microwave, rf, layer)

    def truth(self) -> dict:
        """What the simulation knows: NV depth (m), bias (T), dark spins (K, 3) m in the lab frame, the layer."""
        out = {"nv_depth_m": self.nv.depth_m, "b0_t": self.nv.b0_t, "dark_spins_m": self.spins.positions.tolist(),
               "tip_radius_m": self.tip.radius_m, "tip_mu0_ms_t": self.tip.mu0_ms_t,
               "t2star_dark_s": self.t2star_s}
        if self.layer is not None:
            out["layer"] = {"height_m": self.layer.height_m, "density_per_m2": self.layer.density_per_m2}
        return out

    @property
    def apex_m(self) -> tuple[float, float, float]:
        """The tip's apex (m) now: where the scanner is."""
        return tuple(float(v) for v in self.scanner.position)

    def resonance_hz(self) -> float:
        """The NV's ms = 0 <-> -1 frequency (Hz) with the tip where it is now (full Hamiltonian), plus
        `line_offset_hz`."""
        apex = self.apex_m
        if self._line_at is None or self._line_at[0] != apex:
            self._line_at = (apex, float(nv_resonance(np.array(apex), self.nv, self.tip)))
        return self._line_at[1] + self.line_offset_hz

    def cw_rate(self, frequency_hz: float) -> float:
        """CW count rate (counts/s) with the NV microwave at `frequency_hz` (Hz); the off-resonance
        rate while the microwave's output is off."""
        if not self.microwave.output_on:
            return self.odmr.rate_cps
        return float(odmr_rate(frequency_hz, self.resonance_hz(), self.odmr))

    def deer_factor(self, tau_s: float, t_pi_rf_s: float) -> float:
        """The DEER factor (0-1) of the dark spins on the echo (tau s, RF pi pulse t_pi_rf_s s) at the
        RF source's frequency with the tip where it is now; 1 with no spins or the RF output off."""
        if self.rf is None or not self.rf.output_on or not len(self.spins):
            return 1.0
        key = (self.apex_m, float(self.rf.frequency_hz), float(tau_s), float(t_pi_rf_s))
        s = self._deer.get(key)
        if s is None:
            apex = np.array(key[0])
            field_at = lambda pts: self.nv.bias_t + tip_field(pts, apex, self.tip)  # noqa: E731
            s = float(deer_signal(self.spins, field_at, self.nv.position_m, np.asarray(self.nv.axis), key[1],
                                  tau_s, t_pi_rf_s, self.t2star_s, self.line))
            if len(self._deer) >= 100_000:
                self._deer.clear()
            self._deer[key] = s
        return s


__all__ = ["B_ANTICROSSING_T", "NEAR_ANTICROSSING_T", "MriLayer", "SimMriConfig", "SimMriSample",
           "anticrossing_warning"]
