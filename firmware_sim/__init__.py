"""nvscope.firmware_sim: the simulated instrument, one device per `rt.hal` interface (docs/physics.md).

Antibunching SRM: three-level emitters (`emitter`), the beam splitter and detectors
(`detectors`), and the sample, scanner and time tagger that the rt loop is handed (`sample`).
Noise spectroscopy and NV-MRI: the NV spin under a noise spectrum (`qubit`), the NV under the tip
(`magnetic_tip`, `nv_center`), the dark spins (`dark_spins`) and the NV-MRI sample (`mri_sample`),
and the microwave and RF sources, pulse generator and photon counter around them (`pulsed`).
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
from .sample import Emitter, Sample, SimScanner, SimTimeTagger, warm_up

__all__ = [
    "ThreeLevelRates", "g2_parameters", "g2_emitter", "g2_measured", "emission_rate",
    "photon_intervals", "DetectorParams", "Emitter", "Sample", "SimScanner", "SimTimeTagger", "warm_up",
]
