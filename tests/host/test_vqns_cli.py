"""`nvscope vqns fit IN.npz -o OUT.npz`: the file contract, one clear line for every bad input
(exit 2), OUT still written when no sum of Lorentzians fits (exit 3)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import numpy as np
import pytest

from nvscope.host.vqns import cli as vqns_cli
from nvscope.host.vqns.cli import main
from nvscope.models.vqns.analysis import N_FREQUENCIES
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns import fit as fit_module
from nvscope.models.vqns.fit import FitConfig
from nvscope.models.vqns.proposal import DEFAULT_CANDIDATES
from nvscope.proto.version import software_version

A = np.array([1e11, 3e10])                      # rad^2/s^2
W0 = np.array([2 * np.pi * 1e6, 2 * np.pi * 1e5])  # rad/s
G = np.array([2e5, 5e4])                        # rad/s
NS = np.array([1, 4, 16])
SIGMA = 0.01
CANDIDATES = np.array([2, 8, 3, 32, 5])
FAST = ["--restarts", "20", "--lorentzians", "2", "--seed", "1"]


def curves(seed: int = 0):
    """3 CPMG curves x 20 points of a 2-Lorentzian spectrum with a little noise."""
    t = np.array([np.geomspace(0.2e-6, 40e-6, 20) for _ in NS])
    c = np.exp(-sum(attenuation(A[j], W0[j], G[j], t, NS[:, None]) for j in range(len(A))))
    c = c + SIGMA * np.random.default_rng(seed).standard_normal(c.shape)
    return {"n_pulses": NS.copy(), "t": t, "coherence": c, "sigma": np.full(c.shape, SIGMA)}


def run(argv):
    """main(argv) in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("vqns")
    np.savez(d / "in.npz", **curves(), candidates=CANDIDATES)
    rc, out, err = run(["vqns", "fit", str(d / "in.npz"), "-o", str(d / "out.npz"), *FAST])
    with np.load(d / "out.npz", allow_pickle=False) as z:
        arrays = dict(z)
    return rc, out, err, arrays


def test_contract_keys_shapes_dtypes(fitted):
    rc, out, err, z = fitted
    assert rc == 0, err
    assert err == ""
    F = N_FREQUENCIES
    for key in ("omega", "S_fit", "S_lo", "S_hi"):
        assert z[key].shape == (F,) and z[key].dtype == np.float64, key
        assert np.isfinite(z[key]).all(), key
    assert (np.diff(z["omega"]) > 0).all() and z["omega"][0] > 0
    assert (z["S_lo"] <= z["S_hi"]).all()
    assert z["loss"].shape == (20,) and z["loss"].dtype == np.float64
    assert z["success"].shape == (20,) and z["success"].dtype == np.bool_ and z["success"].any()
    assert np.nanmin(z["loss"]) < 3.0
    assert z["next_n_pulses"].dtype.kind == "i"
    assert sorted(z["next_n_pulses"]) == sorted(CANDIDATES)            # a permutation of the candidates
    assert (z["candidates"] == CANDIDATES).all()                       # sensitivity rows in input order
    assert z["sensitivity"].shape == (len(CANDIDATES), F)
    assert (z["next_n_pulses"] == CANDIDATES[np.argsort(-z["scores"], kind="stable")]).all()
    assert int(z["lorentzians_chosen"]) == 2 and "S_mean" not in z
    assert np.isfinite(float(z["readout_amplitude"])) and np.isfinite(float(z["readout_offset"]))
    for key in ("band_method", "proposal_rule", "message", "sensitivity_order", "software_version",
                "spectrum_estimate", "lorentzian_selection"):
        assert z[key].dtype.kind == "U" and str(z[key]), key
    assert str(z["software_version"]) == software_version()
    assert "candidates" in str(z["sensitivity_order"])
    assert (int(z["restarts"]), int(z["lorentzians"]), int(z["seed"])) == (20, 2, 1)
    assert z["a"].shape == z["w0"].shape == z["g"].shape == (20, 2)


def test_success_prints_one_summary_line(fitted):
    rc, out, _, z = fitted
    assert rc == 0
    assert len(out.strip().splitlines()) == 1
    top = ", ".join(str(n) for n in z["next_n_pulses"][:3])
    assert "restarts succeeded" in out and "reduced chi^2" in out and top in out


