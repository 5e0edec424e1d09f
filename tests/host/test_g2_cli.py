"""`nvscope g2 histogram` and `nvscope g2 estimate`: the file contracts, the estimators' accuracy on
simulated histograms, one clear line for every bad input (exit 2)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nvscope.host.srm.g2_cli import main
from nvscope.models.g2.reasons import (
    G2_REASONS,
    REASON_FEW_EVENTS,
    REASON_NO_EVENTS,
    REASON_NO_NORMALIZATION,
    REASON_OK,
)
from nvscope.models.g2.model import (
    EmitterShape,
    bin_integrals,
    expected_histogram,
    singles_base,
)
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS
from nvscope.rt.kernels.binning import histogram_tags

SHAPE = EmitterShape(20e-9, 250e-9, 0.7)
G0 = 0.5
P = 50
EVENTS = 5000


def run(argv):
    """main(argv) in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- histogram


def write_case(path, content):
    """A bad-input file: raw bytes, an .npz of the given arrays, or nothing at all (content None)."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    return path


def poisson_tags(seed=0, rate=2e6, t=2e-3):
    rng = np.random.default_rng(seed)
    span = int(t * 1e12)
    t_a = np.sort(rng.integers(0, span, rng.poisson(rate * t))).astype(np.int64)
    t_b = np.sort(rng.integers(0, span, rng.poisson(rate * t))).astype(np.int64)
    # a few exact coincidences and a pair at exactly -250 ns, to exercise the edges
    t_b = np.sort(np.concatenate([t_b, t_a[:5], t_a[5:8] - 250_000])).astype(np.int64)
    return t_a, t_b


def brute_force(t_a, t_b):
    hist = np.zeros(N_BINS, np.int64)
    for ta in t_a:
        lo, hi = np.searchsorted(t_b, ta - 250_000), np.searchsorted(t_b, ta + 250_000)
        tau = t_b[lo:hi] - ta
        np.add.at(hist, ((tau + 250_000) * 215) // 500_000, 1)
    return hist


def test_histogram_round_trip_equals_kernel_and_brute_force(tmp_path):
    t_a, t_b = poisson_tags()
    np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b)
    code, _, err = run(["g2", "histogram", str(tmp_path / "tags.npz"), "-o", str(tmp_path / "h.npz")])
    assert code == 0, err
    z = np.load(tmp_path / "h.npz")
    assert z["hist"].dtype == np.int64 and z["hist"].shape == (N_BINS,)
    ref, n_a, n_b = histogram_tags(t_a, t_b, "allpairs")
    np.testing.assert_array_equal(z["hist"], ref)
    np.testing.assert_array_equal(z["hist"], brute_force(t_a, t_b))
    assert z["hist"].sum() > 1000
    assert int(z["n_a"]) == n_a == t_a.size and int(z["n_b"]) == n_b == t_b.size

    code, _, err = run(["g2", "histogram", str(tmp_path / "tags.npz"), "-o", str(tmp_path / "s.npz"),
                        "--mode", "startstop"])
    assert code == 0, err
    ref_ss, _, _ = histogram_tags(t_a, t_b, "startstop")
    s = np.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(s["hist"], ref_ss)
    assert str(s["mode"]) == "startstop"

    code, _, err = run(["g2", "histogram", str(tmp_path / "tags.npz"), "-o", str(tmp_path / "d.npz"),
                        "--mode", "startstop", "--tac-dead-ps", "100000"])
    assert code == 0, err
    dead = np.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(dead["hist"], histogram_tags(t_a, t_b, "startstop", 100_000)[0])
    assert int(dead["tac_dead_ps"]) == 100_000 and dead["hist"].sum() < ref_ss.sum()


def test_histogram_bad_inputs(tmp_path):
    t_a, t_b = poisson_tags(1, t=1e-4)
    out = str(tmp_path / "o.npz")
    cases = {
        "missing.npz": (None, "no such file"),
        "notnpz.npz": (b"not a zip", "not an .npz"),
        "no_tb.npz": ({"t_a": t_a}, "`t_b`"),
        "float.npz": ({"t_a": t_a.astype(float), "t_b": t_b}, "int64"),
        "two_d.npz": ({"t_a": t_a[:10].reshape(2, 5), "t_b": t_b}, "1-D"),
        "unsorted.npz": ({"t_a": t_a[::-1].copy(), "t_b": t_b}, "not sorted"),
    }
    for name, (content, words) in cases.items():
        path = write_case(tmp_path / name, content)
        code, _, err = run(["g2", "histogram", str(path), "-o", out])
        one_line_error(code, err, "nvscope g2 histogram", name, words)
    assert not (tmp_path / "o.npz").exists()
    code, _, err = run(["g2", "histogram", str(tmp_path / "float.npz"), "-o", out, "--mode", "bogus"])
    one_line_error(code, err, "bogus")
    np.savez(tmp_path / "good.npz", t_a=t_a, t_b=t_b)
    code, _, err = run(["g2", "histogram", str(tmp_path / "good.npz"), "-o", out, "--tac-dead-ps", "-1"])
    one_line_error(code, err, "nvscope g2 histogram", "--tac-dead-ps")
    assert not (tmp_path / "o.npz").exists()


# ---------------------------------------------------------------------------- estimate


def simulated(seed=0, p=P, events=EVENTS):
    """Poisson histograms of the model with g2(0) = G0, and the singles that give their base."""
    n_single = np.round(np.sqrt(events / bin_integrals(SHAPE, G0).sum() / BIN_WIDTH_S))
    base = float(singles_base(n_single, n_single, 1.0))
    hist = np.random.default_rng(seed).poisson(expected_histogram(SHAPE, G0, base), (p, N_BINS))
    return {"hist": hist.astype(np.int64), "n_a": np.full(p, n_single), "n_b": np.full(p, n_single),
            "t_acq": np.ones(p)}


@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    d = tmp_path_factory.mktemp("est")
    np.savez(d / "in.npz", **simulated())
    res = {}
    for method in ("mle", "lm", "cnn"):
        code, _, err = run(["g2", "estimate", str(d / "in.npz"), "-o", str(d / f"{method}.npz"),
                              "--method", method])
        assert code == 0, err
        res[method] = dict(np.load(d / f"{method}.npz"))
    return res


def test_mle_recovers_g0(estimates):
    z = estimates["mle"]
    g2, std = z["g2"], z["g2_std"]
    assert g2.dtype == np.float64 and g2.shape == (P,) and std.shape == (P,)
    assert np.isfinite(g2).all() and (std > 0).all()
    assert str(z["method"]) == "mle" and (z["reason"] == "").all()
    assert abs(g2.mean() - G0) < 3 * np.sqrt(np.sum(std**2)) / P
    # the std is the Fisher (Cramer-Rao) std: the scatter agrees with it
    assert 0.6 < np.std(g2) / np.mean(std) < 1.6


def test_lm_finite_and_worse_than_mle(estimates):
    lm, mle = estimates["lm"], estimates["mle"]
    assert str(lm["method"]) == "lm"
    assert np.isfinite(lm["g2"]).all() and np.isfinite(lm["g2_std"]).all()
    rmse = {k: np.sqrt(np.mean((z["g2"] - G0) ** 2)) for k, z in (("lm", lm), ("mle", mle))}
    assert rmse["lm"] > rmse["mle"], rmse


@pytest.mark.parametrize("with_singles", [True, False])
def test_empty_histograms_are_nan_with_reason(tmp_path, with_singles):
    d = simulated(p=6)
    d["hist"][[1, 4]] = 0
    if not with_singles:
        d = {"hist": d["hist"]}
    np.savez(tmp_path / "in.npz", **d)
    for method in ("mle", "lm", "cnn"):
        code, _, err = run(["g2", "estimate", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"),
                            "--method", method])
        assert code == 0, err
        z = np.load(tmp_path / "o.npz")
        assert np.isnan(z["g2"][[1, 4]]).all() and np.isnan(z["g2_std"][[1, 4]]).all()
        assert list(z["reason"][[1, 4]]) == ["no events", "no events"]
        assert np.isfinite(z["g2"][[0, 2, 3, 5]]).all()
        assert (z["reason"][[0, 2, 3, 5]] == "").all()
        np.testing.assert_array_equal(z["n_events"], d["hist"].sum(1))


def test_all_empty_is_nan_not_an_error(tmp_path):
    np.savez(tmp_path / "in.npz", hist=np.zeros((3, N_BINS), np.int64))
    code, _, err = run(["g2", "estimate", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")])
    assert code == 0, err
    z = np.load(tmp_path / "o.npz")
    assert np.isnan(z["g2"]).all() and (z["reason"] == "no events").all()


def test_estimate_bad_inputs(tmp_path):
    good = simulated(p=4, events=500)
    h = good["hist"]
    hf = h.astype(float)
    hf_nan = hf.copy()
    hf_nan[0, 3] = np.nan
    hf_frac = hf.copy()
    hf_frac[1, 2] += 0.5
    neg = h.copy()
    neg[2, 7] = -1
    cases = {
        "missing.npz": (None, "no such file"),
        "notnpz.npz": (b"garbage", "not an .npz"),
        "nohist.npz": ({"n_a": good["n_a"]}, "missing required array `hist`"),
        "bins.npz": ({"hist": h[:, :200]}, "215"),
        "neg.npz": ({"hist": neg}, "negative"),
        "nan.npz": ({"hist": hf_nan}, "NaN"),
        "frac.npz": ({"hist": hf_frac}, "non-integer"),
        "len_na.npz": ({**good, "n_a": good["n_a"][:3]}, "`n_a`"),
        "len_ne.npz": ({"hist": h, "n_events": np.ones(5)}, "`n_events`"),
        "ne_sum.npz": ({"hist": h, "n_events": h.sum(axis=1) + np.r_[0, 5, 0, 0][: len(h)]},
                       "`n_events` disagrees with the histograms' sums at 1 rows (row 1"),
        "len_tacq.npz": ({**good, "t_acq": np.ones(7)}, "`t_acq`"),
        "tacq0.npz": ({**good, "t_acq": np.array([1.0, 0.0, 1.0, 1.0])}, "t_acq"),
        "partial.npz": ({"hist": h, "n_a": good["n_a"]}, "n_b"),
        "huge.npz": ({"hist": np.where(np.arange(215) % 100 == 50, 2**62, 0)[None, :].repeat(2, 0)},
                     "more than 2^53"),  # its int64 sum used to wrap negative: 'fewer events than...'
        "huge_float.npz": ({"hist": np.full((1, 215), 1e17)}, "more than 2^53"),
    }
    out = tmp_path / "o.npz"
    for name, (content, words) in cases.items():
        path = write_case(tmp_path / name, content)
        code, _, err = run(["g2", "estimate", str(path), "-o", str(out)])
        one_line_error(code, err, "nvscope g2 estimate", name, words)
    assert not out.exists()


def test_cnn_as_good_as_mle_and_honest(estimates):
    cnn, mle = estimates["cnn"], estimates["mle"]
    assert str(cnn["method"]) == "cnn" and np.isfinite(cnn["g2"]).all() and (cnn["g2_std"] > 0).all()
    rmse = {k: np.sqrt(np.mean((z["g2"] - G0) ** 2)) for k, z in (("cnn", cnn), ("mle", mle))}
    assert rmse["cnn"] < 1.25 * rmse["mle"], rmse
    # its std means what it says: comparable to the scatter (and to the Fisher std of the MLE)
    assert 0.6 < np.mean(cnn["g2_std"]) / rmse["cnn"] < 1.6
    assert len(str(cnn["model_git_commit"])) >= 7
    assert str(cnn["model_sha256"]) == hashlib.sha256(Path(str(cnn["model_file"])).read_bytes()).hexdigest()


def test_cnn_few_events_are_nan_with_reason(tmp_path):
    d = simulated(p=4, events=500)
    d["hist"][1] = 0
    d["hist"][2] = 0
    d["hist"][2, 100:105] = 2  # 10 events, below the CNN's training range
    np.savez(tmp_path / "in.npz", **d)
    code, _, err = run(["g2", "estimate", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"), "--method", "cnn"])
    assert code == 0, err
    z = np.load(tmp_path / "o.npz")
    assert int(z["min_events"]) == 20
    assert list(z["reason_code"]) == [REASON_OK, REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_OK]
    assert list(z["reason"]) == [G2_REASONS[c] for c in z["reason_code"]]
    assert z["reason"][1] == "no events" and z["reason"][2] == "fewer events than the estimator works from"
    assert np.isnan(z["g2"][[1, 2]]).all() and np.isfinite(z["g2"][[0, 3]]).all()


@pytest.mark.parametrize("method", ["mle", "lm"])
def test_reasons_of_the_normalization(tmp_path, method):
    """Without singles one event only fixes the (free) normalization; with singles, a pixel whose
    singles give no normalization (n_a = 0) is not estimated: the one reason table, as text and code."""
    d = simulated(p=4, events=500)
    d["hist"][1] = 0
    d["hist"][1, 120] = 1
    d["n_a"][2] = 0.0
    np.savez(tmp_path / "s.npz", **d)
    np.savez(tmp_path / "f.npz", hist=d["hist"])
    codes = {}
    for name in ("s", "f"):
        code, _, err = run(["g2", "estimate", str(tmp_path / f"{name}.npz"), "-o", str(tmp_path / f"o{name}.npz"),
                            "--method", method])
        assert code == 0, err
        z = np.load(tmp_path / f"o{name}.npz")
        codes[name] = list(z["reason_code"])
        assert list(z["reason"]) == [G2_REASONS[c] for c in z["reason_code"]]
        assert np.isfinite(z["g2"][z["reason_code"] == REASON_OK]).all()
        assert np.isnan(z["g2"][z["reason_code"] != REASON_OK]).all()
    assert codes["s"] == [REASON_OK, REASON_OK, REASON_NO_NORMALIZATION, REASON_OK]
    assert codes["f"] == [REASON_OK, REASON_FEW_EVENTS, REASON_OK, REASON_OK]


def test_cnn_model_file_bad(tmp_path):
    import onnx
    from nvscope.models.g2.features import SHIPPED_MODEL

    np.savez(tmp_path / "in.npz", **simulated(p=2, events=100))
    other = onnx.load(str(SHIPPED_MODEL))
    for prop in other.metadata_props:
        if prop.key == "features_version":
            prop.value = "g2-cnn-features/0"
    onnx.save(other, str(tmp_path / "old.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases = {"old.onnx": "another version", "junk.onnx": "not a model onnxruntime can run",
             "missing.onnx": "not found"}
    for name, words in cases.items():
        code, _, err = run(["g2", "estimate", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"),
                            "--method", "cnn", "--model", str(tmp_path / name)])
        one_line_error(code, err, "nvscope g2 estimate", name, words)
    assert not (tmp_path / "o.npz").exists()


def test_module_entry_point_and_host_imports_only_rt_kernels(tmp_path):
    """`g2 histogram` calls rt's kernel in its own process (no second interpreter), and of rt the host
    imports rt.kernels only (docs/architecture.md's rule), not the rig's loop, link or spool."""
    t_a, t_b = poisson_tags(2, t=1e-4)
    np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b)
    probe = ("import subprocess, sys\n"
             "popen = subprocess.Popen.__init__\n"
             "def no_python(self, args, *a, **k):\n"
             "    assert sys.executable not in list(args), 'g2 histogram started a second interpreter'\n"
             "    popen(self, args, *a, **k)\n"
             "subprocess.Popen.__init__ = no_python\n"
             "from nvscope.host.srm.g2_cli import main\n"
             f"rc = main(['g2', 'histogram', {str(tmp_path / 'tags.npz')!r}, '-o', {str(tmp_path / 'h.npz')!r}])\n"
             "rt = sorted(m for m in sys.modules if m.startswith('nvscope.rt.'))\n"
             "assert 'nvscope.rt.kernels.binning' in rt, rt\n"
             "assert all(m.startswith('nvscope.rt.kernels') for m in rt), 'host imported ' + str(rt)\n"
             "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "nvscope.host.srm.g2_cli", "g2", "histogram",
                        str(tmp_path / "nope.npz"), "-o", str(tmp_path / "h2.npz")], capture_output=True, text=True, check=False)
    one_line_error(r.returncode, r.stderr, "nope.npz", "no such file")
    np.testing.assert_array_equal(np.load(tmp_path / "h.npz")["hist"], histogram_tags(t_a, t_b)[0])


# ---------------------------------------------------------------------------- how a histogram was acquired


def histogram_file(tmp_path, name, *args, tags=None):
    """`g2 histogram` on TAGS (default: poisson_tags) with extra arguments: the loaded OUT and stdout."""
    t_a, t_b = poisson_tags(3) if tags is None else tags
    if not (tmp_path / "tags.npz").exists():
        np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b)
    code, out, err = run(["g2", "histogram", str(tmp_path / "tags.npz"), "-o", str(tmp_path / name), *args])
    assert code == 0, err
    return dict(np.load(tmp_path / name)), out


def test_histogram_writes_t_acq_mode_dead_time_delay_and_accepted_starts(tmp_path):
    from nvscope.rt.kernels.binning import tag_histogram

    t_a, t_b = poisson_tags(3)
    span = (max(t_a[-1], t_b[-1]) - min(t_a[0], t_b[0])) * 1e-12
    z, out = histogram_file(tmp_path, "a.npz")
    assert float(z["t_acq"]) == pytest.approx(span, rel=1e-12) and "the tags' span" in out
    assert str(z["mode"]) == "allpairs" and int(z["n_starts"]) == -1 and int(z["delay_ps"]) == 0
    z, out = histogram_file(tmp_path, "s.npz", "--mode", "startstop", "--tac-dead-ps", "30000",
                            "--delay-ps", "-12000", "--t-acq", "0.0025")
    ref = tag_histogram(t_a, t_b, "startstop", 30_000, -12_000)
    np.testing.assert_array_equal(z["hist"], ref.hist)
    np.testing.assert_array_equal(z["hist"], histogram_tags(t_a, t_b + 12_000, "startstop", 30_000)[0])
    assert int(z["n_starts"]) == ref.n_starts and z["hist"].sum() <= ref.n_starts < t_a.size
    assert (str(z["mode"]), int(z["tac_dead_ps"]), int(z["delay_ps"])) == ("startstop", 30_000, -12_000)
    assert float(z["t_acq"]) == 0.0025 and "--t-acq" in out and f"{ref.n_starts} starts accepted" in out
    np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b, t_acq=np.float64(0.003))  # a tags file that knows its time
    z, out = histogram_file(tmp_path, "t.npz")
    assert float(z["t_acq"]) == 0.003 and "t_acq of the tags file" in out


def test_estimate_passes_how_the_histograms_were_acquired(tmp_path, monkeypatch):
    """What `_run_method` gets from a `g2 histogram` file and from files with one value per row or none."""
    from nvscope.host.srm import g2_cli

    seen = []

    def fake_run_method(estimator, d):
        seen.append(d)
        n = len(d["hist"])
        return {"g2": np.full(n, 0.5), "g2_std": np.full(n, 0.1), "reason": np.full(n, ""),
                "reason_code": np.zeros(n, np.int8), "min_events": np.int64(1)}

    monkeypatch.setattr(g2_cli, "_run_method", fake_run_method)
    z, _ = histogram_file(tmp_path, "s.npz", "--mode", "startstop", "--tac-dead-ps", "25000")
    code, _, err = run(["g2", "estimate", str(tmp_path / "s.npz"), "-o", str(tmp_path / "e.npz")])
    assert code == 0, err
    d = seen[-1]
    assert d["mode"] == "startstop" and d["tac_dead_s"] == pytest.approx(25e-9)
    np.testing.assert_array_equal(d["n_starts"], [int(z["n_starts"])])
    np.testing.assert_array_equal(d["t_acq"], [float(z["t_acq"])])
    np.testing.assert_array_equal(d["n_a"], [int(z["n_a"])])
    e = np.load(tmp_path / "e.npz")
    assert str(e["mode"]) == "startstop" and list(e["tac_dead_ps"]) == [25_000]
    assert list(e["n_starts"]) == [int(z["n_starts"])]

    h = simulated(p=3, events=300)
    np.savez(tmp_path / "plain.npz", **h)  # no acquisition keys: allpairs, as before
    assert run(["g2", "estimate", str(tmp_path / "plain.npz"), "-o", str(tmp_path / "e.npz")])[0] == 0
    assert (seen[-1]["mode"], seen[-1]["tac_dead_s"], seen[-1]["n_starts"]) == ("allpairs", 0.0, None)
    assert list(np.load(tmp_path / "e.npz")["n_starts"]) == [-1] * 3
    starts = h["hist"].sum(1) + np.array([5, 0, 9])
    np.savez(tmp_path / "rows.npz", **h, mode=np.array(["startstop"] * 3), tac_dead_ps=np.array([0, 1e3, 2e3]),
             n_starts=starts)
    assert run(["g2", "estimate", str(tmp_path / "rows.npz"), "-o", str(tmp_path / "e.npz")])[0] == 0
    np.testing.assert_allclose(seen[-1]["tac_dead_s"], [0, 1e-9, 2e-9])
    np.testing.assert_array_equal(seen[-1]["n_starts"], starts)


def test_acquisition_bad_inputs(tmp_path):
    h = simulated(p=3, events=300)
    ev = h["hist"].sum(1)
    cases = {
        "mode.npz": ({**h, "mode": "bogus"}, "`mode` must be allpairs or startstop, got 'bogus'"),
        "mode_num.npz": ({**h, "mode": np.int64(1)}, "`mode` must be text"),
        "mixed.npz": ({**h, "mode": np.array(["allpairs", "startstop", "allpairs"])}, "mixes allpairs and startstop"),
        "mode_len.npz": ({**h, "mode": np.array(["startstop"] * 2)}, "`mode` must be one value or one per row"),
        "dead.npz": ({**h, "mode": "startstop", "tac_dead_ps": np.int64(-5)}, "`tac_dead_ps` must be finite and >= 0"),
        "starts_low.npz": ({**h, "mode": "startstop", "n_starts": ev - np.array([0, 1, 0])},
                           "`n_starts` is below the events at 1 rows (row 1"),
        "starts_neg.npz": ({**h, "mode": "startstop", "n_starts": np.int64(-2)}, "`n_starts` must be >= 0"),
        "starts_na.npz": ({**h, "mode": "startstop", "n_starts": h["n_a"].astype(np.int64) + 1},
                          "`n_starts` exceeds `n_a`"),
        "starts_ap.npz": ({**h, "n_starts": ev}, "mode` is allpairs"),
    }
    out = tmp_path / "o.npz"
    for name, (content, words) in cases.items():
        path = write_case(tmp_path / name, content)
        code, _, err = run(["g2", "estimate", str(path), "-o", str(out)])
        one_line_error(code, err, "nvscope g2 estimate", name, words)
    t_a, t_b = poisson_tags(4, t=1e-4)
    np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b)
    np.savez(tmp_path / "one.npz", t_a=t_a[:1], t_b=t_b[:0])
    np.savez(tmp_path / "bad_tacq.npz", t_a=t_a, t_b=t_b, t_acq=np.float64(-1.0))
    for path, args, words in [("tags.npz", ["--delay-ps", "250001"], "--delay-ps"),
                              ("tags.npz", ["--t-acq", "0"], "--t-acq"),
                              ("tags.npz", ["--t-acq", "nan"], "--t-acq"),
                              ("one.npz", [], "give --t-acq"),
                              ("bad_tacq.npz", [], "`t_acq` must be a finite time > 0 s")]:
        code, _, err = run(["g2", "histogram", str(tmp_path / path), "-o", str(out), *args])
        one_line_error(code, err, "nvscope g2 histogram", words)
    assert not out.exists()
