"""`nvscope mri localize`: end to end on a simulated scan (OUT JSON), and every bad input as one line on
stderr with exit code 2 and nothing written (the issue's "Bad input")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nvscope.host.cli import main
from nvscope.models.mri.scan_data import MriInputError, scan_from_arrays


def _sim_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "models" / "test_mri_sim.py"
    spec = importlib.util.spec_from_file_location("mri_sim", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_SIM = _sim_module()
NM = _SIM.NM
R = np.array([0.8, -0.5, 6.0]) * NM


@pytest.fixture(scope="module")
def arrays():
    return _SIM.simulate_scan([R], np.random.default_rng(4), rf_offset_hz=725e6, half_width=5 * NM,
                              psf_gaps=np.arange(10, 19, 2.0) * NM)


def _run(tmp_path, arrays, capsys, *extra):
    src, out = tmp_path / "in.npz", tmp_path / "out.json"
    np.savez(src, **arrays)
    code = main(["mri", "localize", str(src), "-o", str(out), *extra])
    return code, out, capsys.readouterr()


def test_end_to_end_writes_the_out_json(tmp_path, arrays, capsys):
    code, out, cap = _run(tmp_path, arrays, capsys, "--model", "spins")
    assert code == 0, cap.err
    res = json.loads(out.read_text())
    assert set(res) == {"model", "spins", "layer", "chi2_reduced"}
    assert res["model"] == "spins" and res["layer"] is None and len(res["spins"]) == 1
    pos, sig = np.array(res["spins"][0]["position_m"]), np.array(res["spins"][0]["sigma_m"])
    assert np.all(np.abs(pos - R) < 4 * sig + 1e-12) and np.all(sig < 0.1 * NM)
    assert "wrote" in cap.out


def test_a_map_of_noise_is_no_spin_with_a_warning_not_a_refusal(tmp_path, arrays, capsys):
    rng = np.random.default_rng(5)
    noise = _bad(arrays, deer=rng.normal(0.0, 1.0, arrays["deer"].shape) * arrays["deer_sigma"])
    code, out, cap = _run(tmp_path, noise, capsys)
    assert code == 0, cap.err
    res = json.loads(out.read_text())
    assert res["model"] == "spins" and res["spins"] == [] and 0.7 < res["chi2_reduced"] < 1.3
    assert "warning: no dark spin detected" in cap.err


def test_help_states_units(capsys):
    with pytest.raises(SystemExit):
        main(["mri", "localize", "--help"])
    text = capsys.readouterr().out
    assert "Hz" in text and "SI units" in text and "spins/m^2" in text


def _bad(arrays, **change):
    a = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    for k, v in change.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v
    return a


def _nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    return a


def _irregular(tip):
    t = tip.copy()
    t[:, :, 3, 0] += 0.1 * NM  # one column of x off the even grid
    return t


def _twisted(tip):
    t = tip.copy()
    t[1, :, :, 0] += 0.02 * NM  # x changes with z
    return t


BAD = {
    "missing array": (lambda a: _bad(a, deer=None), "missing required array `deer`"),
    "missing scalar": (lambda a: _bad(a, tau=None), "missing required scalar `tau`"),
    "detuning shape": (lambda a: _bad(a, detuning=a["detuning"][:, :-1]), "`detuning` has shape"),
    "deer shape": (lambda a: _bad(a, deer=a["deer"][:-1]), "`deer` has shape"),
    "sigma shape": (lambda a: _bad(a, deer_sigma=a["deer_sigma"][:, :-1]), "`deer_sigma` has shape"),
    "irregular grid": (lambda a: _bad(a, psf_tip=_irregular(a["psf_tip"])), "`psf_tip` is not a regular grid"),
    "x varies with z": (lambda a: _bad(a, psf_tip=_twisted(a["psf_tip"])), "x must vary only along its own axis"),
    "nan detuning": (lambda a: _bad(a, detuning=_nan(a["detuning"])), "`detuning` has 1 NaN"),
    "nan deer": (lambda a: _bad(a, deer=_nan(a["deer"])), "`deer` has 1 NaN"),
    "deer outside laterally": (lambda a: _bad(a, deer_tip=a["deer_tip"] + np.array([3 * NM, 0, 0])),
                               "`deer_tip` lies outside the PSF grid"),
    "deer outside in depth": (lambda a: _bad(a, deer_tip=a["deer_tip"] * np.array([1, 1, 0]) + np.array([0, 0, 40 * NM])),
                              "outside the PSF grid in depth"),
    "tip in the surface": (lambda a: _bad(a, deer_tip=a["deer_tip"] * np.array([1, 1, 0])), "at or below the surface"),
    "negative depth": (lambda a: _bad(a, depth=-1e-8), "`depth` must be > 0 m"),
    "zero tau": (lambda a: _bad(a, tau=0.0), "`tau` must be > 0 s"),
    "bad contrast": (lambda a: _bad(a, readout_contrast=1.5), "`readout_contrast` must be in (0, 1]"),
    "detuning sigma shape": (lambda a: _bad(a, detuning_sigma=a["detuning_sigma"][:-1]), "`detuning_sigma` has shape"),
    "detuning sigma zero": (lambda a: _bad(a, detuning_sigma=0 * a["detuning_sigma"]),
                            "`detuning_sigma` must be > 0 Hz"),
    "nan detuning sigma": (lambda a: _bad(a, detuning_sigma=_nan(a["detuning_sigma"])), "`detuning_sigma` has 1 NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, arrays, capsys, case):
    make, what = BAD[case]
    code, out, cap = _run(tmp_path, make(arrays), capsys)
    assert code == 2 and not out.exists()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nvscope mri localize: {tmp_path / 'in.npz'}: "), cap.err
    if what:
        assert what in lines[0]
    with pytest.raises(MriInputError):
        from nvscope.models.mri.localize import localize
        localize(scan_from_arrays(make(arrays)))


def test_bias_near_the_anticrossing_is_a_warning_that_explains(tmp_path, arrays, capsys):
    a = _bad(arrays, b0=0.11)
    assert any("anticrossing" in w and "sign" in w for w in scan_from_arrays(a).warnings)
    assert scan_from_arrays(arrays).warnings == ()