def test_subprocess_default_candidates_padded_rows_float_n_pulses(tmp_path):
    """The module runs as a script; NaN-padded rows, whole-number float n_pulses, no candidates."""
    d = curves(seed=2)
    for key in ("t", "coherence", "sigma"):
        d[key][0, 15:] = np.nan          # a shorter first curve
    d["n_pulses"] = d["n_pulses"].astype(float)
    np.savez(tmp_path / "in.npz", **d)
    p = subprocess.run([sys.executable, "-m", "nvscope.host.vqns.cli", "vqns", "fit", str(tmp_path / "in.npz"),
                        "-o", str(tmp_path / "result"), *FAST], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "result").exists() and not (tmp_path / "result.npz").exists()  # name kept as given
    with np.load(tmp_path / "result", allow_pickle=False) as z:
        assert sorted(z["next_n_pulses"]) == sorted(DEFAULT_CANDIDATES)
        assert z["sensitivity"].shape == (len(DEFAULT_CANDIDATES), N_FREQUENCIES)
    assert not list(tmp_path.glob(".*.tmp"))


def test_fit_that_never_succeeds_still_writes_out(tmp_path):
    """Coherence jumping up and down with tiny sigma: no sum of Lorentzians fits (reduced chi^2 > 3)."""
    d = curves()
    d["coherence"] = np.where(np.arange(20) % 2 == 0, 0.9, 0.2)[None].repeat(len(NS), 0)
    d["sigma"] = np.full_like(d["coherence"], 1e-3)
    np.savez(tmp_path / "in.npz", **d)
    rc, out, err = run(["vqns", "fit", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"),
                        "--restarts", "20", "--lorentzians", "1"])
    assert rc == vqns_cli.EXIT_FIT_FAILED == 3
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "fit failed" in err and "reduced chi^2" in err and "in.npz" in err
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        assert not bool(z["ok"])
        assert np.nanmin(z["loss"]) > 3.0
        assert z["loss"].shape == (20,) and z["S_fit"].shape == (N_FREQUENCIES,)
        assert "no sum of 1 Lorentzians" in str(z["message"])


def _write(path, **change):
    d = {**curves(), **change}
    np.savez(path, **{k: v for k, v in d.items() if v is not None})


def _bad_inputs():
    """(name, how to make IN in folder d -> path, extra argv, words the line must hold)."""
    t = curves()["t"]

    def npz(**change):
        def make(d):
            _write(d / "in.npz", **change)
            return d / "in.npz"
        return make

    def text(d):
        (d / "in.npz").write_text("n_pulses,t,coherence\n1,2,3\n")
        return d / "in.npz"

    def npy(d):
        np.save(d / "in.npz", np.zeros(3))
        (d / "in.npz.npy").rename(d / "in.npz")
        return d / "in.npz"

    def empty(d):
        (d / "in.npz").write_bytes(b"")
        return d / "in.npz"

    unsorted = t.copy()
    unsorted[1, [3, 4]] = unsorted[1, [4, 3]]
    return [
        ("missing file", lambda d: d / "absent.npz", [], ["absent.npz", "no such file"]),
        ("a folder", lambda d: d, [], ["cannot read"]),
        ("not an npz", text, [], ["in.npz", "npz"]),
        ("a bare npy", npy, [], ["in.npz", "npz"]),
        ("empty file", empty, [], ["in.npz", "npz"]),
        ("no coherence", npz(coherence=None), [], ["in.npz", "coherence", "missing"]),
        ("no n_pulses", npz(n_pulses=None), [], ["in.npz", "n_pulses", "missing"]),
        ("no t", npz(t=None), [], ["in.npz", "`t`", "missing"]),
        ("float n_pulses", npz(n_pulses=NS + 0.5), [], ["in.npz", "n_pulses", "integers"]),
        ("bool n_pulses", npz(n_pulses=np.array([True, False, True])), [], ["in.npz", "n_pulses", "integers"]),
        ("2-D n_pulses", npz(n_pulses=NS[None]), [], ["in.npz", "n_pulses", "1-D"]),
        ("string t", npz(t=np.full(t.shape, "x")), [], ["in.npz", "`t`", "real"]),
        ("complex sigma", npz(sigma=np.full(t.shape, 0.01 + 0j)), [], ["in.npz", "sigma", "real"]),
        ("coherence out of range", npz(coherence=np.full(t.shape, 1.2)), [], ["in.npz", "coherence", "outside"]),
        ("shapes differ", npz(coherence=np.full((3, 19), 0.5)), [], ["in.npz", "shapes differ"]),
        ("sigma shape", npz(sigma=np.full((3, 19), 0.01)), [], ["in.npz", "sigma"]),
        ("sigma <= 0", npz(sigma=np.zeros(t.shape)), [], ["in.npz", "sigma", "> 0"]),
        ("all-NaN row", npz(t=np.where(np.arange(3)[:, None] == 1, np.nan, t)), [], ["in.npz", "row 1", "no finite"]),
        ("unsorted times", npz(t=unsorted), [], ["in.npz", "row 1", "not strictly increasing"]),
        ("non-positive times", npz(t=t - t[0, 0]), [], ["in.npz", "times must be > 0"]),
        ("negative n_pulses", npz(n_pulses=np.array([1, -4, 16])), [], ["in.npz", "n_pulses", ">= 0"]),
        ("float candidates", npz(candidates=np.array([2.5, 4.0])), [], ["in.npz", "candidates", "integers"]),
        ("negative candidates", npz(candidates=np.array([2, -1])), [], ["in.npz", "candidates", ">= 0"]),
        ("empty candidates", npz(candidates=np.array([], dtype=int)), [], ["in.npz", "candidates", "non-empty"]),
        ("restarts 0", npz(), ["--restarts", "0"], ["--restarts", "1..10000"]),
        ("restarts 10^6", npz(), ["--restarts", "1000000"], ["--restarts", "1..10000", "1000000"]),
        ("lorentzians 0", npz(), ["--lorentzians", "0"], ["--lorentzians", "1..24 or auto"]),
        ("lorentzians 25", npz(), ["--lorentzians", "25"], ["--lorentzians", "1..24 or auto", "25"]),
        ("lorentzians typo", npz(), ["--lorentzians", "atuo"], ["--lorentzians", "1..24 or auto", "atuo"]),
        ("negative pi_s", npz(pi_s=np.array(-4e-8)), [], ["in.npz", "pi_s", ">= 0"]),
        ("pulses that cannot fit", npz(pi_s=np.array(4e-8)), [], ["in.npz", "row 2", "CPMG-16", "cannot hold"]),
        ("negative seed", npz(), ["--seed", "-1"], ["--seed", ">= 0"]),
        ("no output folder", npz(), ["-o", "{d}/nowhere/out.npz"], ["nowhere", "does not exist"]),
    ]


