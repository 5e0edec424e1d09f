"""nvscope.firmware_sim: the simulated instrument (physics.md).

Antibunching SRM: three-level emitters (`emitter`), the beam splitter and detectors
(`detectors`), and the sample, scanner and time tagger that the rt loop is handed (`sample`).
"""

from .detectors import DetectorParams
from .emitter import (
    ThreeLevelRates,
    emission_rate,
    g2_emitter,
    g2_measured,
    g2_parameters,
    photon_intervals,
)
from .sample import Emitter, Sample, SimScanner, SimTimeTagger

__all__ = [
    "ThreeLevelRates", "g2_parameters", "g2_emitter", "g2_measured", "emission_rate",
    "photon_intervals", "DetectorParams", "Emitter", "Sample", "SimScanner", "SimTimeTagger",
]
