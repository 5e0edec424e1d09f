"""The rig's devices, composed in one place from the `[devices]` table of the rig's configuration.

`kind = "sim"`: every simulated device is part of one simulated instrument (`firmware_sim`), set
up by the `[sim]` tables (sample, detectors, noise, readout, pace) and seeded from the rig's seed.
`nvscope rig --sim` simulates every device. The hardware drivers (`DRIVERS`, rt/drivers/) take
their own fields, e.g.

    microwave = {kind = "visa_microwave", resource = "TCPIP::192.168.1.5::INSTR", timeout_s = 2.0}
    scanner   = {kind = "visa_piezo", resource = "ASRL1::INSTR", timeout_s = 2.0}
    tagger    = {kind = "swabian", serial = "", channels = [1, 2]}

(`visa_library = "path/to/file.yaml@sim"` opens a VISA one on pyvisa-sim); a driver's module, and
pyvisa or the tagger's API, is imported only when a table names it. Hardware and simulated devices
may be mixed (the simulated tagger then sees the simulated scanner, not the hardware one). The
conformance check (`rt.hal.check_devices`) runs on what is composed.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nvscope.firmware_sim import DetectorParams, Sample, SimScanner, SimTimeTagger, warm_up
from nvscope.firmware_sim.mri_sample import MriLayer, SimMriConfig, SimMriSample, anticrossing_warning
from nvscope.firmware_sim.pulsed import PulsedImperfections, SimMicrowaveSource, SimPhotonCounter, SimPulseGenerator
from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, OneOverFNoise, ReadoutParams,
                                        SimQubit)

from .config import ConfigError, RigConfig, ScanConfig, from_dict
from .hal import DeviceError, RigDevices, check_devices
from .mri import check_mri
from .scan import raster

log = logging.getLogger(__name__)

DEFAULT_SIM: dict = {
    "sample": {"emitters": [{"x": 0.0, "y": 0.0}, {"x": 0.3e-6, "y": 0.1e-6}], "background_rate": 3000.0},
    "noise": [{"kind": "lorentzian", "a": 6e10, "w0": 0.0, "g": 1.2566e6},
              {"kind": "lorentzian", "a": 1.5e10, "w0": 7.5398e6, "g": 1.885e5}],
    "mri": {"dark_spins": [[2e-9, -1e-9, -6e-9]]},
}
"""What `nvscope rig --sim` simulates when the config has no [sim] table: two NV-like emitters, a
qubit bath with a narrow line at 1.2 MHz (its spin echo keeps C = 0.978 at 2 us, 0.913 at 4 us), and
the NV-MRI sample of `SimMriConfig`'s defaults with one dark spin 4 nm above the NV, 2.2 nm aside."""

SIM_ALL: dict = {name: {"kind": "sim"} for name in ("scanner", "tagger", "microwave", "counter", "pulser", "rf")}
"""The `[devices]` table that `--sim` stands for (the counter and pulser need a simulated qubit or
NV-MRI sample)."""


@dataclass(frozen=True)
class SimConfig:
    """`[sim]`: the sample (`[sim.sample]`: emitters, background, PSFs), both detectors, the qubit's
    noise and readout, the pulsed readout's imperfections (`[sim.pulsed]`), the NV-MRI sample
    (`[sim.mri]`) and the pace."""

    sample: Sample = field(default_factory=Sample)
    detectors: DetectorParams = field(default_factory=DetectorParams)
    pace: float = 0.0
    """Wall seconds per simulated second of acquisition (1: real time; 0: as fast as it computes)."""
    noise: list[dict] = field(default_factory=list)
    """The qubit's noise spectrum: tables with `kind` = lorentzian (a, w0, g), one_over_f
    (amplitude, alpha, w_lo, w_hi) or ohmic (eta, w_c); SI units (rad/s, rad^2/s^2)."""
    readout: ReadoutParams = field(default_factory=ReadoutParams)
    pulsed: PulsedImperfections = field(default_factory=PulsedImperfections)
    """`[sim.pulsed]`: pi_fidelity (0.5-1], drift_rms (relative), drift_time_s (s) of the pulsed readout
    (firmware_sim/pulsed.py); the defaults are a real rig's (0.97, 5 %, 600 s), 1, 0 make it ideal."""
    mri: dict = field(default_factory=dict)
    """`[sim.mri]`: the NV-MRI sample (firmware_sim/mri_sample.py `SimMriConfig`, with `[sim.mri.layer]`)."""

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        if not (np.isfinite(self.pace) and self.pace >= 0):
            raise ConfigError(f"{where}.pace: must be >= 0 wall s per simulated s, got {self.pace!r}")


