"""The CNN's training data simulated on Dask (models/g2/training_data.py): one task per emitter, each with
its own seed from the dataset's seed and its index, so the arrays are bit-identical in this process, in
a process pool and on a Dask cluster of any size; `models` imports distributed only when asked to."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nvscope.models.dask_cluster import dask_client
from nvscope.models.g2.training_data import simulate_dataset

TINY = dict(n_emitters=4, windows=5, seed=11, events=2000)
"""A data set that takes about a second: 4 emitters of 5 windows, at most 2,000 expected events each."""


@pytest.fixture(scope="module")
def plain() -> dict[str, np.ndarray]:
    return simulate_dataset(**TINY, workers=1)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_local_cluster_of_any_size_gives_the_same_arrays(plain, workers):
    from distributed import get_task_stream

    with dask_client(local_workers=workers) as client:
        assert len(client.scheduler_info()["workers"]) == workers
        with get_task_stream(client) as stream:
            data = simulate_dataset(**TINY, client=client)
    tasks = [t for t in stream.data if t["key"].startswith("_simulate")]
    assert len(tasks) == TINY["n_emitters"]  # one task per emitter, run by the cluster
    assert data.keys() == plain.keys()
    for key in plain:
        assert data[key].dtype == plain[key].dtype, key
        np.testing.assert_array_equal(data[key], plain[key], err_msg=key)


def test_the_emitters_differ_and_the_seed_matters(plain):
    hist = plain["hist"].reshape(TINY["n_emitters"], TINY["windows"], -1)
    assert plain["hist"].sum() > 0
    assert not np.array_equal(hist[0], hist[1])  # each emitter has its own seed
    other = simulate_dataset(**{**TINY, "seed": TINY["seed"] + 1}, workers=1)
    assert not np.array_equal(other["g2_true"], plain["g2_true"])
    np.testing.assert_array_equal(plain["emitter"], np.repeat(np.arange(TINY["n_emitters"]), TINY["windows"]))


def test_the_process_pool_gives_the_same_arrays(plain):
    pooled = simulate_dataset(**TINY, workers=2)
    for key in plain:
        np.testing.assert_array_equal(pooled[key], plain[key], err_msg=key)


def test_no_cluster_asked_for_is_none_and_models_import_distributed_lazily():
    with dask_client() as client:
        assert client is None
    code = ("import sys; import nvscope.models.g2.training_data, nvscope.models.g2.train_cnn; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask') or m.startswith('nvscope.host')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
