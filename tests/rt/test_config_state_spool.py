"""Rig config validation, the run-state table, and the on-disk spool of unacknowledged messages."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.proto import decode, encode
from nvscope.proto.messages import Pixel
from nvscope.rt.config import ConfigError, load_rig_config
from nvscope.rt.spool import Spool
from nvscope.rt.state import RunState, StateError, transition


@pytest.mark.parametrize("text, words", [
    ("[scan]\ndwell_s = -1\n", "scan.dwell_s: must be finite and > 0"),
    ("[scan]\nnx = 'ten'\n", "scan.nx: expected an integer"),
    ("[scan]\ndwel_s = 1.0\n", "scan.dwel_s: unknown field"),
    ("[scan]\nhistogram_mode = 'fast'\n", "scan.histogram_mode: must be 'allpairs' or 'startstop'"),
    ("seed = 1.5\n", "seed: expected an integer"),
    ("seed = -1\n", "seed: must be an integer in \\[0, 2\\^63\\), got -1"),
    ("[coherence.timing]\nlaser_s = inf\n", "laser_s must be a finite time >= 0 s, got inf"),
    ("[link]\nwindow = 0\n", "link.window: must be >= 1"),
    ("scan = 3\n", "scan: expected a table"),
    ("[scan\n", "not valid TOML"),
    ("[scan]\nadaptive_g2_std = -0.1\n", "scan.adaptive_g2_std: must be a finite g2\\(0\\) error >= 0"),
    ("[scan]\nadaptive_g2_std = nan\nmax_dwell_s = 1.0\n", "scan.adaptive_g2_std: must be a finite"),
    ("[scan]\nadaptive_g2_std = 0.1\n", "scan.max_dwell_s: must be >= slice_s \\(0.05 s\\) with adaptive"),
    ("[scan]\nadaptive_g2_std = 0.1\nmax_dwell_s = 0.01\n", "scan.max_dwell_s: must be >= slice_s"),
    ("[scan]\nmax_dwell_s = -1.0\n", "scan.max_dwell_s: must be >= 0 s"),
    ("[scan]\nadaptive_g2_std = 0.1\nmax_dwell_s = 1.0\nreply_timeout_s = 0\n", "scan.reply_timeout_s: must be > 0"),
    ("[scan]\ndelay_a_s = nan\n", "scan.delay_a_s: must be a finite channel delay within \\+-1e-07 s, got nan"),
    ("[scan]\ndelay_b_s = 1e-7\n", "scan.delay_b_s: must be a finite channel delay within \\+-1e-07 s, got 1e-07"),
    ("[scan]\ndelay_b_s = -2e-7\n", "scan.delay_b_s: must be a finite channel delay"),
    ("[scan]\ndelay_a_s = '2 ns'\n", "scan.delay_a_s: expected"),
    ("[coherence]\ndark_fraction = 0.0\n", "coherence.dark_fraction: must be in \\(0, 10\\] dark-reference shots"),
    ("[coherence]\ndark_fraction = nan\n", "coherence.dark_fraction: must be in"),
    ("[coherence]\nblock_s = 0.0\n", "coherence.block_s: must be > 0 s, got 0.0"),
])
def test_bad_config_names_the_field(tmp_path, text, words):
    path = tmp_path / "rig.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_rig_config(path)


def test_good_config_and_missing_file(tmp_path):
    path = tmp_path / "rig.toml"
    path.write_text("seed = 7\n[scan]\nnx = 3\nny = 2\ndwell_s = 0.5\n")
    cfg = load_rig_config(path)
    assert (cfg.seed, cfg.scan.nx, cfg.scan.ny, cfg.scan.dwell_s) == (7, 3, 2, 0.5)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rig_config(tmp_path / "nope.toml")


def test_channel_delays_config(tmp_path):
    path = tmp_path / "rig.toml"
    path.write_text("[scan]\ndelay_a_s = -3.5e-9\ndelay_b_s = 99e-9\n")
    scan = load_rig_config(path).scan
    assert (scan.delay_a_s, scan.delay_b_s) == (-3.5e-9, 99e-9)
    default = load_rig_config(None).scan
    assert (default.delay_a_s, default.delay_b_s) == (0.0, 0.0)  # no correction unless measured


def test_adaptive_dwell_config(tmp_path):
    path = tmp_path / "rig.toml"
    path.write_text("[scan]\nslice_s = 0.1\nadaptive_g2_std = 0.05\nmax_dwell_s = 2\n")
    scan = load_rig_config(path).scan
    assert scan.adaptive and (scan.adaptive_g2_std, scan.max_dwell_s, scan.reply_timeout_s) == (0.05, 2.0, 0.5)
    assert not load_rig_config(None).scan.adaptive  # off by default: fixed dwell_s


def test_state_table():
    s = transition(RunState.IDLE, "start")
    assert s is RunState.RUNNING
    with pytest.raises(StateError, match="cannot 'start' while running"):
        transition(s, "start")
    assert transition(transition(s, "stop"), "end") is RunState.IDLE
    with pytest.raises(StateError, match="while idle"):
        transition(RunState.IDLE, "stop")


def test_spool_keeps_until_ack_survives_restart_and_is_bounded(tmp_path):
    spool = Spool(tmp_path, capacity=3)
    for seq in (1, 2, 3):
        spool.put("run", seq, encode(Pixel(run_id="run", seq=seq, dwell_s=0.1, n_events=215 * seq, hist=np.full(215, seq))))
    assert spool.full
    with pytest.raises(OverflowError, match="spool full"):
        spool.put("run", 4, encode(Pixel(run_id="run", seq=4)))
    assert spool.ack("run", 1) == 1 and spool.ack("other", 9) == 0
    spool.close()  # the rig ends (a killed process releases its lock just the same)
    again = Spool(tmp_path, capacity=3)  # a rig killed and restarted finds what was not acked
    msgs = [decode(frames) for frames in again.pending()]
    assert [m.seq for m in msgs] == [2, 3]
    assert msgs[1].hist.tolist() == [3] * 215
    assert again.last_seq("run") == 3 and again.last_seq("x") == -1


@pytest.mark.parametrize("text, words", [
    ("[devices]\ntagger = {kind = 'visa'}\n", "rig.toml.devices.tagger.kind: no driver 'visa' \\(known: sim, visa_microwave, visa_piezo, swabian\\)$"),
    ("[devices]\nscanner = {port = 'COM1'}\n", "rig.toml.devices.scanner.kind: missing \\(known: sim, visa_microwave, visa_piezo, swabian\\)$"),
    ("[devices]\ntagger = {kind = 'sim', port = 3}\n", "rig.toml.devices.tagger.port: unknown field"),
    ("[devices]\nlaser = {kind = 'sim'}\n", "rig.toml.devices.laser: unknown field"),
    ("devices = 3\n", "rig.toml.devices: expected a table"),
    ("[coherence.timing]\npi_s = -1e-9\n", "rig.toml.coherence.timing: pi_s must be a finite time >= 0 s"),
    ("[coherence.timing]\ngate_s = 2e-6\n", "rig.toml.coherence.timing: gate_s must be > 0 s and fit twice"),
    ("[mri]\nnxx = 3\n", "rig.toml.mri.nxx: unknown field \\(known: deer_gaps, "),
    ("[mri.lock]\ngian = 0.3\n", "rig.toml.mri.lock.gian: unknown field"),
    ("[mri]\nnx = 0\n", "rig.toml.mri.nx: must be >= 1, got 0$"),
    ("[mri]\npsf_gaps = [0.0, 5e-9]\n", "rig.toml.mri.psf_gaps\\[0\\]: must be > 0 m"),
    ("[mri]\ndeer_gaps = [-1e-9]\n", "rig.toml.mri.deer_gaps\\[0\\]: must be > 0 m"),
    ("[mri]\npsf_gaps = [10e-9, 12e-9, 15e-9]\n", "rig.toml.mri.psf_gaps: must be evenly spaced, got steps of 2e-09, 3e-09 m$"),
    ("[[mri.sections]]\ny = 0.0\ngaps = []\n", "rig.toml.mri.sections\\[0\\].gaps: must list at least one"),
    ("[[mri.sections]]\ny = 0.0\n", "rig.toml.mri.sections\\[0\\].gaps: missing \\(required: y, gaps\\)$"),
    ("[[mri.sections]]\ny = 0.0\ngaps = [1e-8]\nz = 3\n", "rig.toml.mri.sections\\[0\\].z: unknown field"),
    ("[mri.lock]\ngate_s = 0.0\n", "rig.toml.mri.lock.gate_s: must be > 0 s"),
    ("[mri.lock]\nsearch_hi_hz = 5.5e9\n", "rig.toml.mri.lock.search_hi_hz: must exceed search_lo_hz"),
])
def test_bad_devices_config_is_one_line_naming_the_field(tmp_path, text, words):
    path = tmp_path / "rig.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as exc:
        load_rig_config(path)
    assert "\n" not in str(exc.value)


def test_devices_are_composed_from_the_table_or_all_simulated(tmp_path):
    from nvscope.rt.devices import compose_devices

    def cfg(text):
        path = tmp_path / "rig.toml"
        path.write_text(text)
        return load_rig_config(path)

    with pytest.raises(ConfigError, match="^devices: no .* configured on this rig.*use --sim"):
        compose_devices(cfg("seed = 2\n"))
    with pytest.raises(ConfigError, match="^devices.tagger: missing"):
        compose_devices(cfg("[devices]\nscanner = {kind = 'sim'}\n"))
    with pytest.raises(ConfigError, match="^devices.counter: the simulated counter needs a qubit"):
        compose_devices(cfg("[devices]\nscanner = {kind = 'sim'}\ntagger = {kind = 'sim'}\ncounter = {kind = 'sim'}\n"
                            "[sim.sample]\nbackground_rate = 1e3\n"))
    with pytest.raises(ConfigError, match="^sim.pace: must be >= 0"):
        compose_devices(cfg("[sim]\npace = -1.0\n"), sim=True)
    srm_only = compose_devices(cfg("[devices]\nscanner = {kind = 'sim'}\ntagger = {kind = 'sim'}\n"))
    assert srm_only.pulser is None and srm_only.counter is None and srm_only.microwave is None
    everything = compose_devices(cfg("seed = 2\n"), sim=True)  # --sim: the default [sim] has a qubit
    assert None not in (everything.microwave, everything.counter, everything.pulser)
    assert everything.truth["noise_S"] and everything.tagger.scanner is everything.scanner


def test_the_rig_refuses_without_devices_in_one_line(tmp_path, capsys):
    from nvscope.rt.rig_main import main

    path = tmp_path / "rig.toml"
    for text, words in (("seed = 2\n", "rig.toml.devices: no devices are configured"),
                        ("[devices]\ntagger = {kind = 'visa'}\n", "rig.toml.devices.tagger.kind: no driver 'visa' (known: sim, visa_microwave"),
                        ("[devices]\nscanner = {kind = 'sim'}\ntagger = {kind = 'sim'}\n[sim]\npace = -1.0\n",
                         "rig.toml.sim.pace: must be >= 0")):
        path.write_text(text)
        assert main(["--config", str(path), "--bind", "tcp://127.0.0.1:*"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("nvscope rig: bad configuration: ") and words in err and "\n" not in err


def test_warm_up_compiles_every_binning_kernel_before_the_first_pixel():
    # In a fresh interpreter: nothing is compiled at import; after warm_up every kernel that Python
    # calls has a compiled (or cache-loaded) signature, so the first pixel pays nothing. (The kernels
    # they call are compiled into them: a cache-loaded caller leaves its callees' dispatchers empty.)
    import subprocess
    import sys

    code = ("from nvscope.rt.kernels import binning, warm_up\n"
            "entry = [binning._check_tags, binning._add_allpairs, binning._add_startstop, binning.bin_allpairs,"
            " binning.bin_startstop]\n"
            "assert not any(k.signatures for k in entry)\n"
            "warm_up()\n"
            "print([k.__name__ for k in entry if not k.signatures])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("table, words", [
    ("kind = 'lorentzian'\na = -1e10\nw0 = 0.0\ng = 1e6\n", "sim.noise\\[0\\]: a lorentzian needs a >= 0"),
    ("kind = 'lorentzian'\na = 1e10\nw0 = 0.0\ng = 0.0\n", "sim.noise\\[0\\]: a lorentzian needs .* g > 0"),
    ("kind = 'one_over_f'\namplitude = 1e3\nw_lo = 1e6\nw_hi = 1e3\n", "sim.noise\\[0\\]: 1/f noise needs .* w_lo < w_hi"),
    ("kind = 'ohmic'\neta = -1.0\nw_c = 1e6\n", "sim.noise\\[0\\]: ohmic noise needs eta >= 0"),
])
def test_a_noise_spectrum_that_is_not_a_spectrum_is_one_line(tmp_path, table, words):
    from nvscope.rt.devices import compose_devices

    path = tmp_path / "rig.toml"
    path.write_text("[[sim.noise]]\n" + table)
    with pytest.raises(ConfigError, match=words) as exc:
        compose_devices(load_rig_config(path), sim=True)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("table, words", [
    ("pi_fidelity = 1.2\n", "^sim.pulsed: pi_fidelity must be in \\(0.5, 1\\]"),
    ("pi_fidelity = 0.3\n", "^sim.pulsed: pi_fidelity must be in \\(0.5, 1\\]"),
    ("drift_rms = -0.01\n", "^sim.pulsed: drift_rms must be in \\[0, 1\\]"),
    ("drift_time_s = 0.0\n", "^sim.pulsed: drift_time_s must be > 0 s"),
    ("drift = 0.1\n", "^sim.pulsed.drift: unknown field"),
])
def test_bad_pulsed_readout_imperfections_are_one_line(tmp_path, table, words):
    from nvscope.rt.devices import compose_devices

    path = tmp_path / "rig.toml"
    path.write_text("[[sim.noise]]\nkind = 'lorentzian'\na = 1e10\nw0 = 0.0\ng = 1e6\n[sim.pulsed]\n" + table)
    with pytest.raises(ConfigError, match=words) as exc:
        compose_devices(load_rig_config(path), sim=True)
    assert "\n" not in str(exc.value)


def test_the_simulated_readout_is_a_real_rigs_unless_configured(tmp_path):
    from nvscope.rt.devices import compose_devices

    path = tmp_path / "rig.toml"
    path.write_text("seed = 2\n")
    real = compose_devices(load_rig_config(path), sim=True)
    assert (real.pulser.imperfections.pi_fidelity, real.pulser.imperfections.drift_rms) == (0.97, 0.05)
    assert real.truth["readout_offset"] == pytest.approx(-0.03 / 0.97) and real.truth["readout_amplitude"] == 1.0
    path.write_text("[[sim.noise]]\nkind = 'lorentzian'\na = 1e10\nw0 = 0.0\ng = 1e6\n"
                    "[sim.pulsed]\npi_fidelity = 1.0\ndrift_rms = 0.0\n")
    ideal = compose_devices(load_rig_config(path), sim=True)
    assert ideal.truth["readout_offset"] == 0.0 and ideal.pulser.drift.mean_factor(100.0) == 1.0


def test_a_timing_gap_below_the_pulse_generators_is_one_config_line():
    from nvscope.firmware_sim.pulsed import SimPhotonCounter, SimPulseGenerator
    from nvscope.firmware_sim.qubit import NoiseSpectrum, SimQubit
    from nvscope.rt.config import CoherenceConfig, RigConfig
    from nvscope.rt.devices import check_timing
    from nvscope.rt.hal import PulseGeneratorConstraints, RigDevices
    from nvscope.rt.kernels.pulses import ShotTiming

    qubit = SimQubit(NoiseSpectrum(()))
    counter = SimPhotonCounter(qubit)
    devices = RigDevices(None, None, None, counter,
                         SimPulseGenerator(qubit, counter, PulseGeneratorConstraints(min_gap_s=20e-9)))
    with pytest.raises(ConfigError, match="^coherence.timing.min_gap_s: 1e-08 s is below the pulse generator's "
                                          "shortest gap between pulses \\(2e-08 s\\): set it to at least that$"):
        check_timing(RigConfig(coherence=CoherenceConfig(timing=ShotTiming(min_gap_s=10e-9))), devices)
    check_timing(RigConfig(coherence=CoherenceConfig(timing=ShotTiming(min_gap_s=20e-9))), devices)
    check_timing(RigConfig(), RigDevices(None, None))  # no pulse generator: nothing to check


def test_an_ack_beyond_what_was_sent_deletes_nothing(tmp_path):
    """A forged ack (seq 10^9 while the host is down) used to empty the spool; it is now a counted
    protocol error, and the real host's ack still works."""
    import zmq

    from nvscope.proto import encode
    from nvscope.proto.endpoints import rig_socket
    from nvscope.proto.messages import Ack, Coherence, Hello
    from nvscope.rt.config import LinkConfig
    from nvscope.rt.link import RtLink

    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*")
    link = RtLink(sock, Spool(tmp_path / "spool", 100), LinkConfig(resend_after_s=60.0))
    host = ctx.socket(zmq.DEALER)
    host.connect(sock.getsockopt(zmq.LAST_ENDPOINT).decode())
    try:
        host.send_multipart(encode(Hello(run_id="", seq=0, version="test")))
        link.poll(2000)
        for seq in range(3):
            link.send(Coherence(run_id="r1", seq=seq), lambda _: None)
        host.send_multipart(encode(Ack(run_id="r1", seq=10**9)))
        assert link.poll(2000) == []
        assert len(link.spool) == 3 and link.refusals.count == 1
        host.send_multipart(encode(Ack(run_id="r1", seq=1)))
        link.poll(2000)
        assert len(link.spool) == 1 and link.spool.last_seq("r1") == 2 and link.refusals.count == 1
    finally:
        host.close(linger=0)
        sock.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("text, words", [
    ("[scan]\ndwell_s = inf\n", "scan.dwell_s: must be finite and > 0 s, got inf"),
    ("[scan]\nslice_s = nan\n", "scan.slice_s: must be finite and > 0 s, got nan"),
    ("[scan]\nstep = inf\n", "scan.step: must be finite and > 0 m"),
    ("[scan]\nx0 = inf\n", "scan.x0: must be finite"),
    ("[scan]\nnx = 100000\nny = 100000\n", "scan.nx: must be in [1, 4096], got 100000"),
    ("[link]\nheartbeat_s = inf\n", "link.heartbeat_s: must be finite and > 0 s"),
    ("[link]\nspool_dir = \"{file}\"\n", "link.spool_dir: cannot keep the journal in"),
])
def test_values_that_would_spin_or_never_end_are_one_line_errors(tmp_path, capsys, text, words):
    """An infinite dwell used to spin the rig at 81 % CPU deaf to SIGTERM, a 1e5 x 1e5 grid was taken,
    and a spool_dir that is a file ended in a traceback (issue 11)."""
    from nvscope.rt.rig_main import main

    (tmp_path / "afile").write_text("")
    path = tmp_path / "rig.toml"
    path.write_text(text.replace("{file}", (tmp_path / "afile").as_posix()))
    assert main(["--sim", "--config", str(path), "--bind", "tcp://127.0.0.1:*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nvscope rig: bad configuration: rig.toml.") and words in err and "\n" not in err


def test_a_second_rig_on_the_same_spool_is_refused_in_one_line(tmp_path, capsys):
    """Two rigs on one spool broke each other's runs (issue 11): the second is refused, naming the first."""
    import os

    from nvscope.rt.rig_main import main
    from nvscope.rt.spool import SpoolInUse

    first = Spool(tmp_path / "spool", 10)
    with pytest.raises(SpoolInUse, match=f"in use by another rig \\(pid {os.getpid()}\\)"):
        Spool(tmp_path / "spool", 10)
    path = tmp_path / "rig.toml"
    path.write_text(f"[link]\nspool_dir = \"{(tmp_path / 'spool').as_posix()}\"\n")
    assert main(["--sim", "--config", str(path), "--bind", "tcp://127.0.0.1:*"]) == 2
    err = capsys.readouterr().err.strip()
    assert "rig.toml.link.spool_dir:" in err and "in use by another rig" in err and "\n" not in err
    first.close()
    Spool(tmp_path / "spool", 10).close()  # free again once the first is gone


def test_a_burst_of_hellos_replays_once_and_a_silent_host_gets_no_replays(tmp_path):
    """Eight queued hellos of one reconnection replay the journal once; a host that is not heard gets no
    replay from the resend timer, one that is heard but acknowledges nothing gets them with back-off."""
    import zmq

    from nvscope.proto import decode, encode
    from nvscope.proto.endpoints import rig_socket
    from nvscope.proto.messages import Coherence, Heartbeat, Hello
    from nvscope.rt.config import LinkConfig
    from nvscope.rt.link import RtLink

    now = [0.0]
    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*")
    link = RtLink(sock, Spool(tmp_path / "j", 100), LinkConfig(resend_after_s=1.0), clock=lambda: now[0])
    host = ctx.socket(zmq.DEALER)
    host.connect(sock.getsockopt(zmq.LAST_ENDPOINT).decode())

    def received() -> int:
        n = 0
        while host.poll(200):
            if not isinstance(decode(host.recv_multipart()), Heartbeat):
                n += 1
        return n
    try:
        host.send_multipart(encode(Hello(run_id="", seq=0, version="t")))
        link.poll(2000)
        for seq in range(5):
            link.send(Coherence(run_id="r", seq=seq), lambda _: None)
        assert received() == 5 and link.replays == 1
        now[0] += 5.0  # later, a burst of hellos queued during an outage arrives
        for _ in range(8):
            host.send_multipart(encode(Hello(run_id="", seq=0, version="t")))
        for _ in range(4):
            link.poll(200)
        assert (link.replays, link.hellos_ignored) == (2, 7) and received() == 5  # the burst: one replay of 5
        now[0] += 10.0  # nothing heard, nothing acknowledged: a silent host gets no replay
        link.poll(50)
        assert link.replays == 2 and received() == 0
        host.send_multipart(encode(Heartbeat(run_id="", seq=0, state="host")))  # heard, still no ack
        link.poll(2000)
        assert link.replays == 3 and received() == 5
        now[0] += 1.5  # back-off: the next replay waits 2 s, not 1
        host.send_multipart(encode(Heartbeat(run_id="", seq=0, state="host")))
        link.poll(2000)
        assert link.replays == 3
    finally:
        host.close(linger=0)
        link.close()
        sock.close(linger=0)
        ctx.term()
