"""An NV-MRI run end to end: the simulated rig (its own process) and the host over TCP loopback, run
kind "mri": every tip position stored once, the maps and the localization written, the localized spin
within its sigmas of the simulator's truth."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from nvscope.host.daemon import HostDaemon
from nvscope.host.run_kinds import host_analyses
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.proto.messages import MRI_SCANS

RIG_TOML = """\
seed = 7
[link]
spool_dir = "{spool}"
resend_after_s = 0.5
[mri]
# the defaults: a 21 x 21 grid at 1 nm, the PSF at four gaps, one DEER plane at 20 nm
[sim]
pace = 0.0
[sim.mri]
# its resonant ring lies inside the grid; 5.0 nm from the NV, not 4.5: there pi J tau is 2 pi - 0.3 at
# tau = 2 us, an echo weight 1 - cos(pi J tau) of 0.05, a dip of 0.005 against 0.008 of shot noise a pixel
# (invisible: the localization rightly finds no spin); at 5.0 nm the dip is 0.11
dark_spins = [[1.0e-9, -0.5e-9, -5.0e-9]]
"""


def test_an_mri_run_stores_every_tip_position_and_localizes_the_spin(tmp_path):
    cfg = tmp_path / "rig.toml"
    cfg.write_text(RIG_TOML.format(spool=(tmp_path / "spool").as_posix()))
    rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://127.0.0.1:*",
                            "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = rig.stdout.readline().strip()
    assert line.startswith("bound "), rig.stderr.read()
    host = HostDaemon(line.split()[1], tmp_path / "data", host_analyses(MleEstimator()))
    run_id = "mri-e2e"
    t0 = time.monotonic()
    try:
        host.start_run(run_id, "mri")
        while not host.stats.finished and time.monotonic() - t0 < 300:
            assert rig.poll() is None, rig.stderr.read()
            host.step(100)
        assert host.stats.finished == [(run_id, "completed")], host.stats
        assert host.stats.malformed == 0
    finally:
        host.close()
        rig.send_signal(signal.SIGTERM)
        rig.wait(timeout=20)
    print(f"mri run end to end: {time.monotonic() - t0:.1f} s")
    with h5py.File(tmp_path / "data" / f"{run_id}.h5", "r") as f:
        config = json.loads(f.attrs["config"])
        m = config["mri"]
        n_psf, n_deer = len(m["psf_gaps"]) * 21 * 21, len(m["deer_gaps"]) * 21 * 21
        scan, plane, iy, ix = (f[f"lock/{k}"][()] for k in ("scan", "plane", "iy", "ix"))
        # every tip position once: the reference, each PSF pixel, each DEER pixel (with its deer row)
        assert np.bincount(scan, minlength=3).tolist() == [1, n_psf, n_deer]
        keys = set(zip(scan.tolist(), plane.tolist(), iy.tolist(), ix.tolist()))
        assert len(keys) == len(scan)
        assert f["deer/seq"].shape == (n_deer,) and (f["deer/scan"][()] == MRI_SCANS.index("deer")).all()
        assert f["gaps"].shape[0] == 0 and f.attrs["exit_status"] == "completed"
        assert "analysis_error" not in f.attrs, f.attrs.get("analysis_error")
        assert f["mri/psf/detuning"].shape == (len(m["psf_gaps"]), 21, 21)
        assert np.isfinite(f["mri/psf/detuning"][()]).sum() == n_psf - sum(json.loads(f.attrs["mri_lost"]).values())
        loc = json.loads(f.attrs["mri_localization"])
        assert loc["model"] == "spins" and len(loc["spins"]) == 1, loc
        err, sigma = f["mri/truth/error_m"][0], f["mri/localization/spin_sigmas_m"][0]
        print("error (nm)", err * 1e9, "sigma (nm)", sigma * 1e9)
        assert np.all(np.abs(err) < 4 * sigma), (err, sigma)
        assert np.linalg.norm(err) < 1e-9
        for name in json.loads(f.attrs["figures"]):
            assert (tmp_path / "data" / name).stat().st_size > 20_000
