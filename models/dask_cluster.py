"""The Dask client the project's cluster work runs on (training data, `nvscope reanalyze`): an existing
scheduler, or a local cluster of worker processes, one thread each, with no dashboard."""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager


@contextmanager
def dask_client(scheduler: str | None = None, local_workers: int | None = None, timeout_s: float = 10.0,
                quiet: bool = True):
    """A `distributed.Client` connected to the Dask scheduler at `scheduler` ("tcp://host:8786"; one that
    does not answer within `timeout_s` s raises ConnectionError), or to a new local cluster of
    `local_workers` processes of one thread each; None when neither is given. Closed (with its local
    cluster) at the end. `quiet`: Dask's own INFO lines (workers starting, closing) are not logged."""
    if scheduler is None and local_workers is None:
        yield None
        return
    from distributed import Client, LocalCluster  # only where a cluster is asked for

    if quiet:  # (after the import, which sets the level from Dask's configuration)
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with ExitStack() as stack:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=timeout_s)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                raise ConnectionError(f"cannot connect to the Dask scheduler at {scheduler} "
                                      f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
            stack.enter_context(client)
        else:
            # No dashboard; the scheduler's small HTTP server (health, metrics) on a free port, not 8787
            # (dashboard_address=None alone still binds 8787 in this Dask version).
            cluster = stack.enter_context(LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None,
                                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}))
            client = stack.enter_context(Client(cluster))
        yield client
