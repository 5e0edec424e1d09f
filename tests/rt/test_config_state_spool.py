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
    ("[scan]\ndwell_s = -1\n", "scan.dwell_s: must be > 0"),
    ("[scan]\nnx = 'ten'\n", "scan.nx: expected an integer"),
    ("[scan]\ndwel_s = 1.0\n", "scan.dwel_s: unknown field"),
    ("[scan]\nhistogram_mode = 'fast'\n", "scan.histogram_mode: must be 'allpairs' or 'startstop'"),
    ("seed = 1.5\n", "seed: expected an integer"),
    ("[link]\nwindow = 0\n", "link.window: must be >= 1"),
    ("scan = 3\n", "scan: expected a table"),
    ("[scan\n", "not valid TOML"),
    ("[scan]\nadaptive_g2_std = -0.1\n", "scan.adaptive_g2_std: must be a finite g2\\(0\\) error >= 0"),
    ("[scan]\nadaptive_g2_std = nan\nmax_dwell_s = 1.0\n", "scan.adaptive_g2_std: must be a finite"),
    ("[scan]\nadaptive_g2_std = 0.1\n", "scan.max_dwell_s: must be >= slice_s \\(0.05 s\\) with adaptive"),
    ("[scan]\nadaptive_g2_std = 0.1\nmax_dwell_s = 0.01\n", "scan.max_dwell_s: must be >= slice_s"),
    ("[scan]\nmax_dwell_s = -1.0\n", "scan.max_dwell_s: must be >= 0 s"),
    ("[scan]\nadaptive_g2_std = 0.1\nmax_dwell_s = 1.0\nreply_timeout_s = 0\n", "scan.reply_timeout_s: must be > 0"),
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
    again = Spool(tmp_path, capacity=3)  # a rig killed and restarted finds what was not acked
    msgs = [decode(frames) for frames in again.pending()]
    assert [m.seq for m in msgs] == [2, 3]
    assert msgs[1].hist.tolist() == [3] * 215
    assert again.last_seq("run") == 3 and again.last_seq("x") == -1