NOISE_KINDS = {"lorentzian": LorentzianNoise, "one_over_f": OneOverFNoise, "ohmic": OhmicNoise}


def noise_spectrum(tables: list[dict], where: str) -> NoiseSpectrum:
    """The simulated noise spectrum from the `[[sim.noise]]` tables."""
    kinds = NOISE_KINDS
    parts = []
    for i, table in enumerate(tables):
        here = f"{where}[{i}]"
        kind = table.get("kind") if isinstance(table, dict) else None
        if kind not in kinds:
            raise ConfigError(f"{here}.kind: must be one of {', '.join(kinds)}, got {kind!r}")
        parts.append(from_dict(kinds[kind], {k: v for k, v in table.items() if k != "kind"}, here))
    return NoiseSpectrum(tuple(parts))


MAX_TRUTH_PIXELS = 20_000
"""The simulator records the true g2(0) of a raster of at most this many pixels (a few ms each)."""


def srm_truth(sim: SimConfig, scan: ScanConfig) -> list[float]:
    """The simulated sample's true g2(0) (`SimTimeTagger.true_g2_zero`: what the histogram over the measured
    singles shows, the detectors included) at every raster point of `scan`, by pixel index: the truth the
    demo and the tests compare the host's estimates with (the host never imports the simulator)."""
    scanner = SimScanner()
    tagger = SimTimeTagger(sim.sample, scanner, sim.detectors)
    out = []
    for p in raster(scan):
        scanner.move_to(p.x, p.y, p.z)
        out.append(float(tagger.true_g2_zero()))
    return out


def sim_instrument(cfg: RigConfig) -> tuple[dict, dict]:
    """Every device of the simulated instrument, by RigDevices field, and the truth it records."""
    sim = from_dict(SimConfig, cfg.sim or DEFAULT_SIM, "sim")
    warm_up()  # the simulator's own kernels, before the rig says bound
    scanner = SimScanner(pace=sim.pace)
    microwave, rf = SimMicrowaveSource(), SimMicrowaveSource()
    devices = {"scanner": scanner, "tagger": SimTimeTagger(sim.sample, scanner, sim.detectors, seed=cfg.seed,
                                                          pace=sim.pace),
               "microwave": microwave, "rf": rf}
    truth: dict = {"srm_true_g2_zero": srm_truth(sim, cfg.scan)} if cfg.scan.nx * cfg.scan.ny <= MAX_TRUTH_PIXELS else {}
    sample = None
    if "mri" in (cfg.sim or DEFAULT_SIM):
        mri = from_dict(SimMriConfig, sim.mri, "sim.mri")
        warning = anticrossing_warning(mri.b0_t)
        if warning:
            log.warning("%s", warning)
        layer = from_dict(MriLayer, mri.layer, "sim.mri.layer") if mri.layer else None
        sample = SimMriSample.from_config(mri, layer, scanner, microwave, rf)
        truth.update(sample.truth())
    if sim.noise or sample is not None:
        spectrum = noise_spectrum(sim.noise, "sim.noise")  # none: an echo that keeps its coherence
        qubit = SimQubit(spectrum, sim.readout, seed=cfg.seed)
        counter = SimPhotonCounter(qubit, seed=cfg.seed + 1, sample=sample)
        devices.update(counter=counter, pulser=SimPulseGenerator(qubit, counter, sample=sample,
                                                                 imperfections=sim.pulsed, seed=cfg.seed + 2))
        f = sim.pulsed.pi_fidelity  # what coherence read against the references is: amplitude C + offset
        truth.update(readout_amplitude=1.0, readout_offset=-(1.0 - f) / f)
    if sim.noise:
        omega = np.geomspace(2 * np.pi * 1e2, 2 * np.pi * 1e9, 600)
        truth.update(noise_omega=omega.tolist(), noise_S=spectrum(omega).tolist())
    return devices, truth


class Driver(NamedTuple):
    """A hardware driver: its module under rt/drivers/, its `[devices]` fields (a dataclass of that
    module), its class (with `from_config(cfg, name)`), and the RigDevices fields it can be."""

    module: str
    config: str
    cls: str
    fits: tuple[str, ...]


DRIVERS: dict[str, Driver] = {
    "visa_microwave": Driver("microwave_visa", "VisaMicrowaveConfig", "VisaMicrowaveSource", ("microwave", "rf")),
    "visa_piezo": Driver("piezo_visa", "VisaPiezoConfig", "VisaPiezoScanner", ("scanner",)),
    "swabian": Driver("swabian_tagger", "SwabianConfig", "SwabianTagger", ("tagger",)),
}
"""The hardware drivers a `[devices]` table may name by `kind` (besides "sim")."""


