"""The host's worker processes (host/analysis_process.py) and what runs in them: started at the first
job, another process at a lower priority, errors come back, a dead worker's pool is replaced; the CNN
travels as its file and says where it comes from; the SRM run-end analysis computes in a process the
same results as in line."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from nvscope.host.analysis_process import AnalysisProcesses
from nvscope.host.srm.analysis import SrmAnalysis, SrmInputs
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.host.srm.online_g2 import MleEstimator, RefitRequest, ScanEstimator, refit_shape
from nvscope.host.srm.run_g2 import g2_attributes
from nvscope.models.g2.mle import fit_shape
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, pixel_base, singles_base


@pytest.fixture
def processes():
    p = AnalysisProcesses(workers=1)
    yield p
    p.close()


def test_jobs_run_in_another_niced_process_started_at_the_first_job(processes):
    assert not processes.started  # a daemon that never needs one starts none
    pid = processes.run(os.getpid)
    assert processes.started and pid != os.getpid()
    assert processes.run(os.nice, 0) >= os.nice(0) + min(processes.nice, 19 - os.nice(0))
    assert processes.run(signal.getsignal, signal.SIGINT) == signal.SIG_IGN  # Ctrl-C is the host's
    with pytest.raises(ValueError):
        processes.run(int, "x")  # the worker's exception is raised in the caller
    assert processes.run(os.getpid) == pid  # and the worker lives on


def test_a_dead_worker_fails_its_job_and_the_next_job_gets_a_fresh_one(processes):
    first = processes.run(os.getpid)
    with pytest.raises(BrokenProcessPool):
        processes.run(os._exit, 1)
    assert processes.run(os.getpid) not in (first, os.getpid())


def test_closed_processes_take_no_job(processes):
    processes.run(os.getpid)
    processes.close()
    assert not processes.started
    with pytest.raises(RuntimeError, match="closed"):
        processes.submit(os.getpid)


def test_cnn_provenance_and_pickle():
    est = CnnEstimator()
    prov = est.provenance()
    assert prov["model_sha256"] == hashlib.sha256(est.path.read_bytes()).hexdigest()
    assert prov["model_file"] == str(est.path.resolve()) and prov["model_commit"] == est.metadata["git_commit"]
    attrs = g2_attributes(est)
    assert attrs["g2_model_sha256"] == prov["model_sha256"] and attrs["g2_online_estimator"] == "cnn"
    assert "g2_model_file" not in g2_attributes(MleEstimator())
    again = pickle.loads(pickle.dumps(est))  # a worker process loads the same file
    assert again.provenance() == prov
    h = np.random.default_rng(0).poisson(expected_histogram(NV_DEFAULT_SHAPE, 0.3, 5.0), size=(3, 215))
    np.testing.assert_array_equal(again.estimate(h, NV_DEFAULT_SHAPE, np.full(3, 5.0))[0],
                                  est.estimate(h, NV_DEFAULT_SHAPE, np.full(3, 5.0))[0])


def scan_pixels(p: int = 12, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_a = n_b = np.full(p, 40_000)
    dwell = np.full(p, 1.0)
    hist = rng.poisson(expected_histogram(NV_DEFAULT_SHAPE, 0.3, singles_base(4e4, 4e4, 1.0)), size=(p, 215))
    return {"index": np.arange(p), "ix": np.arange(p) % 4, "iy": np.arange(p) // 4,
            "position": np.c_[np.arange(p) % 4 * 1e-7, np.arange(p) // 4 * 1e-7, np.zeros(p)],
            "hist": hist, "n_a": n_a, "n_b": n_b, "dwell_s": dwell}


def test_refit_and_srm_analysis_in_a_process_equal_in_line(processes, tmp_path):
    px = scan_pixels()
    scan = ScanEstimator(MleEstimator())
    request = scan.add_context(px["hist"], px["n_a"], px["n_b"], px["dwell_s"])
    assert isinstance(request, RefitRequest) and request.start is None
    base = pixel_base(px["n_a"], px["n_b"], px["dwell_s"], len(px["hist"]))
    want = fit_shape(px["hist"].sum(0), base=base.sum())
    in_process = processes.run(refit_shape, request)
    assert in_process == refit_shape(request) and in_process.shape == want
    assert scan.add_context(px["hist"][:1], px["n_a"][:1], px["n_b"][:1], px["dwell_s"][:1]) is None  # not grown

    analysis = SrmAnalysis(MleEstimator())
    inputs = SrmInputs(px, (3, 4), "srm-x", tmp_path / "in-process.png")
    results, attrs = processes.run(analysis.compute, inputs)
    local, local_attrs = analysis.compute(SrmInputs(px, (3, 4), "srm-x", tmp_path / "in-line.png"))
    assert results.keys() == local.keys() and attrs["shape_t1_s"] == local_attrs["shape_t1_s"]
    for key in results:
        np.testing.assert_array_equal(results[key], local[key])
    assert (tmp_path / "in-process.png").stat().st_size > 0 and attrs["figure"] == "in-process.png"


def test_a_pixel_off_the_grid_is_kept_out_of_the_maps_and_reported(tmp_path):
    px = scan_pixels()
    px["ix"] = px["ix"].copy()
    px["ix"][5] = 99  # a rig that sent a pixel outside its own grid
    analysis = SrmAnalysis(MleEstimator())
    results, attrs = analysis.compute(SrmInputs(px, (3, 4), "srm-x", tmp_path / "f.png"))
    good, _ = analysis.compute(SrmInputs(scan_pixels(), (3, 4), "srm-x", tmp_path / "g.png"))
    assert "1 pixels lie off the (3, 4) grid" in attrs["analysis_note"]
    assert np.isnan(results["maps/g2"][1, 1])  # where pixel 5 would have gone
    ok = np.ones((3, 4), bool)
    ok[1, 1] = False
    np.testing.assert_allclose(results["maps/pl_cps"][ok], good["maps/pl_cps"][ok])
