"""`nvscope vqns fit IN.npz -o OUT.npz`: the off-line VQNS fit of measured coherence curves
(docs/cli.md section 6; docs/physics.md section 3).

IN.npz: `n_pulses` int (S,), `t` (S, T) s (rows may be padded with NaN), `coherence` (S, T),
optional `sigma` (S, T), optional `pi_s` (the pi-pulse duration in s, one or one per curve;
default 0, ideal pulses), optional `candidates` int (K,).
OUT.npz: the fitted spectrum `S_fit` (what it is: `spectrum_estimate`) and its band `S_lo`,
`S_hi` on `omega` (F,), the number of Lorentzians used (`lorentzians_chosen`, and how:
`lorentzian_selection`), the readout terms, every restart's `loss` (reduced chi^2) and
`success` (N,), the ranked `next_n_pulses` and the `sensitivity` (K, F), with the rules that made
them (`band_method`, `proposal_rule`), the configuration, the seed and the software version.

Exit codes: 0 fitted; 2 bad input (one line on stderr naming the file and the problem, nothing
written); 3 no sum of Lorentzians fits (OUT still written, one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError
from nvscope.proto.npz_files import check_out, load_npz, software_version, write_npz

EXIT_OK = 0
EXIT_FIT_FAILED = 3
DEFAULT_RESTARTS, DEFAULT_LORENTZIANS, DEFAULT_SEED = 100, "auto", 0
"""FitConfig's defaults, repeated so that building the parser does not import the fit (numba)."""
MAX_RESTARTS = 10_000  # 100 give a band; 10^6 took minutes and ended in a MemoryError
MAX_LORENTZIANS = 24
"""= models.vqns.fit.MAX_LORENTZIANS (a test checks), repeated for the same reason."""
SENSITIVITY_ORDER = ("rows of `sensitivity` and entries of `scores` follow `candidates` (the input "
                     "order), not `next_n_pulses`")


def add_vqns_parser(subparsers) -> argparse.ArgumentParser:
    """Add `vqns` with its `fit` subcommand to an argparse subparsers object."""
    v = subparsers.add_parser("vqns", help="variational quantum noise spectroscopy, off line")
    vsub = v.add_subparsers(dest="vqns_action", required=True)
    f = vsub.add_parser(
        "fit", help="fit a sum of Lorentzians to coherence curves; band and next sequence",
        description="Fit the noise spectrum (sum of Lorentzians) to measured coherence curves, write its "
                    "confidence band and the ranked next pulse numbers. IN.npz: n_pulses int (S,), "
                    "t (S, T) in seconds (NaN-padded rows allowed), coherence (S, T), optional sigma (S, T), "
                    "optional candidates int (K,). OUT.npz: omega (rad/s), S_fit (the best fit), S_lo, S_hi (rad^2/s), "
                    "loss (reduced chi^2 per restart), next_n_pulses, sensitivity (K, F), and more.")
    f.add_argument("input", metavar="IN.npz", help="measured coherence curves")
    f.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="where to write the result")
    f.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS,
                   help=f"random starts of the fit, 1..{MAX_RESTARTS} (default {DEFAULT_RESTARTS})")
    f.add_argument("--lorentzians", default=DEFAULT_LORENTZIANS,
                   help=f"Lorentzians in the spectrum, 1..{MAX_LORENTZIANS}, or 'auto': chosen by an information "
                        f"criterion, recorded in OUT (default {DEFAULT_LORENTZIANS})")
    f.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed, >= 0 (default {DEFAULT_SEED})")
    return v


def vqns_command(args: argparse.Namespace) -> int:
    """Run `nvscope vqns <action>`; returns the exit code."""
    if args.vqns_action == "fit":
        return _fit(args)
    print(f"nvscope vqns: unknown action {args.vqns_action!r}", file=sys.stderr)  # pragma: no cover
    return EXIT_BAD_INPUT  # pragma: no cover


