"""rt.hal: every simulated device passes the conformance check, a device that does not fit is named;
the pulse generator's constraints; acquire_pixel on the tag stream (dwell from the tagger's clock,
overflows reported, the same histogram however the pixel is cut into reads)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.rt.config import RigConfig
from nvscope.rt.devices import DEFAULT_SIM, compose_devices
from nvscope.rt.hal import (DEVICE_INTERFACES, DeviceError, MicrowaveSource, PhotonCounter, PulseGenerator,
                            PulseGeneratorConstraints, RigDevices, Scanner, TagBlock, TimeTagger,
                            TimeTaggerConstraints, check_device, check_devices)
from nvscope.rt.kernels.binning import HistogramBinner, histogram_tags
from nvscope.rt.kernels.pulses import Pulse, Sequence, ShotTiming, coherence_shot, cpmg_pulse_times
from nvscope.rt.scan import acquire_pixel


def sim_rig() -> RigDevices:
    return compose_devices(RigConfig(seed=3, sim=DEFAULT_SIM), sim=True)


def test_every_simulated_device_fits_its_protocol_and_constraints():
    devices = sim_rig()
    check_devices(devices)
    for name, (protocol, constraints, _) in DEVICE_INTERFACES.items():
        device = getattr(devices, name)
        assert isinstance(device, protocol) and isinstance(device.constraints, constraints), name
    assert isinstance(devices.scanner, Scanner) and isinstance(devices.tagger, TimeTagger)
    assert isinstance(devices.microwave, MicrowaveSource) and isinstance(devices.counter, PhotonCounter)
    assert isinstance(devices.pulser, PulseGenerator)


class SimFoo:
    """A tagger of the old kind: it has read_tags, not the stream's read."""

    constraints = TimeTaggerConstraints(1, 1.0)

    def start(self) -> int:
        return 0

    def stop(self) -> None:
        pass

    def read_tags(self, duration_s: float):
        return None


class BadConstraints(SimFoo):
    constraints = PulseGeneratorConstraints()

    def read(self, duration_s: float):
        return None


def test_a_device_that_does_not_fit_is_named():
    devices = sim_rig()
    for wrong, words in ((SimFoo(), "devices.tagger: SimFoo lacks read()"),
                         (BadConstraints(), "devices.tagger: BadConstraints.constraints is a "
                                            "PulseGeneratorConstraints, not TimeTaggerConstraints")):
        devices.tagger = wrong
        with pytest.raises(DeviceError) as exc:
            check_devices(devices)
        assert str(exc.value) == words
    with pytest.raises(DeviceError, match="devices.scanner: SimFoo lacks move_to()"):
        check_device("scanner", SimFoo())
    with pytest.raises(DeviceError, match="devices.pulser: a pulsed readout needs both"):
        check_devices(RigDevices(SimScanner(), sim_rig().tagger, counter=sim_rig().counter))
    with pytest.raises(DeviceError, match="devices.tagger: missing"):
        check_devices(RigDevices(SimScanner(), None))


def test_pulse_generator_constraints_name_what_cannot_be_played():
    shot = coherence_shot(1e-6, cpmg_pulse_times(1e-6, 4), ShotTiming(pi_s=20e-9, pi_half_s=10e-9))
    PulseGeneratorConstraints(resolution_s=1e-9, min_pulse_s=10e-9).check(shot)
    cases = [(PulseGeneratorConstraints(channels=("laser", "mw")), "no channel 'rf'|no channel 'gate'"),
             (PulseGeneratorConstraints(min_pulse_s=15e-9), "shorter than the shortest pulse"),
             (PulseGeneratorConstraints(min_gap_s=300e-9), "closer than 3e-07 s"),
             (PulseGeneratorConstraints(resolution_s=4e-9), "not on the 4e-09 s grid"),
             (PulseGeneratorConstraints(max_length_s=1e-6), "outside \\(0, 1e-06\\] s")]
    for constraints, words in cases:
        with pytest.raises(DeviceError, match=words):
            constraints.check(shot)
    with pytest.raises(DeviceError, match="lies outside the sequence"):
        PulseGeneratorConstraints().check(Sequence((Pulse("mw", 0.5e-6, 1e-6),), 1e-6))


