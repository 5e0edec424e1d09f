"""An instrument that times out: the rig pauses, retries, records each retry in the run (notices), and
the pixel's data are whole; one that never answers fails the run saying so."""

from __future__ import annotations

import dataclasses

import pytest

from nvscope.proto.messages import Notice, Pixel, RunEnd, Start
from nvscope.rt.config import RetryConfig
from nvscope.rt.devices import compose_devices
from nvscope.rt.hal import DeviceTimeout, check_device
from nvscope.rt.retry import Retrying

from nvscope.rt.rig import Rig

from .test_run_loop import ScriptedLink, rig_config


class FlakyScanner:
    """The simulated scanner, but the moves numbered in `fail_at` (1-based) time out once each."""

    def __init__(self, scanner, fail_at: dict[int, int]):
        self.scanner, self.fail_at, self.moves, self.constraints = scanner, dict(fail_at), 0, scanner.constraints

    def move_to(self, x, y, z):
        self.moves += 1
        key = self.moves
        if self.fail_at.get(key, 0) > 0:
            self.fail_at[key] -= 1
            self.moves -= 1  # the same move is asked again
            raise DeviceTimeout("scanner (ASRL1::INSTR): no reply within 2 s to 'POS?'")
        self.scanner.move_to(x, y, z)


def run_with(tmp_path, fail_at: dict[int, int], attempts: int):
    cfg = rig_config()
    devices = compose_devices(cfg, sim=True)
    link = ScriptedLink(tmp_path, lambda sent: [])
    rig = Rig(cfg, devices, link)
    pauses: list[float] = []
    flaky = Retrying("scanner", FlakyScanner(devices.scanner, fail_at), RetryConfig(attempts=attempts, pause_s=0.5),
                     rig.report_retry, sleep=pauses.append)
    rig.devices = dataclasses.replace(devices, scanner=flaky)
    start = rig._apply(Start(run_id="r1", seq=1, run_kind="srm"))
    rig._run(start)
    return link.sent, pauses


def test_a_wrapped_device_still_fits_its_interface():
    cfg = rig_config()
    devices = compose_devices(cfg, sim=True)
    wrapped = Retrying("scanner", devices.scanner, RetryConfig(), lambda *a: None)
    check_device("scanner", wrapped)  # raises DeviceError naming what does not fit
    assert wrapped.constraints is devices.scanner.constraints and wrapped.move_to.__name__ == "move_to"


def test_timeouts_are_retried_recorded_and_the_pixels_are_whole(tmp_path):
    sent, pauses = run_with(tmp_path, {3: 2}, attempts=3)  # the 3rd pixel's move times out twice
    pixels = [m for m in sent if isinstance(m, Pixel)]
    notices = [m for m in sent if isinstance(m, Notice)]
    assert [p.index for p in pixels] == list(range(6)) and sent[-1].exit_status == "completed"
    assert [(n.source, n.retry) for n in notices] == [("scanner", 1), ("scanner", 2)]
    assert "no reply within 2 s to 'POS?'" in notices[0].text and "retry 1 of 3" in notices[0].text
    assert pauses == [0.5, 0.5]  # paused between tries
    seqs = [m.seq for m in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one numbering: data, notices, run_end
    assert sent.index(notices[0]) > sent.index(pixels[2])  # recorded after the pixel it happened in


def test_an_instrument_that_never_answers_fails_the_run_with_its_retries_recorded(tmp_path):
    sent, pauses = run_with(tmp_path, {2: 99}, attempts=2)
    end = sent[-1]
    assert isinstance(end, RunEnd) and end.exit_status == "failed" and end.n_pixels == 1
    assert end.reason.startswith("DeviceTimeout: scanner (ASRL1::INSTR): no reply within 2 s")
    assert "at step 2 of 6" in end.reason
    assert [n.retry for n in sent if isinstance(n, Notice)] == [1, 2] and len(pauses) == 2
    assert not any(isinstance(m, Pixel) and m.index == 1 for m in sent)  # nothing half-acquired is data


@pytest.mark.parametrize("attempts, pause", [(-1, 1.0), (101, 1.0), (3, float("inf")), (3, -1.0)])
def test_retry_config_out_of_range_is_refused_naming_the_field(attempts, pause):
    from nvscope.rt.config import ConfigError, RigConfig, from_dict
    with pytest.raises(ConfigError, match=r"^rig\.retry\.(attempts|pause_s): must be in"):
        from_dict(RigConfig, {"retry": {"attempts": attempts, "pause_s": pause}}, "rig")


def test_the_rig_retries_its_real_instruments_and_not_the_simulated_ones(tmp_path):
    """`build_rig` wraps every device of a real driver (here VISA on pyvisa-sim) in `Retrying`."""
    import zmq

    from nvscope.proto.endpoints import rig_socket
    from nvscope.rt.config import load_rig_config
    from nvscope.rt.rig_main import build_rig

    from .test_drivers_visa import MW_LIB, MW_RES, PIEZO_LIB, PIEZO_RES

    path = tmp_path / "rig.toml"
    path.write_text(f"""
[link]
spool_dir = "{tmp_path / 'journal'}"
[devices]
microwave = {{kind = "visa_microwave", resource = "{MW_RES}", visa_library = "{MW_LIB}"}}
scanner = {{kind = "visa_piezo", resource = "{PIEZO_RES}", visa_library = "{PIEZO_LIB}", settle_s = 0.001}}
tagger = {{kind = "sim"}}
""")
    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*")
    try:
        rig = build_rig(load_rig_config(path), sim=False, sock=sock)
        d = rig.devices
        assert isinstance(d.microwave, Retrying) and isinstance(d.scanner, Retrying)
        assert not isinstance(d.tagger, Retrying)
        d.microwave.set_frequency(2.87e9)  # through the wrapper to the instrument
        assert d.microwave.frequency == 2.87e9
        rig.link.close()
    finally:
        sock.close()
        ctx.term()
