"""A SCPI microwave signal generator (R&S SMB100A-like commands) as an `rt.hal.MicrowaveSource`.

The pulse generator's `mw_fm` channel drives the generator's external FM input (source EXT, DC
coupled, the channel's levels wired to +-1 V), so that the output sits at frequency +- deviation
(docs/physics.md section 2.4); deviation 0 switches FM off. pyvisa-sim file: rt/drivers/sim/microwave.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError
from ..hal import MicrowaveConstraints
from .visa import VisaInstrument, check_visa_fields, control, in_range, to_bool

DEFAULT_CONSTRAINTS = MicrowaveConstraints(frequency_range=(100e3, 20e9), power_range=(-145.0, 18.0),
                                           max_fm_deviation_hz=16e6)
"""An SMB100A with the 20 GHz option (the NV-MRI lock's default search reaches 6.4 GHz); set the
instrument's own ranges, or a safer power limit, in [devices]."""


@dataclass(frozen=True)
class VisaMicrowaveConfig:
    """`[devices]` microwave or rf with kind = "visa_microwave": the VISA resource, the reply timeout (s),
    the pyvisa backend ("" default; "path/to/file.yaml@sim" for pyvisa-sim), and the ranges the driver
    allows (Hz, dBm, Hz)."""

    resource: str
    timeout_s: float = 2.0
    visa_library: str = ""
    frequency_range: tuple[float, float] = DEFAULT_CONSTRAINTS.frequency_range
    power_range: tuple[float, float] = DEFAULT_CONSTRAINTS.power_range
    max_fm_deviation_hz: float = DEFAULT_CONSTRAINTS.max_fm_deviation_hz

    def check(self, where: str) -> None:
        """Resource, timeout and ranges usable; ConfigError naming the field."""
        check_visa_fields(self, where, ("frequency_range", "power_range"))
        if not (math.isfinite(self.max_fm_deviation_hz) and self.max_fm_deviation_hz >= 0):
            raise ConfigError(f"{where}.max_fm_deviation_hz: must be >= 0 Hz, got {self.max_fm_deviation_hz!r}")


def _fm_bounds(instrument: Any) -> tuple[float, float]:
    return 0.0, instrument.constraints.max_fm_deviation_hz


class VisaMicrowaveSource(VisaInstrument):
    """A CW microwave source with external FM over VISA (SCPI); every setter checks :SYST:ERR?."""

    frequency = control(":FREQ?", ":FREQ {:.3f}", "Output frequency in Hz.", in_range("frequency_range", "Hz"))
    power = control(":POW?", ":POW {:.2f}", "Output power in dBm.", in_range("power_range", "dBm"))
    output = control(":OUTP?", ":OUTP {:d}", "RF output on.", cast=to_bool)
    fm_deviation = control(":FM:DEV?", ":FM:DEV {:.3f}", "External FM deviation in Hz (per volt at the FM input).",
                           in_range(_fm_bounds, "Hz"))
    fm_on = control(":FM:STAT?", ":FM:STAT {:d}", "External FM on.", cast=to_bool)

    def __init__(self, resource_name: str, name: str = "microwave", timeout_s: float = 2.0, rm: Any = None,
                 visa_library: str = "", constraints: MicrowaveConstraints | None = None):
        self.constraints = constraints or DEFAULT_CONSTRAINTS
        super().__init__(resource_name, name, timeout_s, rm, visa_library)

    @classmethod
    def from_config(cls, cfg: VisaMicrowaveConfig, name: str) -> VisaMicrowaveSource:
        """Open the instrument a `[devices]` table describes (ValueError on ranges that are not (min, max))."""
        constraints = MicrowaveConstraints(cfg.frequency_range, cfg.power_range, cfg.max_fm_deviation_hz)
        return cls(cfg.resource, name, cfg.timeout_s, visa_library=cfg.visa_library, constraints=constraints)

    def set_frequency(self, frequency_hz: float) -> None:
        """Set the output frequency in Hz; DeviceError outside `constraints` (nothing sent) or if refused."""
        self.frequency = frequency_hz

    def set_power(self, power_dbm: float) -> None:
        """Set the output power in dBm; DeviceError outside `constraints` (nothing sent) or if refused."""
        self.power = power_dbm

    def set_output(self, on: bool) -> None:
        """Switch the RF output on or off."""
        self.output = bool(on)

    def set_fm_deviation(self, deviation_hz: float) -> None:
        """Set the external FM deviation in Hz (0: FM off); DeviceError outside [0, max_fm_deviation_hz]."""
        type(self).fm_deviation.validate(self, deviation_hz)
        if deviation_hz == 0:
            self.fm_on = False
            return
        self.write(":FM:SOUR EXT")
        self.fm_deviation = deviation_hz
        self.fm_on = True


__all__ = ["DEFAULT_CONSTRAINTS", "VisaMicrowaveConfig", "VisaMicrowaveSource"]