@pytest.mark.parametrize("name, make, extra, words", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_bad_input_is_one_line_exit_2(tmp_path, name, make, extra, words):
    path = make(tmp_path)
    extra = [a.replace("{d}", str(tmp_path)) for a in extra]
    rc, out, err = run(["vqns", "fit", str(path), "-o", str(tmp_path / "out.npz"), *FAST, *extra])
    assert rc == vqns_cli.EXIT_BAD_INPUT == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "out.npz").exists()


def test_bad_input_through_the_script_has_no_traceback(tmp_path):
    _write(tmp_path / "in.npz", coherence=None)
    p = subprocess.run([sys.executable, "-m", "nvscope.host.vqns.cli", "vqns", "fit", str(tmp_path / "in.npz"),
                        "-o", str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "in.npz" in p.stderr and "coherence" in p.stderr


def test_parser_defaults_are_the_fit_defaults():
    import argparse

    parser = argparse.ArgumentParser()
    vqns_cli.add_vqns_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["vqns", "fit", "in.npz", "-o", "out.npz"])
    cfg = FitConfig()
    assert (args.restarts, args.lorentzians, args.seed) == (cfg.restarts, cfg.lorentzians, cfg.seed)
    assert vqns_cli.MAX_LORENTZIANS == fit_module.MAX_LORENTZIANS
    assert args.vqns_action == "fit" and args.input == "in.npz" and args.out == "out.npz"


def test_nvscope_cli_dispatches_vqns(tmp_path):
    """Once host/cli.py wires the subcommand, `nvscope vqns fit` reaches vqns_command."""
    from nvscope.host import cli

    if "vqns" not in cli._parser()._subparsers._group_actions[0].choices:
        pytest.skip("host/cli.py does not add the vqns subcommand yet")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["vqns", "fit", str(tmp_path / "absent.npz"), "-o", str(tmp_path / "out.npz")])
    assert rc == 2 and "absent.npz" in err.getvalue() and "no such file" in err.getvalue()


def test_auto_lorentzians_are_chosen_and_recorded(tmp_path):
    """The default `--lorentzians auto` picks M by its criterion and says which M and why in OUT."""
    _write(tmp_path / "in.npz")
    rc, out, err = run(["vqns", "fit", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"),
                        "--restarts", "20", "--seed", "1"])
    assert rc == 0, err
    with np.load(tmp_path / "out.npz") as z:
        assert str(z["lorentzians"]) == "auto"
        m = int(z["lorentzians_chosen"])
        assert 1 <= m <= vqns_cli.MAX_LORENTZIANS and z["a"].shape[1] == m
        assert str(m) in str(z["lorentzian_selection"])


def test_pi_pulse_duration_reaches_the_fit(tmp_path):
    """IN's `pi_s` is the pulse length the curves were played with; OUT records it per curve."""
    _write(tmp_path / "in.npz", pi_s=np.array(4e-9))
    rc, _, err = run(["vqns", "fit", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), *FAST])
    assert rc == 0, err
    with np.load(tmp_path / "out.npz") as z:
        assert np.allclose(z["pi_s"], 4e-9) and z["pi_s"].shape == (len(NS),)
