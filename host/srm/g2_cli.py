"""`nvscope g2 estimate` and `nvscope g2 histogram`: the off-line g2 commands
(design.md "Command-line contracts"; physics.md section 1).

`g2 histogram TAGS.npz -o OUT.npz [--mode allpairs|startstop]`: runs
`python -m nvscope.rt.histogram_tool` as a subprocess (host never imports rt), so the histogram
is made by rt's Numba kernel; its exit code and its one stderr line are passed through.

`g2 estimate IN.npz -o OUT.npz [--method cnn|mle|lm]`: IN `hist` int (P, 215), optional
`n_events` (P,), `n_a`, `n_b`, `t_acq` (P,) (all three fix the normalization). OUT `g2`, `g2_std`
(P,) float64, `method`, `reason` (P,) strings (empty where g2 is a number, else why it is NaN),
`n_events`, the fitted shape (mle, cnn), the input name and the software version.

Exit codes: 0 written; 2 bad input (one line on stderr naming the file and the problem, nothing
written).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, one_line
from nvscope.proto.histogram import HISTOGRAM_MODES as MODES, N_BINS
from nvscope.proto.npz_files import check_out, load_npz, software_version, write_npz

EXIT_OK = 0
METHODS = ("cnn", "mle", "lm")
DEFAULT_METHOD = "mle"


def add_g2_parser(subparsers) -> argparse.ArgumentParser:
    """Add `g2` with its `estimate` and `histogram` subcommands to an argparse subparsers object."""
    g = subparsers.add_parser("g2", help="photon-correlation histograms and g2(0), off line")
    gsub = g.add_subparsers(dest="g2_action", required=True)
    e = gsub.add_parser(
        "estimate", help="g2(0) and its std per histogram",
        description="Estimate g2(0) of each start-stop histogram. IN.npz: hist int (P, 215) (physics.md bins); "
                    "optional n_events (P,), n_a, n_b (P,) singles counts and t_acq (P,) in seconds (all three "
                    "fix the normalization). OUT.npz: g2, g2_std (P,) float64, method, reason (P,) (why a pixel "
                    "is NaN).")
    e.add_argument("input", metavar="IN.npz", help="histograms")
    e.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="where to write the result")
    e.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="mle: Poisson MLE with the shape fitted on the summed histograms (default); "
                        "lm: per-pixel least-squares fit of Eq. 3 (the paper's baseline, slow); "
                        "cnn: the shipped CNN (onnxruntime) with the same fitted shape as context")
    e.add_argument("--model", metavar="FILE.onnx", help="with --method cnn: this model file instead of the "
                   "one shipped with nvscope")
    h = gsub.add_parser(
        "histogram", help="histogram two detectors' time tags (rt's Numba kernel)",
        description="Histogram ps time tags of detectors A and B into the 215-bin delay histogram. "
                    "TAGS.npz: t_a, t_b int64 ps, sorted. OUT.npz: hist int64 (215,), n_a, n_b.")
    h.add_argument("input", metavar="TAGS.npz", help="time tags")
    h.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="where to write the histogram")
    h.add_argument("--mode", choices=MODES, default="allpairs", help="acquisition mode (default allpairs)")
    return g


def g2_command(args: argparse.Namespace) -> int:
    """Run `nvscope g2 <action>`; returns the exit code."""
    if args.g2_action == "estimate":
        return _estimate(args)
    if args.g2_action == "histogram":
        return _histogram(args)
    print(f"nvscope g2: unknown action {args.g2_action!r}", file=sys.stderr)  # pragma: no cover
    return EXIT_BAD_INPUT  # pragma: no cover


# ---------------------------------------------------------------------------- histogram


def _histogram(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "nvscope.rt.histogram_tool", str(args.input), "-o", str(args.out),
           "--mode", args.mode]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        print(f"nvscope g2 histogram: cannot start {sys.executable}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if proc.stdout:
        sys.stdout.write(proc.stdout)
    err = proc.stderr.strip()
    if proc.returncode != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        # The tool's errors are one line; a crash (traceback) is reduced to its last line.
        line = lines[-1] if lines else f"failed with exit code {proc.returncode}"
        if not line.startswith("nvscope g2 histogram"):
            line = f"nvscope g2 histogram: {args.input}: {line}"
        print(line, file=sys.stderr)
        return proc.returncode if proc.returncode > 0 else EXIT_BAD_INPUT
    if err:
        print(err, file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------- estimate


def _estimate(args: argparse.Namespace) -> int:
    prog = "nvscope g2 estimate"
    try:
        check_out(args.out)
        data = _read_estimate_input(args.input)
    except InputError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = _run_method(args.method, data, args.model)
    except ValueError as exc:  # the estimators' own checks, should the ones above miss something
        print(f"{prog}: {args.input}: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result.update({"method": args.method, "n_events": data["n_events"], "input": str(args.input),
                   "software_version": software_version()})
    try:
        write_npz(args.out, result)
    except OSError as exc:
        print(f"{prog}: {args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    g2 = result["g2"]
    ok = np.isfinite(g2)
    summary = f"median g2(0) {np.median(g2[ok]):.3f}" if ok.any() else "no estimates"
    print(f"{prog}: {args.method}: {int(ok.sum())} of {g2.size} pixels, {summary}; wrote {args.out}")
    return EXIT_OK


def _run_method(method: str, d: dict, model: str | None = None) -> dict:
    hist = d["hist"]
    P = hist.shape[0]
    singles = d["n_a"] is not None
    N = hist.sum(axis=1)
    reason = np.full(P, "", dtype="<U64")
    reason[N == 0] = "no events"
    if not singles:
        reason[N == 1] = "one event only fixes the normalization"
        base = None
    else:
        from nvscope.models.g2.model import singles_base

        base = singles_base(d["n_a"], d["n_b"], d["t_acq"])
        reason[(N > 0) & ~(np.isfinite(base) & (base > 0))] = "singles give no normalization (n_a n_b = 0)"
    kw = {"n_a": d["n_a"], "n_b": d["n_b"], "t_acq": d["t_acq"]} if singles else {}
    extra: dict = {}
    with np.errstate(all="ignore"):
        if method in ("mle", "cnn"):
            from nvscope.models.g2.mle import estimate_g2, fit_shape_full

            estimator = None
            if method == "cnn":
                from .cnn_estimator import CnnEstimator

                # a model file that cannot be used fails here (ModelFileError), before any work
                estimator = CnnEstimator() if model is None else CnnEstimator(model)
            total_base = None
            if singles:
                total_base = float(base[np.isfinite(base)].sum())
            if N.sum() == 0 or (singles and not total_base > 0):
                g2, std = np.full(P, np.nan), np.full(P, np.nan)
                if N.sum() > 0:
                    reason[reason == ""] = "singles give no normalization (n_a n_b = 0)"
            else:
                # The emitter shape from the summed histograms: the context of both estimators.
                fit = fit_shape_full(hist.sum(axis=0), base=total_base)
                extra = {"shape_t1": fit.shape.t1, "shape_t2": fit.shape.t2, "shape_a": fit.shape.a,
                         "shape_g0": fit.g0, "shape_base": fit.base}
                if estimator is None:
                    g2, std = estimate_g2(hist, fit.shape, **kw)
                else:
                    g2, std = np.full(P, np.nan), np.full(P, np.nan)
                    few = (N > 0) & (N < estimator.min_events)
                    reason[few & (reason == "")] = f"fewer than {estimator.min_events} events (the CNN's training range)"
                    ok = reason == ""
                    if ok.any():
                        sel = {k: v[ok] for k, v in kw.items()}
                        g2[ok], std[ok] = estimator.estimate(hist[ok], fit.shape, **sel)
                    extra["model_git_commit"] = estimator.metadata.get("git_commit", "")
        else:
            from nvscope.models.g2.least_squares import estimate_g2_lm

            g2, std = estimate_g2_lm(hist, **kw)
    g2 = np.asarray(g2, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    reason[~np.isfinite(g2) & (reason == "")] = "no estimate"
    reason[np.isfinite(g2) & ~np.isfinite(std) & (reason == "")] = "std undefined"
    return {"g2": g2, "g2_std": std, "reason": reason, **extra}


def _read_estimate_input(path: str) -> dict:
    arrays = load_npz(path, ("hist", "n_events", "n_a", "n_b", "t_acq"))
    if "hist" not in arrays:
        raise InputError(f"{path}: missing required array `hist`")
    h = arrays["hist"]
    if h.ndim == 1:
        h = h[None, :]
    if h.ndim != 2 or h.shape[1] != N_BINS:
        raise InputError(f"{path}: `hist` must have shape (P, {N_BINS}) (the physics.md bins), got {h.shape}")
    if h.shape[0] == 0:
        raise InputError(f"{path}: `hist` has no histograms (shape {h.shape})")
    hist = _counts(h, "hist", path)
    P = hist.shape[0]
    out: dict = {"hist": hist}
    for key in ("n_events", "n_a", "n_b", "t_acq"):
        if key not in arrays:
            out[key] = None
            continue
        a = arrays[key]
        if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
            raise InputError(f"{path}: `{key}` must be numbers, got dtype {a.dtype}")
        a = a.astype(np.float64).reshape(-1) if a.ndim <= 1 else a
        if a.ndim != 1 or a.shape[0] != P:
            raise InputError(f"{path}: `{key}` must have shape ({P},) like the rows of `hist`, "
                               f"got {arrays[key].shape}")
        if not np.isfinite(a).all():
            raise InputError(f"{path}: `{key}` has NaN or inf")
        if key == "t_acq":
            if (a <= 0).any():
                raise InputError(f"{path}: `t_acq` must be > 0 s, got {a.min():g}")
        elif (a < 0).any():
            raise InputError(f"{path}: `{key}` must be >= 0, got {a.min():g}")
        out[key] = a
    singles = [out[k] is not None for k in ("n_a", "n_b", "t_acq")]
    if any(singles) and not all(singles):
        missing = ", ".join(f"`{k}`" for k, s in zip(("n_a", "n_b", "t_acq"), singles) if not s)
        raise InputError(f"{path}: give all of `n_a`, `n_b`, `t_acq` or none; missing {missing}")
    if out["n_events"] is None:
        out["n_events"] = hist.sum(axis=1)
    else:
        ne = out["n_events"]
        if (ne != np.round(ne)).any():
            raise InputError(f"{path}: `n_events` must be whole numbers")
        out["n_events"] = ne.astype(np.int64)
    return out


def _counts(a: np.ndarray, key: str, path: str) -> np.ndarray:
    """Histogram counts as int64: integers, or floats that are whole numbers; >= 0, finite."""
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise InputError(f"{path}: `{key}` must be integer counts, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{path}: `{key}` has NaN or inf")
        if (a != np.round(a)).any():
            raise InputError(f"{path}: `{key}` must be integer counts, got non-integer values")
    if (a < 0).any():
        raise InputError(f"{path}: `{key}` has negative counts ({int((a < 0).sum())} bins, smallest {a.min()})")
    return a.astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    """`python -m nvscope.host.srm.g2_cli g2 ...`: the `nvscope` command line itself."""
    from ..cli import main as nvscope_main

    return nvscope_main(argv)


if __name__ == "__main__":
    sys.exit(main())
