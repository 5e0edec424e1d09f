"""The simulated rig: the one place where rt composes `firmware_sim` devices from the `[sim]` config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nvscope.firmware_sim import DetectorParams, Sample, SimScanner, SimTimeTagger
from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, OneOverFNoise,
                                        ReadoutParams, SimQubit)

from .config import ConfigError, RigConfig, from_dict
from .scan import RigDevices


@dataclass(frozen=True)
class SimConfig:
    """`[sim]`: the sample (`[sim.sample]`: emitters, background, PSFs) and both detectors."""

    sample: Sample = field(default_factory=Sample)
    detectors: DetectorParams = field(default_factory=DetectorParams)
    pace: float = 0.0
    """Wall seconds per simulated second of acquisition (1: real time; 0: as fast as it computes)."""
    noise: list[dict] = field(default_factory=list)
    """The qubit's noise spectrum: tables with `kind` = lorentzian (a, w0, g), one_over_f
    (amplitude, alpha, w_lo, w_hi) or ohmic (eta, w_c); SI units (rad/s, rad^2/s^2)."""
    readout: ReadoutParams = field(default_factory=ReadoutParams)


DEFAULT_SIM: dict = {
    "sample": {"emitters": [{"x": 0.0, "y": 0.0}, {"x": 0.3e-6, "y": 0.1e-6}], "background_rate": 3000.0},
    "noise": [{"kind": "lorentzian", "a": 6e10, "w0": 0.0, "g": 1.2566e6},
              {"kind": "lorentzian", "a": 1.5e10, "w0": 7.5398e6, "g": 1.885e5}],
}
"""What `nvscope rig --sim` simulates when the config has no [sim] table: two NV-like emitters and a
qubit bath with a narrow line at 1.2 MHz."""

NOISE_KINDS = {"lorentzian": LorentzianNoise, "one_over_f": OneOverFNoise, "ohmic": OhmicNoise}


def noise_spectrum(tables: list[dict], where: str) -> NoiseSpectrum:
    """The simulated noise spectrum from the `[[sim.noise]]` tables."""
    parts = []
    for i, table in enumerate(tables):
        here = f"{where}[{i}]"
        kind = table.get("kind") if isinstance(table, dict) else None
        if kind not in NOISE_KINDS:
            raise ConfigError(f"{here}.kind: must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
        parts.append(from_dict(NOISE_KINDS[kind], {k: v for k, v in table.items() if k != "kind"}, here))
    return NoiseSpectrum(tuple(parts))


class PacedTagger:
    """A time tagger whose reads take at least `pace` x their duration of wall time, like hardware."""

    def __init__(self, tagger: SimTimeTagger, pace: float):
        self.tagger = tagger
        self.pace = pace
        self.constraints = tagger.constraints

    def read_tags(self, duration_s: float) -> tuple[np.ndarray, np.ndarray, int]:
        """The wrapped tagger's read, then a sleep until `pace * duration_s` has passed."""
        t0 = time.monotonic()
        out = self.tagger.read_tags(duration_s)
        time.sleep(max(0.0, self.pace * duration_s - (time.monotonic() - t0)))
        return out


def sim_devices(cfg: RigConfig) -> RigDevices:
    """Scanner and time tagger of the simulated instrument, seeded from the rig's seed."""
    sim = from_dict(SimConfig, cfg.sim or DEFAULT_SIM, "sim")
    scanner = SimScanner()
    tagger = SimTimeTagger(sim.sample, scanner, sim.detectors, seed=cfg.seed)
    truth = {}
    qubit = None
    if sim.noise:
        spectrum = noise_spectrum(sim.noise, "sim.noise")
        qubit = SimQubit(spectrum, sim.readout, seed=cfg.seed)
        omega = np.geomspace(2 * np.pi * 1e2, 2 * np.pi * 1e9, 600)
        truth = {"noise_omega": omega.tolist(), "noise_S": spectrum(omega).tolist()}
    return RigDevices(scanner=scanner, tagger=PacedTagger(tagger, sim.pace) if sim.pace > 0 else tagger,
                      qubit=qubit, truth=truth)
