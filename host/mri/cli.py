"""`nvscope mri localize IN.npz -o OUT.json [--model auto|spins|layer]`: dark spins (or a layer) localized
from a saved NV-MRI scan (docs/cli.md; docs/physics.md section 2.6).

Exit codes: 0 localized (warnings, e.g. a bias near the level anticrossing, on stderr); 2 bad input (one
line `nvscope mri localize: <file>: <what>` on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, one_line
from nvscope.proto.npz_files import check_out

EXIT_OK = 0
PROG = "nvscope mri localize"


def add_mri_parser(subparsers) -> argparse.ArgumentParser:
    """Add `mri` with its `localize` subcommand to an argparse subparsers object."""
    m = subparsers.add_parser("mri", help="NV-MRI of dark spins, off line")
    msub = m.add_subparsers(dest="mri_action", required=True)
    loc = msub.add_parser(
        "localize", help="localize dark spins (or a layer) from a DEER map and the PSF stack",
        description="Localize dark spins from an NV-MRI scan. IN.npz (SI units; x, y from the NV's lateral "
                    "position, z = tip apex height above the surface): psf_tip (Nz, Ny, Nx, 3) m regular grid, "
                    "detuning (Nz, Ny, Nx) Hz (locked minus tip-retracted frequency), deer_tip (..., 3) m, "
                    "deer (...) the dip 1 - N_rf/N_ref, optional deer_sigma (...) and detuning_sigma (Nz, Ny, Nx) Hz "
                    "(the lock's standard error per PSF pixel, else the tip-dipole fit's rms); scalars f_rf Hz, b0 T, "
                    "depth m, t_pi_rf s, t2star_dark s, tau s, optional readout_contrast (default 0.25) and "
                    "echo_coherence (default 1). OUT.json: model, spins [{position_m, sigma_m}] in m from the "
                    "NV (+z out of the diamond), layer {height_m, height_sigma_m, density_per_m2, "
                    "density_sigma_per_m2} or null, chi2_reduced.")
    loc.add_argument("input", metavar="IN.npz", help="the saved NV-MRI scan (SI units)")
    loc.add_argument("-o", "--out", required=True, metavar="OUT.json", help="where to write the result")
    loc.add_argument("--model", choices=("auto", "spins", "layer"), default="auto",
                     help="spins (1-3, chosen by BIC), layer (height m, density spins/m^2), or auto (default)")
    return m


def mri_command(args: argparse.Namespace) -> int:
    """Run `nvscope mri <action>`; returns the exit code."""
    if args.mri_action == "localize":
        return _localize(args)
    print(f"nvscope mri: unknown action {args.mri_action!r}", file=sys.stderr)  # pragma: no cover
    return EXIT_BAD_INPUT  # pragma: no cover


def _localize(args: argparse.Namespace) -> int:
    from nvscope.models.mri.localize import localize
    from nvscope.models.mri.scan_data import MriInputError, load_mri_npz

    try:
        check_out(args.out)
        scan = load_mri_npz(args.input)
        result = localize(scan, args.model)
    except InputError as exc:
        print(f"{PROG}: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MriInputError as exc:
        msg = one_line(exc)
        if not msg.startswith(f"{args.input}:"):
            msg = f"{args.input}: {msg}"
        print(f"{PROG}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for w in result.warnings:
        print(f"{PROG}: {args.input}: warning: {w}", file=sys.stderr)
    target = Path(args.out)
    tmp = target.resolve().parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        print(f"{PROG}: {args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    what = (f"{len(result.spins)} spin(s)" if result.model == "spins" else
            f"a layer {result.layer.height_m * 1e9:.2f} nm above the NV")
    print(f"{PROG}: {what}, reduced chi2 {result.chi2_reduced:.2f}; wrote {args.out}")
    return EXIT_OK
