"""The adaptive VQNS loop in closed loop: a rig process with a simulated qubit, the host asking for
FID and echo, fitting, proposing, requesting, stopping; everything lands in the run's file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from nvscope.host.daemon import HostDaemon
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.host.run_kinds import host_analyses
from nvscope.host.vqns.loop import VqnsController, VqnsLoopConfig
from nvscope.models.vqns.fit import FitConfig
from nvscope.proto.messages import Start

RIG_TOML = """\
seed = 9
[link]
spool_dir = "{spool}"
[coherence]
repetitions = 10_000_000
[[sim.noise]]
kind = "lorentzian"
a = 6e10
w0 = 0.0
g = 1.2566e6
"""


def test_adaptive_loop_runs_to_its_budget_and_stores_everything(tmp_path):
    cfg_path = tmp_path / "rig.toml"
    cfg_path.write_text(RIG_TOML.format(spool=(tmp_path / "spool").as_posix()))
    rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://127.0.0.1:*",
                            "--config", str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint = rig.stdout.readline().split()[1]
    host = HostDaemon(endpoint, tmp_path / "data", host_analyses(MleEstimator()))
    loop_cfg = VqnsLoopConfig(points=20, max_curves=3, min_curves=3, target_band=0.0,
                              candidates=(2, 4, 8), fit=FitConfig(restarts=20, seed=1))
    ctl = VqnsController(host, "vqns-test", loop_cfg)
    host.analyses["vqns"] = ctl.analysis
    try:
        host.command(Start, "vqns-test", run_kind="vqns")
        ctl.begin()
        deadline = time.monotonic() + 120
        while not host.stats.finished and time.monotonic() < deadline:
            host.step(100)
    finally:
        host.close()
        rig.send_signal(signal.SIGTERM)
        assert rig.wait(timeout=20) == 0
    assert host.stats.finished == [("vqns-test", "stopped")]
    assert "budget of 3 curves" in ctl.stop_reason
    with h5py.File(tmp_path / "data" / "vqns-test.h5", "r") as f:
        n = f["coherence/n_pulses"][()].tolist()
        assert n[:2] == [0, 1] and len(n) == 3 and n[2] in (2, 4, 8)
        assert n[2] == ctl.steps[0].proposal.ranked[0]  # what was measured is what was proposed
        c = f["coherence/coherence"][()]
        assert np.isfinite(c[:, :20]).all() and np.isnan(c[:, 20:]).all()  # rows padded with NaN
        assert f["vqns/steps/n_curves"][()].tolist() == [2, 3]
        s_lo, s_hi = f["vqns/S_lo"][()], f["vqns/S_hi"][()]
        assert (s_lo <= s_hi).all()
        assert "bootstrap" in f.attrs["band_method"] and "rank" in f.attrs["proposal_rule"]
        assert f.attrs["exit_status"] == "stopped"
    assert (tmp_path / "data" / "vqns-test.png").exists()
