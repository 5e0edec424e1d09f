"""`nvscope g2 estimate` and `nvscope g2 histogram`: the off-line g2 commands
(docs/cli.md; the histogram bins and the normalization are those of docs/physics.md section 1).

`g2 histogram TAGS.npz -o OUT.npz [--mode allpairs|startstop] [--tac-dead-ps PS] [--delay-ps PS]
[--t-acq S]`: TAGS `t_a`, `t_b` int64 ps tags, sorted, optional `t_acq` (s); histogrammed by rt's
own Numba kernel (`rt.kernels.binning`, called here). OUT `hist` int64 (215,), `n_a`, `n_b`
(singles counts), `t_acq` (s: --t-acq, else TAGS' `t_acq`, else the tags' span) and `t_acq_source`,
`mode`, `tac_dead_ps`, `delay_ps`, `n_starts` (startstop: the starts the converter accepted; -1
in allpairs), the input name and the software version: what `g2 estimate` reads.

`g2 estimate IN.npz -o OUT.npz [--method cnn|mle|lm]`: IN `hist` int (P, 215), optional
`n_events` (P,) (must equal the row sums), `n_a`, `n_b`, `t_acq` (P,) (all three fix the
normalization; without them it is fitted), `mode`, `tac_dead_ps`, `n_starts` (one value for all
rows or one per row; without them allpairs). The estimate is the host's own g2 path
(`models.g2.estimation.estimate_pixels`) with the histogram model of its mode. OUT
`g2`, `g2_std` (P,) float64, `method`, `reason` (P,) strings and `reason_code` (P,) int8 (the
reason table `models.g2.reasons.G2_REASONS`: empty / 0 where g2 is a number, else why it is NaN),
`min_events` (the estimator's), `n_events`, `mode`, `tac_dead_ps`, `n_starts` (P,), the fitted
shape (mle, cnn), the input name and the software version.

Exit codes: 0 written; 2 bad input (one line on stderr naming the file and the problem, nothing
written).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, one_line
from nvscope.proto.histogram import HALF_RANGE_PS, HISTOGRAM_MODES as MODES, N_BINS
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
        description="Estimate g2(0) of each start-stop histogram. IN.npz: hist int (P, 215) "
                    "(the bins of docs/physics.md); optional n_events (P,), n_a, n_b (P,) singles counts and "
                    "t_acq (P,) in seconds (all three fix the normalization; without them it is fitted); "
                    "optional mode (allpairs|startstop), tac_dead_ps and n_starts (accepted starts), one value "
                    "or one per row (without them: allpairs); `g2 histogram` writes all of these. "
                    "OUT.npz: g2, g2_std (P,) float64, method, reason (P,) (why a pixel is NaN), reason_code (P,).")
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
                    "TAGS.npz: t_a, t_b int64 ps, sorted; optional t_acq (s). OUT.npz: hist int64 (215,), "
                    "n_a, n_b, t_acq (s), mode, tac_dead_ps, delay_ps, n_starts: the input of `g2 estimate`.")
    h.add_argument("input", metavar="TAGS.npz", help="time tags")
    h.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="where to write the histogram")
    h.add_argument("--mode", choices=MODES, default="allpairs", help="acquisition mode (default allpairs)")
    h.add_argument("--tac-dead-ps", type=int, default=0,
                   help="startstop: the converter's dead time after a stop, in ps (default 0)")
    h.add_argument("--delay-ps", type=int, default=0,
                   help="detector B's delay minus A's (cables, electronics), in ps, subtracted from B's tags: "
                        f"tau = t_B - delay - t_A; |delay| <= {HALF_RANGE_PS} (default 0)")
    h.add_argument("--t-acq", type=float, metavar="S",
                   help="acquisition time of the tags, s (default: TAGS' t_acq, else the span of the tags)")
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


def read_tags(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The validated (t_a, t_b) of TAGS.npz: 1-D int64 ps tags (sortedness is checked by the kernel)."""
    arrays = load_npz(path, ("t_a", "t_b"))
    return _tag_arrays(path, arrays)


