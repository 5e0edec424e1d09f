"""g2(0) estimators: speed of the CNN (ONNX and torch, shipped and paper-size) against the `lm` fit,
and accuracy of `mle`, `lm` and `cnn` on emitters never seen in training, next to the Cramer-Rao bound.

    python benchmarks/bench_g2.py [--emitters 100] [--windows 20] [--sections speed,accuracy]

Speed runs on one core (torch and onnxruntime with one thread): latency at batch 1 and throughput
at batch 256, as ratios to the paper-size network in onnxruntime measured in the same run. The
paper-size network is timed with random weights (its cost does not depend on them); its accuracy
is reported when a trained reference file is given (--reference, written by
`python -m nvscope.models.g2.train_cnn --arch paper`).

Accuracy: fresh random emitters (seed 2026; the training used seed 0), `--windows` histograms each
at expected N = 50, 200, 1000, 5000 events, every histogram with its own g2(0), singles known.
Context for mle and cnn: the shape fitted to the sum of the emitter's histograms plus 10 bright ones
of 20000 events that are not scored (as the host fits it to a scan, whose sum its bright pixels
dominate); `mle-true` is the MLE given the true shape, the bound's own assumption; `bayes-true` is
the posterior mean of g2(0) under the test set's own uniform prior on [0, 1], given the true shape and
the singles: the least mean-square error any estimator can reach on this test set. The bound holds
only for unbiased estimators; a CNN below the bound but not below `bayes-true` is a posterior mean at
work, a CNN below `bayes-true` (beyond sampling noise) means the test set leaks.
Columns: RMSE, bias, MAPE, coverage of +-g2_std (68 % is honest), and the RMS Cramer-Rao bound
(known shape and normalization) at the true g2(0) and the histogram's N.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from nvscope.host.srm.cnn_estimator import CnnEstimator, onnx_session
from nvscope.models.g2.cnn import PAPER_ARCH, SHIPPED_ARCH, G2Net, forward_flops
from nvscope.models.g2.features import N_CHANNELS, N_SCALARS, SHIPPED_MODEL
from nvscope.models.g2.least_squares import estimate_g2_lm
from nvscope.models.g2.estimation import estimate_pixels
from nvscope.models.g2.mle import cramer_rao_std, estimate_g2
from nvscope.models.g2.model import EmitterShape, expected_histogram, pixel_base, pixel_models, shape_kernels
from nvscope.models.g2.train_cnn import export_onnx
from nvscope.models.g2.training_data import simulate_dataset
from nvscope.proto.histogram import N_BINS

N_LIST = (50, 200, 1000, 5000)
CONTEXT_WINDOWS, CONTEXT_N = 10, 20_000
TEST_SEED = 2026


def _time(fn, min_s: float = 1.0) -> float:
    """Seconds per call of fn() (best of repeated blocks lasting about min_s)."""
    fn()
    n, best = 1, np.inf
    t_end = time.perf_counter() + min_s
    while time.perf_counter() < t_end or best == np.inf:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = (time.perf_counter() - t0) / n
        best = min(best, dt)
        if dt * n < 0.05:
            n *= 4
    return best


def speed(tmp: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    paper_path = tmp / "paper_random.onnx"
    torch.manual_seed(0)
    paper = G2Net(PAPER_ARCH).eval()
    export_onnx(paper, paper_path, {"format": "timing only"})
    shipped_torch = G2Net(SHIPPED_ARCH).eval()
    nets = {
        "paper  onnxruntime": ("ort", onnx_session(paper_path, 1), forward_flops(PAPER_ARCH)),
        "paper  torch eager": ("torch", paper, forward_flops(PAPER_ARCH)),
        "shipped onnxruntime": ("ort", onnx_session(SHIPPED_MODEL, 1), forward_flops(SHIPPED_ARCH)),
        "shipped torch eager": ("torch", shipped_torch, forward_flops(SHIPPED_ARCH)),
    }
    rows = []
    for batch in (1, 256):
        x = rng.poisson(2.0, (batch, N_CHANNELS, N_BINS)).astype(np.float32)
        s = rng.uniform(size=(batch, N_SCALARS)).astype(np.float32)
        xt, st = torch.from_numpy(x), torch.from_numpy(s)
        for name, (kind, obj, flops) in nets.items():
            if kind == "ort":
                dt = _time(lambda o=obj: o.run(None, {"x": x, "s": s}))
            else:
                def call(net=obj):
                    with torch.no_grad():
                        net(xt, st)
                dt = _time(call)
            rows.append((name, batch, dt, flops))
    # lm: the paper's baseline, one least-squares fit per histogram (batch makes no difference)
    h = rng.poisson(5.0, (16, N_BINS))
    base16 = pixel_base(np.full(16, 5e4), np.full(16, 5e4), np.ones(16), 16)
    dt_lm = _time(lambda: estimate_g2_lm(h, base16), 2.0) / 16
    print(f"forward cost: paper {forward_flops(PAPER_ARCH) / 1e6:.1f} MFLOP, shipped "
          f"{forward_flops(SHIPPED_ARCH) / 1e6:.2f} MFLOP per histogram "
          f"({forward_flops(PAPER_ARCH) / forward_flops(SHIPPED_ARCH):.0f}x fewer)")
    for batch in (1, 256):
        ref = next(dt for n, b, dt, _ in rows if b == batch and n == "paper  onnxruntime")
        print(f"\nbatch {batch}: {'network':22s} {'us/histogram':>13s} {'histograms/s':>13s} {'GFLOP/s':>8s} "
              f"{'speed-up vs paper onnx':>23s}")
        for name, b, dt, flops in rows:
            if b != batch:
                continue
            per = dt / batch
            print(f"         {name:22s} {per * 1e6:13.1f} {1 / per:13.0f} {flops / per / 1e9:8.1f} {ref / dt:23.1f}x")
        print(f"         {'lm fit (scipy)':22s} {dt_lm * 1e6:13.1f} {1 / dt_lm:13.0f} {'':8s} "
              f"{ref / batch / dt_lm:23.2f}x")


def posterior_mean_g2(hist: np.ndarray, shape: EmitterShape, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std of g2(0) under a uniform prior on [0, 1], Poisson likelihood, shape and base known."""
    grid = np.linspace(0.0, 1.0, 1001)
    mu = expected_histogram(shape, grid[None, :], base[:, None])  # (P, G, N_BINS)
    loglik = np.sum(hist[:, None, :] * np.log(np.maximum(mu, 1e-300)) - mu, axis=-1)
    post = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    mean = post @ grid
    return mean, np.sqrt(np.maximum(post @ grid**2 - mean**2, 0.0))


