"""A Dask LocalCluster the test owns, and what its scheduler ran: proof that work went to Dask workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_cluster(workers: int = 2) -> Iterator[tuple[str, object]]:
    """(scheduler address, client) of a process-based LocalCluster, closed afterwards."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield cluster.scheduler_address, client


def finished_on_workers(client) -> dict[str, int]:
    """{worker address: tasks it finished}, as the workers themselves count them."""
    return client.run(lambda dask_worker: dask_worker.state.transition_counter)
