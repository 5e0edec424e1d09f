"""`nvscope reanalyze` (host/reanalyze_cli.py, host/reanalyze.py): many run files re-analysed on Dask, one
task per file; each output carries its input's run id and SHA-256, the method, the model and the version;
a broken file is reported with its reason while the others finish; exit 0 / 1 / 2."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import socket
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from nvscope.host.cli import main
from nvscope.host.reanalyze import SUFFIX, ReanalyzeConfig, reanalyze_run
from nvscope.host.reanalyze_cli import SUMMARY
from nvscope.host.srm.analysis import SrmAnalysis
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.host.store import RunStore
from nvscope.models.g2.features import SHIPPED_MODEL
from nvscope.proto.messages import RunStart
from nvscope.proto.version import software_version

sys.path.insert(0, str(Path(__file__).parent))  # the run-file helper beside this file (pytest's importlib mode)
from synthetic_runs import GRID, write_srm_run  # noqa: E402


def direct_maps(path, estimator) -> dict[str, np.ndarray]:
    """The SRM maps of the host's run-end analysis called here, in this process, on the same file."""
    with h5py.File(path, "r") as f:
        analysis = SrmAnalysis(estimator)
        inputs = analysis.read(RunStore(path, f))
    inputs.figure = path.with_name("direct.png")
    return analysis.compute(inputs)[0]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local Dask cluster of 2 worker processes, shut down after the module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def runs(tmp_path):
    src = tmp_path / "runs"
    src.mkdir()
    good = [write_srm_run(src, "srm-20260101-000000-00000a", 1, g0=0.3),
            write_srm_run(src, "srm-20260101-000100-00000b", 2, g0=0.6)]
    broken = src / "srm-20260101-000200-00000c.h5"
    data = good[0].read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # a copy cut short
    return good, broken


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_good_runs_and_a_broken_file(runs, scheduler, tmp_path, capsys):
    good, broken = runs
    out = tmp_path / "out"
    t0 = time.time()
    code = main(["reanalyze", str(good[0]), str(broken), str(good[1]), "--out", str(out), "--scheduler", scheduler])
    captured = capsys.readouterr()
    assert code == 1
    lines = [line for line in captured.out.splitlines() if line.startswith("[")]
    assert len(lines) == 3 and {line[:5] for line in lines} == {"[1/3]", "[2/3]", "[3/3]"}  # a line per run
    bad = [line for line in lines if "failed" in line]
    assert len(bad) == 1 and str(broken) in bad[0] and "truncated HDF5 file" in bad[0]
    assert "2 of 3 runs re-analysed" in captured.err and "1 failed" in captured.err

    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{p.stem}{SUFFIX}" for p in good] + [f"{p.stem}-reanalyzed.png" for p in good]
                             + [SUMMARY])  # no temporary file left
    cnn = CnnEstimator()
    for path in good:
        with h5py.File(out / f"{path.stem}{SUFFIX}", "r") as f:
            a = f.attrs
            assert a["input_run_id"] == path.stem and a["input_run_kind"] == "srm"
            assert a["input_sha256"] == _sha256(path) and a["input_file"] == str(path.resolve())
            assert a["method"] == "cnn" and a["g2_method"] == "cnn"
            assert a["model_file"] == str(SHIPPED_MODEL.resolve()) and a["model_sha256"] == _sha256(SHIPPED_MODEL)
            assert a["nvscope_version"] == software_version()
            assert t0 - 1 <= a["reanalyzed_unix_s"] <= time.time()
            assert a["input_exit_status"] == "completed"
            maps = {k: f["maps"][k][()] for k in f["maps"]}
            assert f["maps/pl_cps"].attrs["units"] == "counts/s"
        want = direct_maps(path, cnn)
        assert set(maps) == {k.split("/")[1] for k in want}
        for key in ("g2", "g2_std", "G2", "pl_cps", "g2_reason"):
            np.testing.assert_array_equal(maps[key], want[f"maps/{key}"], err_msg=key)
        assert maps["g2"].shape == GRID and np.isfinite(maps["g2"]).all()
    g2_a, g2_b = (h5py.File(out / f"{p.stem}{SUFFIX}", "r")["maps/g2"][()].mean() for p in good)
    assert g2_a < g2_b  # the two runs' emitters (g2(0) 0.3 and 0.6) stay apart: not one file written twice

    summary = json.loads((out / SUMMARY).read_text())
    status = {r["input"]: (r["status"], r["reason"]) for r in summary["runs"]}
    assert status[str(good[0])] == ("ok", "") and status[str(good[1])] == ("ok", "")
    assert status[str(broken)][0] == "failed" and "truncated HDF5 file" in status[str(broken)][1]
    assert [r["input"] for r in summary["runs"]] == [str(good[0]), str(broken), str(good[1])]
    assert (summary["ok"], summary["failed"], summary["scheduler"]) == (2, 1, scheduler)