def driver_device(name: str, table: dict) -> object:
    """Open the hardware device `devices.<name>` describes; ConfigError (one line) naming the field, or
    the instrument when it cannot be opened."""
    kind = table.get("kind")
    if kind not in DRIVERS:
        raise ConfigError(f"devices.{name}.kind: no driver {kind!r} (known: sim, {', '.join(DRIVERS)})")
    driver = DRIVERS[kind]
    if name not in driver.fits:
        raise ConfigError(f"devices.{name}.kind: a {kind!r} device is a {' or '.join(driver.fits)}, not a {name}")
    module = importlib.import_module(f"{__package__}.drivers.{driver.module}")
    fields = from_dict(getattr(module, driver.config), {k: v for k, v in table.items() if k != "kind"},
                       f"devices.{name}")
    try:
        return getattr(module, driver.cls).from_config(fields, name)
    except DeviceError as exc:  # it cannot be opened, or does not answer
        raise ConfigError(f"devices.{name}: {exc}") from None
    except ValueError as exc:  # ranges that are not (min, max)
        raise ConfigError(f"devices.{name}: {exc}") from None


def close_devices(devices: dict) -> None:
    """Close the opened hardware devices that have a close() (after a failed composition)."""
    for device in devices.values():
        close = getattr(device, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 (closing is best effort; the first error is reported)
                log.warning("closing %s failed: %s", type(device).__name__, exc)


def _compose(cfg: RigConfig, sim: bool, table: dict, hardware: dict) -> RigDevices:
    """The simulated devices the table (or `sim`) asks for, with the `hardware` ones, checked."""
    chosen: dict = {}
    truth: dict = {}
    if sim or any(t.get("kind") == "sim" for t in table.values()):
        simulated, truth = sim_instrument(cfg)
        for name, t in table.items():
            if sim and name in simulated:
                chosen[name] = simulated[name]
            elif t.get("kind") == "sim":
                if name not in simulated:
                    raise ConfigError(f"devices.{name}: the simulated {name} needs a qubit: add [[sim.noise]] tables "
                                      "or a [sim.mri] table")
                chosen[name] = simulated[name]
    chosen.update(hardware)
    devices = RigDevices(**chosen, truth=truth) if {"scanner", "tagger"} <= set(chosen) else None
    if devices is None:
        missing = next(n for n in ("scanner", "tagger") if n not in chosen)
        raise ConfigError(f"devices.{missing}: missing (the rig needs one)")
    try:
        check_devices(devices)
    except DeviceError as exc:
        raise ConfigError(str(exc)) from None
    check_timing(cfg, devices)
    if all(getattr(devices, n) is not None for n in ("microwave", "counter", "pulser")):
        try:  # an [mri] this rig cannot run is refused now, not at the run's start
            check_mri(cfg.mri, devices, cfg.coherence.timing)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return devices


def check_timing(cfg: RigConfig, devices: RigDevices) -> None:
    """ConfigError (one line) when `[coherence.timing]` leaves less free time between microwave pulses
    than the pulse generator needs (its constraints' min_gap_s)."""
    if devices.pulser is None:
        return
    need, have = devices.pulser.constraints.min_gap_s, cfg.coherence.timing.min_gap_s
    if have < need:
        raise ConfigError(f"coherence.timing.min_gap_s: {have:.3g} s is below the pulse generator's shortest gap "
                          f"between pulses ({need:.3g} s): set it to at least that")


def compose_devices(cfg: RigConfig, sim: bool = False) -> RigDevices:
    """The rig's devices from `cfg.devices` (`sim`: every device simulated), conformance-checked, and
    the `[mri]` run checked against them when they can run one (rt/mri.py `check_mri`).

    ConfigError (one line, naming the field) when no device is configured, a required one is
    missing or does not fit its interface, or the [mri] scan cannot be run on them.
    """
    table = {name: getattr(cfg.devices, name) for name in SIM_ALL}
    if not sim and not any(table.values()):
        raise ConfigError("devices: no devices are configured on this rig: use --sim, or a [devices] table "
                          f"(kind = \"sim\" or one of {', '.join(DRIVERS)})")
    hardware: dict = {}
    try:
        for name, t in table.items():
            if not sim and t and t.get("kind") != "sim":
                hardware[name] = driver_device(name, t)
        devices = _compose(cfg, sim, table, hardware)
    except BaseException:  # a device refused or a field wrong: what was opened is closed again
        close_devices(hardware)
        raise
    return devices


__all__ = ["DEFAULT_SIM", "SIM_ALL", "Driver", "DRIVERS", "driver_device", "close_devices", "noise_spectrum",
           "sim_instrument", "check_timing", "compose_devices"]
