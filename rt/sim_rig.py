"""The simulated rig: the one place where rt composes `firmware_sim` devices from the `[sim]` config."""

from __future__ import annotations

from dataclasses import dataclass, field

from nvscope.firmware_sim import DetectorParams, Sample, SimScanner, SimTimeTagger

from .config import RigConfig, from_dict
from .scan import SrmDevices


@dataclass(frozen=True)
class SimConfig:
    """`[sim]`: the sample (`[sim.sample]`: emitters, background, PSFs) and both detectors."""

    sample: Sample = field(default_factory=Sample)
    detectors: DetectorParams = field(default_factory=DetectorParams)


def sim_devices(cfg: RigConfig) -> SrmDevices:
    """Scanner and time tagger of the simulated instrument, seeded from the rig's seed."""
    sim = from_dict(SimConfig, cfg.sim, "sim")
    scanner = SimScanner()
    return SrmDevices(scanner=scanner, tagger=SimTimeTagger(sim.sample, scanner, sim.detectors, seed=cfg.seed))