def _fit(args: argparse.Namespace) -> int:
    from nvscope.models.vqns.analysis import analyse_curves
    from nvscope.models.vqns.data import CoherenceDataError

    try:
        cfg = _config(args)
        check_out(args.out)
        data, candidates = _read_input(args.input)
    except (InputError, CoherenceDataError) as exc:
        print(f"nvscope vqns fit: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    step = analyse_curves(data, cfg, candidates)
    fit, proposal = step.fit, step.proposal
    s_fit, s_lo, s_hi = step.band
    result = {
        "omega": step.omega, "S_fit": s_fit, "S_lo": s_lo, "S_hi": s_hi, "spectrum_estimate": fit.estimate,
        "lorentzians_chosen": fit.lorentzians, "lorentzian_selection": fit.selection,
        "readout_amplitude": fit.amplitude, "readout_offset": fit.offset,
        "loss": fit.chi2 / fit.dof, "success": np.asarray(fit.success, dtype=bool),
        "a": fit.a, "w0": fit.w0, "g": fit.g, "pi_s": data.pi_s,
        "next_n_pulses": proposal.ranked.astype(np.int64),
        "candidates": proposal.candidates.astype(np.int64), "scores": proposal.scores,
        "sensitivity": proposal.sensitivity, "sensitivity_order": SENSITIVITY_ORDER,
        "band_method": fit.band_method, "proposal_rule": proposal.rule, "message": fit.message,
        "ok": fit.ok, "dof": fit.dof, "sigma_given": data.sigma_given,
        "restarts": cfg.restarts, "lorentzians": cfg.lorentzians, "seed": cfg.seed,
        "input": str(args.input), "software_version": software_version(),
    }
    try:
        write_npz(args.out, result)
    except OSError as exc:
        print(f"nvscope vqns fit: {args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not fit.ok:
        print(f"nvscope vqns fit: {args.input}: fit failed: {fit.message}; wrote {args.out}", file=sys.stderr)
        return EXIT_FIT_FAILED
    top = ", ".join(str(n) for n in proposal.ranked[:3])
    print(f"nvscope vqns fit: {fit.message}; next n_pulses {top}; wrote {args.out}")
    return EXIT_OK


def _config(args: argparse.Namespace):
    from nvscope.models.vqns.fit import FitConfig

    if not 1 <= args.restarts <= MAX_RESTARTS:
        raise InputError(f"--restarts must be 1..{MAX_RESTARTS}, got {args.restarts}")
    m = str(args.lorentzians).strip().lower()
    if m != "auto":
        if not m.isdigit() or not 1 <= int(m) <= MAX_LORENTZIANS:
            raise InputError(f"--lorentzians must be 1..{MAX_LORENTZIANS} or auto, got {args.lorentzians!r}")
        m = int(m)
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    return FitConfig(lorentzians=m, restarts=args.restarts, seed=args.seed)


def _read_input(path: str):
    """The validated curves and the candidate pulse numbers from IN.npz."""
    from nvscope.models.vqns.data import CoherenceDataError, coherence_set
    from nvscope.models.vqns.proposal import DEFAULT_CANDIDATES

    arrays = load_npz(path, ("n_pulses", "t", "coherence", "sigma", "pi_s", "candidates"))
    for key in ("n_pulses", "t", "coherence"):
        if key not in arrays:
            raise InputError(f"{path}: missing required array `{key}`")
    n_pulses = _integers(arrays["n_pulses"], "n_pulses", path)
    if n_pulses.ndim != 1 or n_pulses.size == 0:
        raise InputError(f"{path}: `n_pulses` must be a non-empty 1-D array, got shape {n_pulses.shape}")
    t, c = _reals(arrays["t"], "t", path), _reals(arrays["coherence"], "coherence", path)
    sigma = _reals(arrays["sigma"], "sigma", path) if "sigma" in arrays else None
    pi_s = _reals(arrays["pi_s"], "pi_s", path) if "pi_s" in arrays else None
    try:
        data = coherence_set(n_pulses, t, c, sigma, pi_s)
    except CoherenceDataError as exc:
        raise CoherenceDataError(f"{path}: {exc}") from None
    if "candidates" in arrays:
        cands = _integers(arrays["candidates"], "candidates", path)
        if cands.ndim != 1 or cands.size == 0 or (cands < 0).any():
            raise InputError(f"{path}: `candidates` must be a non-empty 1-D array of pulse numbers >= 0")
    else:
        cands = np.asarray(DEFAULT_CANDIDATES, dtype=np.int64)
    return data, cands


def _integers(a: np.ndarray, key: str, path: str) -> np.ndarray:
    """Integer arrays as int64; floats only when every value is a whole number."""
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        return a.astype(np.int64)
    raise InputError(f"{path}: `{key}` must be integers, got dtype {a.dtype}"
                         + (" with non-integer values" if a.dtype.kind == "f" else ""))


def _reals(a: np.ndarray, key: str, path: str) -> np.ndarray:
    if a.dtype.kind not in "iuf":
        raise InputError(f"{path}: `{key}` must be real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    """`python -m nvscope.host.vqns.cli vqns ...`: the `nvscope` command line itself."""
    from ..cli import main as nvscope_main

    return nvscope_main(argv)


if __name__ == "__main__":
    sys.exit(main())