BRIGHT = Sample([Emitter(0.0, 0.0, collection_efficiency=0.1)], background_rate=1e5)


@pytest.mark.parametrize("mode", ["allpairs", "startstop"])
def test_a_pixel_is_the_same_however_it_is_cut_into_reads(mode):
    def pixel(slice_s, max_read_s):
        tagger = SimTimeTagger(BRIGHT, SimScanner(), seed=7, constraints=TimeTaggerConstraints(1, max_read_s))
        binner = HistogramBinner(mode)
        dwell = acquire_pixel(tagger, binner, slice_s, 0.05).dwell_s
        return dwell, binner.hist.copy(), binner.n_a, binner.n_b, tagger

    dwell, hist, n_a, n_b, tagger = pixel(0.05, 10.0)
    assert dwell == 0.05 and not tagger.streaming  # stopped after the pixel
    fresh = SimTimeTagger(BRIGHT, SimScanner(), seed=7)
    fresh.start()
    block = fresh.read(0.05)
    expected, e_a, e_b = histogram_tags(block.t_a, block.t_b, mode)
    assert hist.sum() > 1000 and (n_a, n_b) == (e_a, e_b)
    np.testing.assert_array_equal(hist, expected)
    for slice_s, max_read_s in ((0.013, 10.0), (0.05, 0.007), (0.003, 0.002)):
        d, h, a, b, _ = pixel(slice_s, max_read_s)
        assert d == pytest.approx(0.05, abs=1e-12) and (a, b) == (n_a, n_b)
        np.testing.assert_array_equal(h, hist)


class SlowClockTagger:
    """A hardware-like stream: each read returns 3 us more than asked, and loses a tag now and then."""

    constraints = TimeTaggerConstraints(1, 0.004)

    def __init__(self):
        self.clock, self.reads, self.lost_each = 1_000_000, [], 2

    def start(self) -> int:
        return self.clock

    def read(self, duration_s: float) -> TagBlock:
        self.reads.append(duration_s)
        self.clock += int(round(duration_s * 1e12)) + 3_000_000
        empty = np.empty(0, dtype=np.int64)
        return TagBlock(empty, np.array([self.clock - 1], dtype=np.int64), self.clock, self.lost_each)

    def stop(self) -> None:
        pass


def test_dwell_is_the_taggers_clock_and_overflows_are_reported():
    tagger = SlowClockTagger()
    asked = []
    got = acquire_pixel(tagger, HistogramBinner(), 0.01, 0.02, lambda t: asked.append(t) or False)
    assert got.dwell_s == pytest.approx((tagger.clock - 1_000_000) * 1e-12)
    assert got.dwell_s > 0.02 and max(tagger.reads) <= 0.004  # reads no longer than the tagger's max_read_s
    assert got.lost_tags == 2 * len(tagger.reads)  # every read's loss counted
    assert asked and all(a < 0.02 for a in asked)
    tagger.lost_each = 0
    assert acquire_pixel(tagger, HistogramBinner(), 0.01, 0.02).lost_tags == 0


def test_microwave_fm_constraints_and_the_rf_source():
    from nvscope.rt.hal import MicrowaveConstraints

    assert MicrowaveConstraints((1.0, 2.0), (0.0, 1.0)).max_fm_deviation_hz == 0.0  # no FM input by default
    with pytest.raises(ValueError, match="max_fm_deviation_hz"):
        MicrowaveConstraints((1.0, 2.0), (0.0, 1.0), float("nan"))
    devices = sim_rig()
    assert DEVICE_INTERFACES["rf"][0] is MicrowaveSource and devices.rf is not devices.microwave
    devices.microwave.set_fm_deviation(2.3e6)
    assert devices.microwave.fm_deviation_hz == 2.3e6
    with pytest.raises(DeviceError, match="FM deviation"):
        devices.microwave.set_fm_deviation(1e9)

    class NoFm:
        constraints = MicrowaveConstraints((1.0, 2.0), (0.0, 1.0))

        def set_frequency(self, f): ...

        def set_power(self, p): ...

        def set_output(self, on): ...
    with pytest.raises(DeviceError, match="devices.rf: NoFm lacks set_fm_deviation()"):
        check_device("rf", NoFm())
