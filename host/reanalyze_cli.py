"""`nvscope reanalyze`: re-estimate stored runs on Dask (docs/cli.md)."""

from __future__ import annotations

import argparse


def add_reanalyze_parser(subparsers) -> argparse.ArgumentParser:
    """Add `reanalyze` to an argparse subparsers object."""
    r = subparsers.add_parser("reanalyze", help="re-estimate many stored runs at once on Dask")
    r.add_argument("runs", nargs="+", metavar="RUN.h5", help="run files written by the host")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--method", choices=("cnn", "mle"), default="cnn", help="g2(0) estimator (default cnn)")
    r.add_argument("--model", metavar="FILE.onnx", help="the g2 CNN instead of the shipped one")
    r.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: a local cluster)")
    return r


def reanalyze_command(args: argparse.Namespace) -> int:
    """Re-analyse the runs; exit 0 if all succeeded, 1 if any failed."""
    raise NotImplementedError("nvscope reanalyze: being built (issue 15)")
