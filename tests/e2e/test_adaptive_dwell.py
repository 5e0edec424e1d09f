"""Adaptive dwell end to end (rig and host in one process, the rig in a thread): every pixel ends with
its g2 error under the target, given up (it could not reach the target within its maximum dwell), or
at its maximum dwell, brighter pixels sooner; and without a host to answer, every pixel gets its
maximum dwell and nothing is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import zmq
from scipy.stats import spearmanr

from nvscope.host.daemon import HostDaemon
from nvscope.host.srm.run_g2 import predicted_g2_std
from nvscope.models.g2.estimation import histogram_models
from nvscope.models.g2.model import NV_DEFAULT_SHAPE
from nvscope.proto.endpoints import rig_socket
from nvscope.proto.messages import Start
from nvscope.rt.config import RigConfig, from_dict
from nvscope.rt.rig_main import build_rig

TARGET, MAX_DWELL, SLICE = 0.2, 1.0, 0.05


def rig_config(tmp: Path, **scan) -> RigConfig:
    """A 5 x 5 scan over one bright emitter on a dim background (about 1e5 down to 3e3 counts/s)."""
    return from_dict(RigConfig, {
        "seed": 3,
        "scan": {"nx": 5, "ny": 5, "x0": -0.3e-6, "y0": -0.3e-6, "step": 150e-9, "slice_s": SLICE,
                 "adaptive_g2_std": TARGET, "max_dwell_s": MAX_DWELL, **scan},
        "link": {"spool_dir": str(tmp / "spool")},
        "sim": {"sample": {"background_rate": 2000.0, "emitters": [{"x": 0.0, "y": 0.0}]}},
    }, "rig")


class RigThread:
    """The rig daemon serving on a loopback port from a thread of this process."""

    def __init__(self, cfg: RigConfig, ctx: zmq.Context):
        self.sock = rig_socket(ctx, "tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.rig = build_rig(cfg, True, self.sock)
        self.thread = threading.Thread(target=self.rig.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.rig.shutdown.set()
        self.thread.join(timeout=30)
        self.sock.close()


def scan(tmp: Path, cfg: RigConfig, host_answers: bool = True, timeout_s: float = 120.0) -> dict[str, np.ndarray]:
    """One SRM run of `cfg`; the stored pixels and their on-line g2."""
    ctx = zmq.Context()
    rig = RigThread(cfg, ctx)
    host = HostDaemon(rig.endpoint, tmp / "data", analyses={}, ctx=ctx)
    if not host_answers:
        host._answer = lambda partial, t_recv: None  # a host too busy to answer
    try:
        host.command(Start, "srm-adaptive", run_kind="srm")
        deadline = time.monotonic() + timeout_s
        while not host.stats.finished and time.monotonic() < deadline:
            host.step(50)
        assert host.stats.finished == [("srm-adaptive", "completed")], host.stats
        assert host.stats.malformed == 0 and host.last_heartbeat is not None  # every rig message decodes
    finally:
        host.close()
        rig.close()
        ctx.term()
    with h5py.File(tmp / "data" / "srm-adaptive.h5", "r") as f:
        px = {k: f["pixels"][k][()] for k in ("index", "dwell_s", "n_a", "n_b", "g2", "g2_std")}
    assert px["index"].tolist() == list(range(cfg.scan.nx * cfg.scan.ny))
    return px


def test_adaptive_dwell_ends_each_pixel_at_the_target_given_up_or_at_max_in_under_half_the_photon_time(tmp_path):
    px = scan(tmp_path, rig_config(tmp_path))
    dwell, std = px["dwell_s"], px["g2_std"]
    pl = (px["n_a"] + px["n_b"]) / dwell
    table = np.c_[pl, dwell, px["g2"], std][np.argsort(pl)]
    assert np.all(dwell <= MAX_DWELL + 1e-9) and np.all(dwell >= SLICE - 1e-9)
    # the error the host predicts from each pixel's singles alone, at its maximum dwell (the shape:
    # the NV default, as the host's until the scan's own is fitted)
    models = histogram_models(NV_DEFAULT_SHAPE, len(dwell), "allpairs", px["n_a"] * MAX_DWELL / dwell,
                              px["n_b"] * MAX_DWELL / dwell, np.full(len(dwell), MAX_DWELL))
    at_max_predicted = predicted_g2_std(models)
    at_max = np.abs(dwell - MAX_DWELL) < 1e-9
    reached = ~at_max & (std < 1.05 * TARGET)  # the stored estimate, with the shape context of the scan
    given_up = ~at_max & ~reached              # so far, may differ from the answer rt got by a few %
    # the given-up pixels ended at the first answer (one slice late) and could not have reached the
    # target: background (~2e3 counts/s) and the dim edge of the emitter; all dimmer than the reached
    assert np.all(dwell[given_up] <= 2 * SLICE + 1e-9), table
    assert np.all(at_max_predicted[given_up] > 0.9 * TARGET), np.c_[table, np.sort(at_max_predicted)]
    assert 10 <= given_up.sum() < 25 and reached.sum() >= 1, table
    assert pl[given_up].max() < pl[reached].min(), table
    # issue 12's goal: at most half the fixed scan's photon time (the rule before gave up on nothing:
    # every pixel that could not reach the target ran to its maximum dwell)
    assert dwell.sum() < 0.5 * MAX_DWELL * len(dwell), table
    # among the pixels not given up, brighter ones finish first
    kept = ~given_up
    assert spearmanr(pl[kept], dwell[kept]).statistic < -0.5, table


def test_without_answers_every_pixel_gets_its_max_dwell(tmp_path):
    cfg = rig_config(tmp_path, nx=2, ny=2, x0=-0.05e-6, y0=-0.05e-6, max_dwell_s=0.2, reply_timeout_s=0.02)
    px = scan(tmp_path, cfg, host_answers=False)
    assert np.allclose(px["dwell_s"], 0.2)
    assert np.all(np.isfinite(px["g2"]))  # stored and estimated as ever