def read_t_acq(path: str) -> float | None:
    """TAGS.npz's optional `t_acq` (s, one finite number > 0), or None when it has none."""
    arrays = load_npz(path, ("t_acq",))
    if "t_acq" not in arrays:
        return None
    a = arrays["t_acq"]
    if a.size != 1 or a.dtype.kind not in "iuf":
        raise InputError(f"{path}: `t_acq` must be one number (s), got dtype {a.dtype} with shape {a.shape}")
    return _positive_seconds(f"{path}: `t_acq`", float(a.reshape(-1)[0]))


def _positive_seconds(what: str, t: float) -> float:
    if not np.isfinite(t) or t <= 0:
        raise InputError(f"{what} must be a finite time > 0 s, got {t:g}")
    return t


def tags_span_s(t_a: np.ndarray, t_b: np.ndarray) -> float:
    """The time the tags of both detectors span, s (last tag minus first; 0 with fewer than 2)."""
    first = [t[0] for t in (t_a, t_b) if t.size]
    last = [t[-1] for t in (t_a, t_b) if t.size]
    return (int(max(last)) - int(min(first))) * 1e-12 if first else 0.0


def _tag_arrays(path: str, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for key in ("t_a", "t_b"):
        if key not in arrays:
            raise InputError(f"{path}: missing required array `{key}`")
        a = arrays[key]
        if a.ndim != 1:
            raise InputError(f"{path}: `{key}` must be a 1-D array of ps tags, got shape {a.shape}")
        if a.dtype != np.int64:
            if a.dtype.kind in "iu" and a.dtype.itemsize <= 4 or a.dtype == np.uint64 and (
                    a.size == 0 or a.max() < 2**62):
                a = a.astype(np.int64)  # lossless
            else:
                raise InputError(f"{path}: `{key}` must be int64 picosecond tags, got dtype {a.dtype}")
        out.append(np.ascontiguousarray(a))
    return out[0], out[1]


def _histogram(args: argparse.Namespace) -> int:
    prog = "nvscope g2 histogram"
    try:
        if args.tac_dead_ps < 0:
            raise InputError(f"--tac-dead-ps must be >= 0 ps, got {args.tac_dead_ps}")
        if abs(args.delay_ps) > HALF_RANGE_PS:
            raise InputError(f"--delay-ps must be within +-{HALF_RANGE_PS} ps, got {args.delay_ps}")
        if args.t_acq is not None:
            _positive_seconds("--t-acq", args.t_acq)
        check_out(args.out)
        t_a, t_b = read_tags(args.input)
        t_acq, source = args.t_acq, "--t-acq"
        if t_acq is None:
            t_acq, source = read_t_acq(args.input), "t_acq of the tags file"
        if t_acq is None:
            t_acq, source = tags_span_s(t_a, t_b), "the tags' span"
            if t_acq <= 0:
                raise InputError(f"{args.input}: the tags span 0 s, so the acquisition time is unknown: give --t-acq S")
        from nvscope.rt.kernels.binning import tag_histogram

        try:
            h = tag_histogram(t_a, t_b, args.mode, args.tac_dead_ps, args.delay_ps)
        except ValueError as exc:  # unsorted or out-of-range tags: one line from the kernel's checker
            raise InputError(f"{args.input}: {one_line(exc)}") from None
    except InputError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = {"hist": h.hist.astype(np.int64), "n_a": np.int64(h.n_a), "n_b": np.int64(h.n_b),
              "t_acq": np.float64(t_acq), "t_acq_source": source, "n_starts": np.int64(h.n_starts),
              "mode": args.mode, "tac_dead_ps": np.int64(args.tac_dead_ps), "delay_ps": np.int64(args.delay_ps),
              "input": str(args.input), "software_version": software_version()}
    try:
        write_npz(args.out, result)
    except OSError as exc:
        print(f"{prog}: {args.out}: cannot write: {exc.strerror or one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    starts = f", {h.n_starts} starts accepted" if h.n_starts >= 0 else ""
    print(f"{prog}: {int(h.hist.sum())} pairs from {h.n_a} + {h.n_b} tags ({args.mode}{starts}); "
          f"t_acq {t_acq:.6g} s ({source}); wrote {args.out}")
    return EXIT_OK


# ---------------------------------------------------------------------------- estimate


def _estimate(args: argparse.Namespace) -> int:
    prog = "nvscope g2 estimate"
    try:
        check_out(args.out)
        data = _read_estimate_input(args.input)
        estimator = _estimator(args.method, args.model)  # a model file that cannot be used fails here
    except InputError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = _run_method(estimator, data)
    except ValueError as exc:  # the estimators' own checks, should the ones above miss something
        print(f"{prog}: {args.input}: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result.update({"method": args.method, "n_events": data["n_events"], "mode": data["mode"],
                   "tac_dead_ps": data["tac_dead_ps"], "n_starts": data["n_starts_out"], "input": str(args.input),
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


# The estimators (scipy, onnxruntime) and rt's kernel (numba) are imported where a subcommand needs
# them: every `nvscope` command builds this parser, and the rig's start must not pay for them.


def _estimator(method: str, model: str | None):
    """The `G2Estimator` of --method (the CNN from --model when given); ModelFileError for a bad model."""
    if method == "mle":
        from nvscope.models.g2.mle import MleEstimator

        return MleEstimator()
    if method == "lm":
        from nvscope.models.g2.least_squares import LeastSquaresEstimator

        return LeastSquaresEstimator()
    from .cnn_estimator import CnnEstimator

    return CnnEstimator() if model is None else CnnEstimator(model)


def _run_method(estimator, d: dict) -> dict:
    """The one g2 path in the histograms' mode, as the run-end analysis runs it: each pixel's normalization
    (free where the file has no singles), the scan's context (`models.g2.scan_context`: its shape, the
    shape at each pixel's own pump where the singles give the PL, the zero delay where significant) and
    `estimate_pixels`."""
    from nvscope.models.g2.reasons import G2_NOTES, G2_REASONS
    from nvscope.models.g2.scan_context import estimate_scan

    with np.errstate(all="ignore"):
        est, context, _ = estimate_scan(estimator, d["hist"], d["n_a"], d["n_b"], d["t_acq"], d.get("mode", "allpairs"),
                                        d.get("tac_dead_s", 0.0), d.get("n_starts"))
    s = context.shape
    extra: dict = {"shape_t1": s.t1, "shape_t2": s.t2, "shape_a": s.a, "shape_default": np.bool_(context.note != 0),
                   **{k: v for k, v in context.attributes().items() if not k.startswith("shape_")}}
    if hasattr(estimator, "provenance"):  # the CNN: which model file made these numbers
        model = estimator.provenance()
        extra.update(model_git_commit=model["model_commit"], model_sha256=model["model_sha256"],
                     model_file=model["model_file"])
    reason = np.array(G2_REASONS, dtype="<U64")[est.reason]
    return {"g2": est.g2.astype(np.float64), "g2_std": est.g2_std.astype(np.float64), "reason": reason,
            "reason_code": est.reason, "note": np.array(G2_NOTES, dtype="<U80")[est.note],
            "note_code": est.note, "min_events": np.int64(estimator.min_events), **extra}


def _read_estimate_input(path: str) -> dict:
    arrays = load_npz(path, ("hist", "n_events", "n_a", "n_b", "t_acq", "mode", "tac_dead_ps", "n_starts"))
    if "hist" not in arrays:
        raise InputError(f"{path}: missing required array `hist`")
    h = arrays["hist"]
    if h.ndim == 1:
        h = h[None, :]
    if h.ndim != 2 or h.shape[1] != N_BINS:
        raise InputError(f"{path}: `hist` must have shape (P, {N_BINS}) (the bins of docs/physics.md), got {h.shape}")
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
        wrong = np.flatnonzero(out["n_events"] != hist.sum(axis=1))
        if len(wrong):  # the pairs in a histogram are its sum: a file that says otherwise is damaged
            i = int(wrong[0])
            raise InputError(f"{path}: `n_events` disagrees with the histograms' sums at {len(wrong)} rows "
                             f"(row {i}: {int(out['n_events'][i])}, the histogram holds {int(hist[i].sum())})")
    out.update(_read_acquisition(path, arrays, out))
    return out


def _per_row(path: str, key: str, a: np.ndarray, P: int) -> np.ndarray:
    """One value for all rows (0-d or (1,)) or one per row, as a (P,) array; InputError otherwise."""
    if a.ndim == 0 or a.shape == (1,):
        return np.full(P, a.reshape(-1)[0], dtype=a.dtype)
    if a.shape != (P,):
        raise InputError(f"{path}: `{key}` must be one value or one per row ({P},), got shape {a.shape}")
    return a


def _read_acquisition(path: str, arrays: dict, out: dict) -> dict:
    """How the histograms were acquired: `mode`, `tac_dead_ps`, `n_starts` (absent: allpairs, 0, not
    counted); the keys `_run_method` takes (mode str, tac_dead_s s, n_starts (P,) or None) and OUT's."""
    P = out["hist"].shape[0]
    mode = _per_row(path, "mode", arrays["mode"], P) if "mode" in arrays else np.full(P, "allpairs")
    if mode.dtype.kind not in "US":
        raise InputError(f"{path}: `mode` must be text ({' or '.join(MODES)}), got dtype {mode.dtype}")
    mode = mode.astype(str)
    unknown = sorted(str(m) for m in set(mode) - set(MODES))
    if unknown:
        raise InputError(f"{path}: `mode` must be {' or '.join(MODES)}, got {unknown[0]!r}")
    if len(set(mode)) > 1:
        raise InputError(f"{path}: `mode` mixes {' and '.join(sorted(str(m) for m in set(mode)))} rows: their histograms have "
                         "different models; estimate each mode's rows from its own file")
    mode = str(mode[0])
    dead = np.zeros(P)
    if "tac_dead_ps" in arrays:
        dead = _per_row(path, "tac_dead_ps", arrays["tac_dead_ps"], P)
        if dead.dtype.kind not in "iuf":
            raise InputError(f"{path}: `tac_dead_ps` must be numbers (ps), got dtype {dead.dtype}")
        dead = dead.astype(np.float64)
        if not np.isfinite(dead).all() or (dead < 0).any():
            raise InputError(f"{path}: `tac_dead_ps` must be finite and >= 0 ps, got {dead[~(dead >= 0)][0]:g}")
    starts = None
    if "n_starts" in arrays:
        starts = _per_row(path, "n_starts", arrays["n_starts"], P)
        if starts.dtype.kind not in "iuf" or (starts.dtype.kind == "f" and (
                not np.isfinite(starts).all() or (starts != np.round(starts)).any())):
            raise InputError(f"{path}: `n_starts` must be whole numbers (-1: not counted), got {starts.dtype}")
        starts = starts.astype(np.int64)
        if (starts < -1).any():
            raise InputError(f"{path}: `n_starts` must be >= 0 (or -1: not counted), got {starts.min()}")
        counted = starts >= 0
        # each pair of a start-stop histogram is a start the converter accepted; no more starts than A's singles
        few = np.flatnonzero(counted & (starts < out["n_events"]))
        if len(few):
            i = int(few[0])
            raise InputError(f"{path}: `n_starts` is below the events at {len(few)} rows (row {i}: {starts[i]} "
                             f"accepted starts, {int(out['n_events'][i])} events; each event needs a start)")
        if out["n_a"] is not None:
            many = np.flatnonzero(counted & (starts > out["n_a"]))
            if len(many):
                i = int(many[0])
                raise InputError(f"{path}: `n_starts` exceeds `n_a` at {len(many)} rows (row {i}: {starts[i]} "
                                 f"accepted starts of {int(out['n_a'][i])} detector-A tags)")
        if mode == "allpairs" and counted.any():
            raise InputError(f"{path}: `n_starts` counted ({starts[counted][0]} at row {int(np.argmax(counted))}) "
                             "but `mode` is allpairs, which has no converter: a startstop file without its `mode`?")
    dead_s = dead * 1e-12
    return {"mode": mode, "tac_dead_s": float(dead_s[0]) if (dead_s == dead_s[0]).all() else dead_s,
            "n_starts": starts, "tac_dead_ps": dead,
            "n_starts_out": np.full(P, -1, np.int64) if starts is None else starts}


MAX_EVENTS = 2**53
"""The most events a histogram may hold: its sum stays exact in float64 and int64."""


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
    if (a.astype(np.float64).sum(axis=-1) > MAX_EVENTS).any():  # float sums: int64 ones would wrap
        raise InputError(f"{path}: `{key}`: a histogram holds more than 2^53 = {MAX_EVENTS:.3g} events (its sum "
                         "would not be exact; photon counts are never that large)")
    return a.astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    """`python -m nvscope.host.srm.g2_cli g2 ...`: the `nvscope` command line itself."""
    from ..cli import main as nvscope_main

    return nvscope_main(argv)


if __name__ == "__main__":
    sys.exit(main())
