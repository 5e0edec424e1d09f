"""The simulated rig: the one place where rt composes `firmware_sim` devices from the `[sim]` config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nvscope.firmware_sim import DetectorParams, Sample, SimScanner, SimTimeTagger

from .config import RigConfig, from_dict
from .scan import SrmDevices


@dataclass(frozen=True)
class SimConfig:
    """`[sim]`: the sample (`[sim.sample]`: emitters, background, PSFs) and both detectors."""

    sample: Sample = field(default_factory=Sample)
    detectors: DetectorParams = field(default_factory=DetectorParams)
    pace: float = 0.0
    """Wall seconds per simulated second of acquisition (1: real time; 0: as fast as it computes)."""


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


def sim_devices(cfg: RigConfig) -> SrmDevices:
    """Scanner and time tagger of the simulated instrument, seeded from the rig's seed."""
    sim = from_dict(SimConfig, cfg.sim, "sim")
    scanner = SimScanner()
    tagger = SimTimeTagger(sim.sample, scanner, sim.detectors, seed=cfg.seed)
    return SrmDevices(scanner=scanner, tagger=PacedTagger(tagger, sim.pace) if sim.pace > 0 else tagger)
