"""`python -m nvscope.rt.histogram_tool TAGS.npz -o OUT.npz [--mode allpairs|startstop]`.

The off-line half of `nvscope g2 histogram` (design.md "Command-line contracts"): the host CLI
starts this module as a subprocess (host never imports rt), so that the histogram of a tag file
is made by the very Numba kernel the real-time loop uses, `binning.histogram_tags`.

TAGS.npz: `t_a`, `t_b` int64 picosecond tags of detectors A and B, 1-D, sorted.
OUT.npz: `hist` int64 (215,) in the bin convention of physics.md section 1, `n_a`, `n_b` (singles
counts, int64), `mode`, `tac_dead_ps`, `input` and `software_version`.

Exit codes: 0 written; 2 bad input or unwritable output (one line on stderr,
`nvscope g2 histogram: <file>: <problem>`, nothing written).
"""

from __future__ import annotations

import sys

import numpy as np

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, OneLineParser, one_line
from nvscope.proto.histogram import HISTOGRAM_MODES as MODES
from nvscope.proto.npz_files import check_out, load_npz, software_version, write_npz

EXIT_OK = 0
PROG = "nvscope g2 histogram"


def read_tags(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The validated (t_a, t_b) of TAGS.npz: 1-D int64 (sortedness is checked by the kernel's checker)."""
    arrays = load_npz(path, ("t_a", "t_b"))
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


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog=PROG, description="Histogram two detectors' ps time tags (rt's Numba kernel).")
    p.add_argument("input", metavar="TAGS.npz")
    p.add_argument("-o", "--out", required=True, metavar="OUT.npz")
    p.add_argument("--mode", choices=MODES, default="allpairs")
    p.add_argument("--tac-dead-ps", type=int, default=0, help="startstop: converter dead time after a stop, ps")
    args = p.parse_args(argv)
    try:
        if args.tac_dead_ps < 0:
            raise InputError(f"--tac-dead-ps must be >= 0, got {args.tac_dead_ps}")
        check_out(args.out)
        t_a, t_b = read_tags(args.input)
        from nvscope.rt.kernels.binning import histogram_tags

        try:
            hist, n_a, n_b = histogram_tags(t_a, t_b, args.mode, args.tac_dead_ps)
        except ValueError as exc:  # unsorted or out-of-range tags: one line from the kernel's checker
            raise InputError(f"{args.input}: {one_line(exc)}") from None
    except InputError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = {"hist": hist.astype(np.int64), "n_a": np.int64(n_a), "n_b": np.int64(n_b),
              "mode": args.mode, "tac_dead_ps": np.int64(args.tac_dead_ps),
              "input": str(args.input), "software_version": software_version()}
    try:
        write_npz(args.out, result)
    except OSError as exc:
        print(f"{PROG}: {args.out}: cannot write: {exc.strerror or one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{PROG}: {int(hist.sum())} pairs from {n_a} + {n_b} tags ({args.mode}); wrote {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