def test_mle_on_the_default_local_cluster(runs, tmp_path, capsys):
    good, _ = runs
    out = tmp_path / "out"
    assert main(["reanalyze", *map(str, good), "--out", str(out), "--method", "mle"]) == 0
    captured = capsys.readouterr()
    assert "local cluster of 2 workers" in captured.out and "2 of 2 runs re-analysed" in captured.out
    for path in good:
        with h5py.File(out / f"{path.stem}{SUFFIX}", "r") as f:
            assert f.attrs["method"] == "mle" and f.attrs["g2_method"] == "mle"
            assert "model_sha256" not in f.attrs
            np.testing.assert_array_equal(f["maps/g2"][()], direct_maps(path, MleEstimator())["maps/g2"])
    assert json.loads((out / SUMMARY).read_text())["failed"] == 0


def test_an_unreachable_scheduler_is_one_line_and_exit_2(runs, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["reanalyze", str(runs[0][0]), "--out", str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("nvscope reanalyze: --scheduler tcp://127.0.0.1:")
    assert "cannot connect" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "out" / SUMMARY).exists()


def test_bad_arguments_are_exit_2_before_any_work(runs, tmp_path, capsys):
    model = tmp_path / "not-a-model.onnx"
    model.write_bytes(b"junk")
    assert main(["reanalyze", str(runs[0][0]), "--out", str(tmp_path / "out"), "--model", str(model)]) == 2
    assert "not-a-model.onnx" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert main(["reanalyze", str(runs[0][0]), "--out", str(blocked)]) == 2
    assert "--out" in capsys.readouterr().err


def test_each_failure_is_one_reason_and_the_task_pickles(tmp_path):
    """The task itself, in this process: every kind of bad input gives a failed outcome, never an exception."""
    cfg = ReanalyzeConfig(str(tmp_path / "out"), "mle")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    other = write_srm_run(tmp_path, "odmr-20260101-000000-00000d", 3, kind="odmr")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    reasons = {name: reanalyze_run(str(p), cfg) for name, p in
               [("missing", tmp_path / "nope.h5"), ("foreign", foreign), ("kind", other), ("text", text)]}
    assert not any(o.ok for o in reasons.values())
    assert reasons["missing"].reason == "no such file"
    assert reasons["foreign"].reason == "not an nvscope run file (no run_id / run_kind attribute)"
    assert "unknown run kind 'odmr'" in reasons["kind"].reason and reasons["kind"].run_id == other.stem
    assert reasons["text"].reason.startswith("not an HDF5 file")
    assert all("\n" not in o.line() for o in reasons.values())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.h5"))
    assert pickle.loads(pickle.dumps(reanalyze_run)) is reanalyze_run  # by reference: workers import it
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_a_run_file_still_flagged_for_writing_is_read(tmp_path):
    """A file whose writer was killed (SWMR flag still set) is read as the host would, up to its last flush."""
    path = write_srm_run(tmp_path, "srm-20260101-000300-00000e", 4)
    live = tmp_path / "live.h5"
    shutil.copy(path, live)
    with h5py.File(live, "r+", libver="latest") as f:
        f.swmr_mode = True
        copy = tmp_path / "flagged.h5"
        shutil.copy(live, copy)  # copied while open for SWMR writing: the flag stays set in the copy
    outcome = reanalyze_run(str(copy), ReanalyzeConfig(str(tmp_path / "out"), "mle"))
    assert outcome.ok, outcome.reason


def test_two_files_of_one_run_id_are_both_failed(runs, scheduler, tmp_path, capsys):
    good, _ = runs
    copy = tmp_path / "copy-of-a.h5"
    shutil.copy(good[0], copy)  # the same run id in another file: one output name for both
    out = tmp_path / "out"
    assert main(["reanalyze", str(good[0]), str(copy), str(good[1]), "--out", str(out), "--method", "mle",
                 "--scheduler", scheduler]) == 1
    capsys.readouterr()
    summary = {r["input"]: r for r in json.loads((out / SUMMARY).read_text())["runs"]}
    assert summary[str(good[1])]["status"] == "ok"
    for path in (good[0], copy):
        assert summary[str(path)]["status"] == "failed" and "is also in" in summary[str(path)]["reason"]


def test_a_vqns_run_is_refitted_as_an_adopting_host_fits_it(tmp_path):
    """The VQNS task (in this process) on a run file of two curves gives the band that a host adopting the
    same file computes with the loop's own code: the recorded settings, the rig's timing, one cold fit."""
    import dataclasses as dc

    from nvscope.host.vqns.loop import VqnsController, VqnsLoopConfig
    from nvscope.models.vqns.attenuation import attenuation
    from nvscope.models.vqns.fit import FitConfig
    from nvscope.models.vqns.proposal import feasible_times
    from nvscope.proto.messages import Coherence
    from nvscope.rt.kernels.pulses import ShotTiming

    run_id, timing = "vqns-20260101-000000-00000f", ShotTiming(pi_s=100e-9, pi_half_s=50e-9)
    loop = VqnsLoopConfig(points=16, candidates=(2, 4, 8), fit=FitConfig(restarts=8, seed=1))
    config = {"coherence": {"repetitions": 10_000_000, "timing": dc.asdict(timing)}}
    start = RunStart(run_id=run_id, seq=1, run_kind="vqns", config=config)
    store = RunStore.create(tmp_path / f"{run_id}.h5", start,
                            {"vqns_loop_config": json.dumps(dc.asdict(loop), sort_keys=True)})
    store.add(start)
    for seq, n in enumerate((1, 2), start=2):
        t = feasible_times(n, loop.times, timing)
        c = np.exp(-attenuation(6e10, 0.0, 1.2566e6, t, n)) + 0.01 * np.random.default_rng(seq).standard_normal(t.size)
        store.add(Coherence(run_id=run_id, seq=seq, n_pulses=n, t=t, coherence=c, sigma=np.full(t.size, 0.01),
                            repetitions=1, pi_s=timing.pi_s, pi_half_s=timing.pi_half_s))
    store.flush()

    class Host:  # what an adopting controller needs of the daemon; it records the curve it would ask for
        observers, processes, sent = [], None, []

        def command(self, cls, run_id, **fields):
            self.sent.append(fields)

    ctl = VqnsController.adopt(Host(), run_id, store)
    try:
        assert ctl.wait_idle(120) and len(ctl.steps) == 1
        want = ctl.steps[0]
    finally:
        ctl.close()
        store.close()
    outcome = reanalyze_run(str(tmp_path / f"{run_id}.h5"), ReanalyzeConfig(str(tmp_path / "out")))
    assert outcome.ok, outcome.reason
    with h5py.File(outcome.output, "r") as f:
        assert f.attrs["input_run_kind"] == "vqns" and json.loads(f.attrs["fit_config"])["restarts"] == 8
        assert f.attrs["vqns_timing_source"] == "the run's config" and "vqns_not_restored" not in f.attrs
        np.testing.assert_allclose(f["vqns/omega"][()], want.omega)
        for name, band in zip(("S_fit", "S_lo", "S_hi"), want.band):
            np.testing.assert_allclose(f[f"vqns/{name}"][()], band, rtol=1e-9, err_msg=name)
        assert f["vqns/steps/n_curves"][()].tolist() == [2]


def test_an_mri_run_gives_the_host_analysis_results(tmp_path, monkeypatch):
    """The NV-MRI task (in this process, the localization stubbed as in test_mri_analysis) writes what the
    host's MriAnalysis computes on the same file: the maps, the localization and the attributes."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    from nvscope.host.mri.analysis import MriAnalysis

    spec = importlib.util.spec_from_file_location("mri_synthetic", Path(__file__).with_name("test_mri_maps.py"))
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)  # the synthetic run of the maps' tests, one definition

    def localize(scan, model="auto"):
        spin = types.SimpleNamespace(position_m=np.array([1e-9, -1e-9, 8e-9]), sigma_m=np.array([1e-10, 1e-10, 3e-10]))
        out = {"model": "spins", "spins": [{"position_m": spin.position_m.tolist(), "sigma_m": spin.sigma_m.tolist()}]}
        return types.SimpleNamespace(model="spins", spins=[spin], layer=None, deer_model=np.asarray(scan.deer) * 0.5,
                                     warnings=[], to_json=lambda: out)

    monkeypatch.setitem(sys.modules, "nvscope.models.mri.localize", types.SimpleNamespace(localize=localize))
    config = synthetic.mri_config(nx=5, ny=4, psf_gaps=(18e-9, 19e-9, 20e-9, 21e-9, 22e-9))
    store = synthetic.store_run(tmp_path, config, synthetic.synthetic_run(config), run_id="mri-20260101-000000-000010")
    store.flush()
    try:
        want, want_attrs = MriAnalysis()(store)
    finally:
        store.close()
    outcome = reanalyze_run(str(store.path), ReanalyzeConfig(str(tmp_path / "out")))
    assert outcome.ok, outcome.reason
    with h5py.File(outcome.output, "r") as f:
        assert f.attrs["input_run_kind"] == "mri" and f.attrs["method"] == "mri"
        assert "analysis_error" not in f.attrs, f.attrs.get("analysis_error")
        assert f.attrs["mri_localization"] == want_attrs["mri_localization"]
        assert f.attrs["mri_b0_t"] == want_attrs["mri_b0_t"] and "model_sha256" not in f.attrs
        assert "mri/localization/spin_positions_m" in want
        for name, value in want.items():
            np.testing.assert_array_equal(f[name][()], value, err_msg=name)
