"""The rig stays lean (docs/architecture.md): its entry point, and the simulated rig it composes, load
nothing of the host or the models, and no torch, onnxruntime or matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("nvscope.host", "nvscope.models", "torch", "onnxruntime", "matplotlib")

PROBE = """\
import json, sys
import {module}
{then}
forbidden = {forbidden!r}
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""

COMPOSE_SIM_RIG = """\
import zmq
from nvscope.rt.config import RigConfig, from_dict
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
cfg = from_dict(RigConfig, {{"link": {{"spool_dir": {spool!r}}}}}, "rig")
nvscope.rt.rig_main.build_rig(cfg, True, sock)
sock.close(linger=0)
"""


def loaded(module: str, then: str = "") -> list[str]:
    """The forbidden modules loaded in a fresh interpreter after importing `module` and running `then`."""
    code = PROBE.format(module=module, then=then, forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_probe_sees_a_forbidden_import():
    # the check itself can fail: importing the host's daemon loads nvscope.host
    assert "nvscope.host" in loaded("nvscope.host.daemon")


def test_rig_entry_point_loads_no_host_models_torch_onnxruntime_or_matplotlib():
    assert loaded("nvscope.rt.rig_main") == []


def test_composing_the_simulated_rig_loads_none_of_them_either(tmp_path):
    # what `nvscope rig --sim` loads before it says `bound`: firmware_sim's devices as well
    assert loaded("nvscope.rt.rig_main", COMPOSE_SIM_RIG.format(spool=str(tmp_path / "spool"))) == []
