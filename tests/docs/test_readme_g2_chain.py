"""The README's off-line g2 commands run as written and chain: `g2 histogram` on simulated time tags,
then `g2 estimate` on its output (t_acq, mode, dead time and accepted starts travel in the file),
giving the simulator's true g2(0) within the estimate's std, in both acquisition modes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

README_G2_CHAIN = (
    ".venv/bin/nvscope g2 histogram tags.npz -o hist.npz",
    ".venv/bin/nvscope g2 estimate hist.npz -o g2.npz",
    ".venv/bin/nvscope g2 histogram tags.npz -o hist-tac.npz --mode startstop --tac-dead-ps 100000",
    ".venv/bin/nvscope g2 estimate hist-tac.npz -o g2-tac.npz",
)
"""The README's worked example (its "Off-line tools" section), character for character: tags.npz holds
`t_a`, `t_b` (int64 ps); the outputs of the histograms are the inputs of the estimates."""

OUTPUTS = {"g2.npz": "allpairs", "g2-tac.npz": "startstop"}
DWELL_S = 5.0


def readme_code_lines() -> list[str]:
    """Every line of the README's fenced code blocks, stripped."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_the_readme_shows_the_chain():
    lines = readme_code_lines()
    missing = [cmd for cmd in README_G2_CHAIN if cmd not in lines]
    assert not missing, f"README.md's code blocks lack {missing}"


def test_the_chain_is_a_chain():
    """Each estimate reads a file a histogram before it wrote; each histogram reads the tags."""
    written = {"tags.npz"}
    for cmd in README_G2_CHAIN:
        words = shlex.split(cmd)
        assert words[:2] == [".venv/bin/nvscope", "g2"] and words[2] in ("histogram", "estimate"), cmd
        assert words[3] in written, f"{cmd}: reads {words[3]}, which no command before it wrote"
        written.add(words[words.index("-o") + 1])
    assert set(OUTPUTS) <= written


@pytest.fixture(scope="module")
def simulated_tags():
    """One NV centred in the spot, DWELL_S s of tags from the simulator, and its true g2(0)."""
    from nvscope.firmware_sim.sample import Emitter, Sample, SimScanner, SimTimeTagger

    scanner = SimScanner()
    tagger = SimTimeTagger(Sample(emitters=(Emitter(0.0, 0.0),), background_rate=1e3), scanner, seed=5)
    scanner.move_to(0.0, 0.0, 0.0)
    tagger.start()
    block = tagger.read(DWELL_S)
    tagger.stop()
    assert block.overflows == 0 and tagger.channel_delay_s() == 0.0  # no delay to correct for in these commands
    return block.t_a, block.t_b, tagger.true_g2_zero()


def test_the_readme_commands_run_verbatim_and_give_the_true_g2(tmp_path, simulated_tags):
    t_a, t_b, truth = simulated_tags
    np.savez(tmp_path / "tags.npz", t_a=t_a, t_b=t_b)
    os.symlink(ROOT / ".venv", tmp_path / ".venv")  # the commands name the repository's .venv/bin/nvscope
    for cmd in README_G2_CHAIN:
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
        if " histogram " in cmd:
            assert "the tags' span" in r.stdout, r.stdout  # where t_acq came from is said
    span_s = (max(t_a[-1], t_b[-1]) - min(t_a[0], t_b[0])) * 1e-12
    for out, mode in OUTPUTS.items():
        z = np.load(tmp_path / out)
        assert str(z["mode"]) == mode and z["g2"].shape == (1,)
        g2, std = float(z["g2"][0]), float(z["g2_std"][0])
        assert np.isfinite(g2) and 0 < std < 0.06, (mode, g2, std)
        assert abs(g2 - truth) < 3 * std, f"{mode}: g2(0) {g2:.3f} +- {std:.3f}, the simulator's truth {truth:.3f}"
    hist = np.load(tmp_path / "hist-tac.npz")
    assert abs(float(hist["t_acq"]) - span_s) < 1e-12 and float(hist["t_acq"]) > 0.99 * DWELL_S
    assert hist["hist"].sum() <= int(hist["n_starts"]) < t_a.size and int(hist["tac_dead_ps"]) == 100_000
