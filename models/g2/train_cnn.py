"""Train the g2 CNN on `firmware_sim` histograms and export it to ONNX.

    python -m nvscope.models.g2.train_cnn --out models/g2/g2_cnn.onnx          # the shipped network
    python -m nvscope.models.g2.train_cnn --arch paper --out ref.onnx           # the paper-size reference
    python -m nvscope.models.g2.train_cnn --out m.onnx --scheduler tcp://head:8786   # data simulated on Dask

Simulates (or reads from --data) histograms of random emitters (`training_data`), splits them by
emitter into train / validation / test (80 / 10 / 10 %), computes `features.cnn_inputs` with each
window's own context kernel (the local shape the host gives its pixel) and the singles dropped for a
fraction of the rows (so the network also serves histograms without them), trains by Gaussian NLL
with Adam and keeps the weights of the best validation loss. Then it compares the network with the
Poisson MLE (same per-pixel kernels, singles known) on the validation emitters, band by band in
events (EVENT_BANDS), and records from how many events on the MLE is at least as good
("mle_above_events": the host sends those pixels to the MLE). The ONNX file records that, the
per-band validation RMSEs, the training ranges (events, g2(0), t1, PL rate), the architecture, the
features version, the nvscope version and the git commit in its metadata.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nvscope.proto.histogram import N_BINS
from nvscope.proto.npz_files import write_npz
from nvscope.proto.version import git_commit, software_version

from .cnn import PAPER_ARCH, SHIPPED_ARCH, CnnArch, G2Net, forward_flops, gaussian_nll
from .features import FEATURES_VERSION, MODEL_FORMAT, N_CHANNELS, N_SCALARS, cnn_inputs
from .estimation import estimate_pixels
from .mle import MleEstimator
from .model import pixel_base, pixel_models, shape_kernels
from ..dask_cluster import dask_client
from .training_data import (G2_RANGE, MAX_WINDOW_EVENTS, N_RANGE, T1_RANGE_S, simulate_dataset,
                            split_by_emitter)

NO_SINGLES_FRACTION = 0.3
"""Fraction of training rows whose singles are hidden (base unknown)."""
MIN_TRAIN_EVENTS = 10
"""Rows with fewer events are left out of training (the host does not estimate below 20)."""
EVENT_BANDS = (20, 200, 1000, 3000, 20_000, 100_000)
"""Edges of the event bands (events per histogram) in which the network and the MLE are compared."""


@dataclass(frozen=True)
class TrainConfig:
    """Training of one network: epochs, batch size, learning rate (Adam, cosine decay), seed."""

    epochs: int = 30
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    clip: float = 1.0
    """Largest gradient norm (the Gaussian NLL's gradient is large where the predicted std is small)."""
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many optimizer steps (the tiny training of the tests)."""


def dataset_inputs(data: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Network inputs and targets of simulated rows (rows with too few events left out), each with the
    kernel of its own context shape; `row`: each input's row in `data`."""
    row = np.flatnonzero(data["hist"].sum(axis=1) >= MIN_TRAIN_EVENTS)
    base = pixel_base(data["n_a"][row], data["n_b"][row], data["t_acq"][row], row.size)
    hide = np.random.default_rng(seed).uniform(size=base.size) < NO_SINGLES_FRACTION
    base = np.where(hide, np.nan, base)
    x, s = cnn_inputs(data["hist"][row], context_kernels(data["context"][row]), base)
    return {"x": x, "s": s, "y": data["g2_true"][row].astype(np.float32), "emitter": data["emitter"][row], "row": row}


def context_kernels(context: np.ndarray) -> np.ndarray:
    """Kernels (P, N_BINS) of context shapes (P, 3) of (t1 s, t2 s, a)."""
    c = np.asarray(context, dtype=float).reshape(-1, 3)
    return shape_kernels(c[:, 0], c[:, 1], c[:, 2])


def pl_rates(data: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """PL rate (n_A + n_B) / T in counts/s of some rows."""
    return (data["n_a"][rows] + data["n_b"][rows]) / data["t_acq"][rows]


def band_rmse(net: G2Net, data: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, list]:
    """RMSE of g2(0) of the network and of the Poisson MLE per event band (EVENT_BANDS) over some rows of
    `data`, both with the singles known and each row's context kernel; rows where either gives no
    estimate are left out. Returns {"bands", "rows", "cnn", "mle"} (NaN: an empty band)."""
    hist = data["hist"][rows]
    kernel = context_kernels(data["context"][rows])
    base = pixel_base(data["n_a"][rows], data["n_b"][rows], data["t_acq"][rows], rows.size)
    x, s = cnn_inputs(hist, kernel, base)
    net.eval()
    with torch.no_grad():
        g_cnn = net(torch.from_numpy(x), torch.from_numpy(s))[0].numpy().astype(float)
    g_mle = estimate_pixels(MleEstimator(), hist, pixel_models(base, kernel), require_base=True).g2
    n = hist.sum(axis=1)
    truth = data["g2_true"][rows]
    out = {"bands": [list(b) for b in zip(EVENT_BANDS[:-1], EVENT_BANDS[1:])], "rows": [], "cnn": [], "mle": []}
    for lo, hi in out["bands"]:
        at = (n >= lo) & (n < hi) & np.isfinite(g_cnn) & np.isfinite(g_mle)
        out["rows"].append(int(at.sum()))
        for name, g in (("cnn", g_cnn), ("mle", g_mle)):
            out[name].append(float(np.sqrt(np.mean((g[at] - truth[at]) ** 2))) if at.any() else float("nan"))
    return out


def mle_above_events(rmse: dict[str, list]) -> int:
    """The lowest band edge from which the MLE's RMSE is at most the network's in every band above
    (empty bands do not count); the top edge when the network is better in the top band."""
    edge = EVENT_BANDS[-1]
    for (lo, _), c, m in reversed(list(zip(rmse["bands"], rmse["cnn"], rmse["mle"]))):
        if np.isnan(c) or np.isnan(m):
            continue
        if m > c:
            break
        edge = lo
    return int(edge)


def _tensors(d: dict[str, np.ndarray], idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    return torch.from_numpy(d["x"][idx]), torch.from_numpy(d["s"][idx]), torch.from_numpy(d["y"][idx])


def evaluate(net: G2Net, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    """Mean Gaussian NLL of a data set."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            m, sd = net(x[i:i + batch], s[i:i + batch])
            total += float(gaussian_nll(m, sd, y[i:i + batch])) * len(m)
    return total / max(len(y), 1)


def train(net: G2Net, d: dict[str, np.ndarray], train_idx: np.ndarray, val_idx: np.ndarray,
          cfg: TrainConfig, log=print) -> dict:
    """Train `net` in place (best validation weights kept); returns the history."""
    torch.manual_seed(cfg.seed)
    xt, st, yt = _tensors(d, train_idx)
    xv, sv, yv = _tensors(d, val_idx)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(yt) / cfg.batch)))
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.1)
    best, best_state, history, step = np.inf, None, [], 0
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), cfg.batch):
            b = order[i:i + cfg.batch]
            m, sd = net(xt[b], st[b])
            loss = gaussian_nll(m, sd, yt[b])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            sched.step()
            step += 1
            if step >= total_steps:
                break
        val = evaluate(net, xv, sv, yv)
        history.append({"epoch": epoch, "val_nll": val, "s": time.perf_counter() - t0})
        log(f"epoch {epoch:3d}  val NLL {val:+.4f}  {time.perf_counter() - t0:7.1f} s")
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
        if step >= total_steps:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return {"history": history, "best_val_nll": best, "steps": step}


def export_onnx(net: G2Net, path: Path, metadata: dict[str, str]) -> None:
    """Write `net` (eval mode) as ONNX with a dynamic batch axis and `metadata` in its properties."""
    import onnx

    net.eval()
    x = torch.zeros(2, N_CHANNELS, N_BINS)
    s = torch.zeros(2, N_SCALARS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, and exact for this net
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x, s), str(tmp), input_names=["x", "s"], output_names=["g2", "g2_std"],
                          dynamic_axes={"x": {0: "P"}, "s": {0: "P"}, "g2": {0: "P"}, "g2_std": {0: "P"}},
                          opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    for k, v in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = k, str(v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    tmp.unlink()


def model_metadata(arch: CnnArch, extra: dict) -> dict[str, str]:
    """What a model file records: format, features version, ranges, architecture, versions."""
    return {
        "format": MODEL_FORMAT,
        "features_version": FEATURES_VERSION,
        "g2_range": json.dumps(G2_RANGE),
        "t1_range_s": json.dumps(T1_RANGE_S),
        "n_events_range": json.dumps(N_RANGE),
        "arch": json.dumps(arch.as_dict()),
        "forward_flops": str(forward_flops(arch)),
        "nvscope_version": software_version(),
        "git_commit": git_commit() or "unknown",
        **{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in extra.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nvscope.models.g2.train_cnn", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="the ONNX file to write")
    p.add_argument("--arch", choices=("shipped", "paper"), default="shipped")
    p.add_argument("--data", type=Path, help="npz of simulated histograms: read if it exists, else written")
    p.add_argument("--emitters", type=int, default=800)
    p.add_argument("--windows", type=int, default=80, help="histograms cut from each emitter's stream")
    p.add_argument("--events", type=int, default=MAX_WINDOW_EVENTS, help="most expected events of one window")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--save-torch", type=Path, help="also save the trained state_dict here")
    p.add_argument("--scheduler", metavar="ADDRESS", help="simulate the data on this Dask scheduler (tcp://host:8786), "
                   "one task per emitter; its workers need nvscope installed (docs/dask.md)")
    p.add_argument("--dask-workers", type=int, metavar="N", help="simulate the data on a local Dask cluster of N "
                   "processes (default without --scheduler: a local process pool)")
    a = p.parse_args(argv)
    if a.scheduler and a.dask_workers:
        p.error("--scheduler and --dask-workers: one or the other")
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.data is not None and a.data.exists():
        with np.load(a.data) as f:
            data = {k: f[k] for k in f.files}
        print(f"read {len(data['hist'])} histograms of {len(np.unique(data['emitter']))} emitters from {a.data}")
    else:
        with dask_client(a.scheduler, a.dask_workers) as client:  # None: the local process pool
            data = simulate_dataset(a.emitters, a.windows, seed=a.seed, events=a.events, client=client)
        if a.data is not None:
            write_npz(str(a.data), data)  # atomic, and under the name given (np.savez would add .npz)
        print(f"simulated {len(data['hist'])} histograms of {a.emitters} emitters in {time.perf_counter() - t0:.0f} s")
    t_sim = time.perf_counter() - t0
    d = dataset_inputs(data, seed=a.seed)
    train_idx, val_idx, test_idx = split_by_emitter(d["emitter"], (0.8, 0.1, 0.1), seed=a.seed)
    arch = SHIPPED_ARCH if a.arch == "shipped" else PAPER_ARCH
    torch.manual_seed(a.seed)
    net = G2Net(arch)
    cfg = TrainConfig(epochs=a.epochs, lr=a.lr, seed=a.seed, max_steps=a.max_steps)
    result = train(net, d, train_idx, val_idx, cfg)
    xs, ss, ys = _tensors(d, test_idx)
    with torch.no_grad():
        m, sd = net(xs, ss)
    rmse = float(torch.sqrt(((m - ys) ** 2).mean()))
    test_nll = evaluate(net, xs, ss, ys)
    # Where the MLE takes over: judged on the validation emitters only (the test set stays unseen).
    val_rmse = band_rmse(net, data, d["row"][val_idx])
    mle_above = mle_above_events(val_rmse)
    pl = pl_rates(data, d["row"][train_idx])
    rate_range = [float(f"{pl.min():.3g}"), float(f"{pl.max():.3g}")]
    t_total = time.perf_counter() - t0
    print(f"test (held-out emitters): NLL {test_nll:+.4f}, RMSE {rmse:.4f} over all N; "
          f"total {t_total:.0f} s (simulation {t_sim:.0f} s)")
    print("validation RMSE by events:  band           rows     cnn      mle")
    for (lo, hi), n, c, m in zip(val_rmse["bands"], val_rmse["rows"], val_rmse["cnn"], val_rmse["mle"]):
        print(f"                            {lo:6d}-{hi:<7d} {n:6d}  {c:7.4f}  {m:7.4f}")
    print(f"mle_above_events {mle_above}; PL rates of training {rate_range[0]:.3g}-{rate_range[1]:.3g} counts/s")
    meta = model_metadata(arch, {
        "train_rows": int(train_idx.size), "train_emitters": int(np.unique(d["emitter"][train_idx]).size),
        "epochs_run": len(result["history"]), "best_val_nll": result["best_val_nll"],
        "test_nll": test_nll, "seed": a.seed, "train_seconds": round(t_total),
        "mle_above_events": mle_above, "rate_range_cps": rate_range, "val_rmse_by_events": val_rmse,
    })
    export_onnx(net, a.out, meta)
    if a.save_torch is not None:
        torch.save(net.state_dict(), a.save_torch)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
