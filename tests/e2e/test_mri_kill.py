"""An NV-MRI run with real processes killed mid-scan (docs/architecture.md section 4): a host killed
with SIGKILL during the PSF stack and restarted loses nothing (every tip position stored once, no
gaps, the run completes); a rig killed during the DEER plane and restarted closes the run as failed,
keeps what was sent, and the run-end analysis builds the maps with NaN where nothing was measured and
says what is missing instead of crashing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from nvscope.host.daemon import HostDaemon
from nvscope.host.run_kinds import host_analyses
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.proto.messages import MRI_SCANS

NX, NY, N_PSF_PLANES = 7, 5, 4
RIG_TOML = """\
seed = 7
[link]
spool_dir = "{spool}"
resend_after_s = 0.5
window = 16  # the rig runs at most 16 messages ahead of the host's acks: the kills land where aimed
[mri]
nx = 7
ny = 5
x0 = -3e-9
y0 = -2e-9
step = 1e-9
psf_gaps = [14e-9, 17e-9, 20e-9, 23e-9]
deer_gaps = [20e-9]
deer_shots = 20000
[sim]
pace = {pace}
[sim.mri]
dark_spins = [[1.0e-9, -0.5e-9, -5.5e-9]]
"""

HOST_SCRIPT = """\
import sys
from nvscope.host.daemon import HostDaemon
from nvscope.host.run_kinds import host_analyses
from nvscope.host.srm.online_g2 import MleEstimator

if __name__ == "__main__":
    host = HostDaemon(sys.argv[1], sys.argv[2], host_analyses(MleEstimator()))
    host.start_run(sys.argv[3], "mri")
    while True:
        host.step(100)
"""

N_TIPS = 1 + N_PSF_PLANES * NX * NY + NX * NY


def start_rig(tmp: Path, pace: float, endpoint: str = "tcp://127.0.0.1:*") -> tuple[subprocess.Popen, str]:
    cfg = tmp / "rig.toml"
    cfg.write_text(RIG_TOML.format(spool=(tmp / "spool").as_posix(), pace=pace))
    rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", endpoint, "--config",
                            str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = rig.stdout.readline().strip()
    assert line.startswith("bound "), rig.stderr.read()
    return rig, line.split()[1]


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def lock_rows(path: Path) -> int:
    """Lock rows stored so far (0 while the file is not there), read as the host writes it."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            return f["lock/seq"].shape[0]
    except (OSError, KeyError):
        return 0


def finish(host: HostDaemon, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not host.stats.finished and time.monotonic() < deadline:
        host.step(100)


def test_a_host_killed_during_the_psf_stack_and_restarted_stores_every_tip_position_once(tmp_path):
    out, run_id = tmp_path / "data", "mri-host-killed"
    (tmp_path / "host.py").write_text(HOST_SCRIPT)
    rig, endpoint = start_rig(tmp_path, pace=0.2)  # the spool window (16) keeps it near the host
    try:
        host = subprocess.Popen([sys.executable, str(tmp_path / "host.py"), endpoint, str(out), run_id],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = out / f"{run_id}.h5"
        deadline = time.monotonic() + 60
        while lock_rows(path) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
        with h5py.File(path, "r", libver="latest", swmr=True) as f:  # what was stored is readable
            before = f["lock/seq"][()].tolist()
            assert f.attrs["exit_status"] == "running"
        assert 25 <= len(before) < 1 + N_PSF_PLANES * NX * NY  # killed during the PSF stack
        time.sleep(0.3)  # the rig scans on into its spool meanwhile
        again = HostDaemon(endpoint, out, host_analyses(MleEstimator()))
        try:
            finish(again)
        finally:
            again.close()
        assert again.stats.finished == [(run_id, "completed")], again.stats
        assert again.stats.malformed == 0
    finally:
        assert stop(rig) == 0
    with h5py.File(path, "r") as f:
        assert f.attrs["exit_status"] == "completed" and f["gaps"].shape[0] == 0
        seq = f["lock/seq"][()].tolist()
        assert seq[:len(before)] == before  # nothing stored before the kill was rewritten
        scan, plane, iy, ix = (f[f"lock/{k}"][()] for k in ("scan", "plane", "iy", "ix"))
        assert np.bincount(scan, minlength=3).tolist() == [1, N_PSF_PLANES * NX * NY, NX * NY]
        assert len(set(zip(scan.tolist(), plane.tolist(), iy.tolist(), ix.tolist()))) == N_TIPS  # each once
        assert sorted(f["lock/index"][()].tolist()) == list(range(N_TIPS))
        assert f["deer/seq"].shape == (NX * NY,) and (f["deer/scan"][()] == MRI_SCANS.index("deer")).all()
        detuning = f["mri/psf/detuning"][()]
        assert detuning.shape == (N_PSF_PLANES, NY, NX) and np.isfinite(detuning).all()  # no hole at the kill
        assert json.loads(f.attrs["mri_missing"]) == {"psf": 0, "deer/plane_0": 0}


def test_a_rig_killed_during_deer_ends_the_run_failed_with_nan_maps_and_an_analysis_that_says_what_is_missing(
        tmp_path):
    out, run_id = tmp_path / "data", "mri-rig-killed"
    rig, endpoint = start_rig(tmp_path, pace=0.2)
    host = HostDaemon(endpoint, out, host_analyses(MleEstimator()))
    n_psf = 1 + N_PSF_PLANES * NX * NY
    try:
        host.start_run(run_id, "mri")
        deadline = time.monotonic() + 60
        while lock_rows(out / f"{run_id}.h5") < n_psf + 8 and time.monotonic() < deadline:
            host.step(20)
        os.kill(rig.pid, signal.SIGKILL)  # a few DEER pixels in
        rig.wait()
        for _ in range(5):
            host.step(20)
        rig, _ = start_rig(tmp_path, pace=0.2, endpoint=endpoint)  # same spool: replays, closes the run
        finish(host, 30)
        assert host.stats.finished == [(run_id, "failed")], host.stats
    finally:
        host.close()
        assert stop(rig) == 0
    with h5py.File(out / f"{run_id}.h5", "r") as f:
        assert f.attrs["exit_status"] == "failed" and "rig process ended" in f.attrs["reason"]
        assert f["gaps"].shape[0] == 0
        seq = np.sort(np.concatenate([f["lock/seq"][()], f["deer/seq"][()]]))
        assert seq.tolist() == list(range(1, len(seq) + 1))  # every message sent before the kill, in order
        n_deer = f["deer/seq"].shape[0]
        assert 8 <= n_deer < NX * NY
        assert np.isfinite(f["mri/psf/detuning"][()]).all()  # the PSF stack was complete
        deer = f["mri/deer/plane_0/deer"][()]
        assert deer.shape == (NY, NX) and np.isfinite(deer).sum() == n_deer  # NaN where never measured
        assert json.loads(f.attrs["mri_missing"])["deer/plane_0"] == NX * NY - n_deer
        notes = json.loads(f.attrs["mri_notes"])
        assert f"deer/plane_0: {NX * NY - n_deer} pixels never measured (NaN)" in notes
        # the analysis did not crash: it localized from what there is, or said in one line why not
        said = f.attrs.get("analysis_error", "")
        assert "mri_localization" in f.attrs or (said and "\n" not in said), dict(f.attrs)
        for name in json.loads(f.attrs["figures"]):
            assert (out / name).stat().st_size > 10_000