def accuracy(emitters: int, windows: int, reference: Path | None) -> None:
    estimators = {"cnn": CnnEstimator(SHIPPED_MODEL)}
    if reference is not None:
        estimators["cnn-paper"] = CnnEstimator(reference)
    t0 = time.perf_counter()
    # per emitter: `windows` histograms at each N, plus CONTEXT_WINDOWS bright ones that only feed the
    # sum from which its shape is fitted (a scan's sum is dominated by its bright pixels)
    n_target = np.concatenate([np.repeat(N_LIST, windows), np.full(CONTEXT_WINDOWS, CONTEXT_N)])
    d = simulate_dataset(emitters, n_target.size, seed=TEST_SEED, n_target=n_target)
    d["n_target"] = np.tile(n_target, emitters)
    print(f"\naccuracy on {emitters} fresh emitters x {windows} histograms per N, singles known "
          f"(simulated in {time.perf_counter() - t0:.0f} s); RMSE/CRB is RMSE over the RMS Cramer-Rao bound")
    N = d["hist"].sum(axis=1)
    base = pixel_base(d["n_a"], d["n_b"], d["t_acq"], N.size)  # each histogram's normalization, once
    results = {k: np.full((2, N.size), np.nan) for k in ("mle", "mle-true", "bayes-true")}
    for name in estimators:
        results[name] = np.full((2, N.size), np.nan)
    scored = d["n_target"] != CONTEXT_N
    truth = d["g2_true"]
    crb = np.full(N.size, np.nan)
    for e in np.unique(d["emitter"]):
        rows = np.flatnonzero((d["emitter"] == e) & scored)
        shape = EmitterShape(*d["context"][rows[0]])  # the emitter's "scan" shape, as the host fits it
        results["mle"][:, rows] = estimate_g2(d["hist"][rows], shape, base[rows])
        true_shape = EmitterShape(*d["shape_true"][rows[0]])
        results["mle-true"][:, rows] = estimate_g2(d["hist"][rows], true_shape, base[rows])
        crb[rows] = cramer_rao_std(truth[rows], np.maximum(N[rows], 1), true_shape, base_known=True)
        results["bayes-true"][:, rows] = posterior_mean_g2(d["hist"][rows].astype(float), true_shape, base[rows])
        for name, est in estimators.items():
            # the host's g2 path: histograms below the estimator's min_events are NaN, with a reason
            # each histogram's own context (the host's per-pixel shape where training_data gives one)
            models = pixel_models(base[rows], shape_kernels(*d["context"][rows].T), n_pixels=len(rows))
            e = estimate_pixels(est, d["hist"][rows], models, require_base=True)
            results[name][:, rows] = e.g2, e.g2_std
    t_lm = time.perf_counter()
    results["lm"] = np.full((2, N.size), np.nan)
    results["lm"][:, scored] = estimate_g2_lm(d["hist"][scored], base[scored])
    t_lm = (time.perf_counter() - t_lm) / scored.sum()
    print(f"{'N':>5s} {'method':10s} {'RMSE':>7s} {'bias':>7s} {'MAPE %':>7s} {'cover68':>7s} {'CRB':>7s} "
          f"{'RMSE/CRB':>8s} {'NaN':>4s}")
    for n in N_LIST:
        at = d["n_target"] == n
        crb_rms = float(np.sqrt(np.nanmean(crb[at] ** 2)))
        for name in ("mle", "mle-true", "bayes-true", "lm", *estimators):
            g, sd = results[name][:, at]
            ok = np.isfinite(g)
            err = g[ok] - truth[at][ok]
            rmse = float(np.sqrt(np.mean(err**2)))
            cover = float(np.mean(np.abs(err) <= sd[ok]))
            print(f"{n:5d} {name:10s} {rmse:7.4f} {err.mean():+7.4f} {100 * np.mean(np.abs(err) / truth[at][ok]):7.1f} "
                  f"{cover:7.2f} {crb_rms:7.4f} {rmse / crb_rms:8.2f} {int((~ok).sum()):4d}")
        print(f"      (mean N {N[at].mean():.0f})")
    print(f"lm fit: {t_lm * 1e3:.1f} ms per histogram; mle-true: the MLE given the emitter's true shape "
          f"(the bound's assumption); bayes-true: the posterior mean given the true shape under the test "
          f"set's uniform prior (the least RMSE reachable); the others use the shape fitted to the emitter's sum")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emitters", type=int, default=100)
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--sections", default="speed,accuracy")
    p.add_argument("--reference", type=Path, help="a trained paper-size ONNX file, for its accuracy")
    a = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if "speed" in a.sections:
            speed(Path(tmp))
        if "accuracy" in a.sections:
            accuracy(a.emitters, a.windows, a.reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
