"""Where spikeforge's parallel work runs: a ``dask.distributed`` client, embedded or on a cluster.

Design-space sweeps (:mod:`spikeforge.sweep`) and sharded RTL regressions (``spikeforge verify
--shards N``) hand their independent jobs to Dask rather than to a home-made pool::

    from spikeforge.cluster import client
    with client() as dask:                          # an embedded LocalCluster, one process per core
        futures = [dask.submit(work, point) for point in points]
    with client("tcp://10.0.0.5:8786") as dask:     # an existing scheduler (`dask scheduler`)
        ...

By default the context manager starts a :class:`distributed.LocalCluster` on the loopback interface
with one single-threaded worker *process* per core (the work is numpy, Amaranth and Verilator: the
GIL and the numerical libraries' own threads would fight over the cores otherwise; Dask's nanny sets
``OMP_NUM_THREADS=1`` and friends in each worker); the scheduler's HTTP endpoints take a free
loopback port, so several sweeps (or a test beside a sweep) run at once without fighting over 8787. Given a scheduler address it
connects to a running cluster instead: start one with ``dask scheduler`` and one ``dask worker
tcp://HOST:8786`` per machine, each with spikeforge installed (the workers import it to run the jobs).
Either way, leaving the ``with`` block closes the client and, for the embedded cluster, its workers
and scheduler.

An address that is not ``tcp://HOST:PORT`` (or ``tls://``, ``inproc://``), or a scheduler that does
not answer within ``timeout`` seconds, is a :class:`ClusterError` (an :class:`InputError`, exit 2)
naming the address.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from contextlib import contextmanager
from typing import Iterator

from distributed import Client, LocalCluster

from spikeforge.ir.errors import InputError

__all__ = ["ClusterError", "client", "describe", "default_workers", "check_address"]

#: Seconds a worker process of the embedded cluster gets to exit when the cluster closes.
CLOSE_TIMEOUT = 60.0

_ADDRESS = re.compile(r"^(tcp|tls|inproc)://[^\s/:]+(:\d{1,5})?$|^(tcp|tls)://\[[0-9A-Fa-f:]+\](:\d{1,5})?$")


class ClusterError(InputError):
    """A scheduler address that is malformed or does not answer, or a worker count that is not accepted."""


def default_workers() -> int:
    """One worker per core this process may use (``os.sched_getaffinity`` where the OS has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:      # macOS, Windows: no affinity call
        return max(1, os.cpu_count() or 1)


def check_address(scheduler: str) -> str:
    """``scheduler`` if it reads as a Dask scheduler address (``tcp://HOST:PORT``), else :class:`ClusterError`."""
    if not isinstance(scheduler, str) or not _ADDRESS.match(scheduler.strip()):
        raise ClusterError(f"scheduler address {scheduler!r} is not accepted; accepted: tcp://HOST:PORT "
                           f"(e.g. tcp://127.0.0.1:8786, what `dask scheduler` prints), or tls://HOST:PORT")
    return scheduler.strip()


@contextmanager
def client(scheduler: str | None = None, workers: int | None = None, *,
           timeout: float = 10.0) -> Iterator[Client]:
    """A :class:`distributed.Client` for the ``with`` block; everything it started is shut down after.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running ``dask scheduler``: connect to it (its workers do the work;
        ``workers`` must then be ``None``). ``None``: start an embedded :class:`LocalCluster`.
    workers : int, optional
        Embedded cluster only: the number of worker processes (one thread each); default one per core.
    timeout : float
        Seconds to wait for the scheduler to answer (and for the embedded cluster to start).

    Raises
    ------
    ClusterError
        The address is malformed, nothing answers there within ``timeout``, ``workers`` is not a
        positive integer, or both ``scheduler`` and ``workers`` are given.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ClusterError(f"workers {workers!r} must be a positive integer (or unset: one per core, "
                           f"{default_workers()} here)")
    if scheduler is not None:
        if workers is not None:
            raise ClusterError(f"workers ({workers}) applies to the embedded cluster only; the workers of "
                               f"{scheduler} are the ones started with `dask worker {scheduler}`")
        address = check_address(scheduler)
        try:
            connected = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ClusterError(f"cannot connect to the Dask scheduler at {address} within {timeout:g} s "
                               f"({type(error).__name__}: {error}); is `dask scheduler` running there and "
                               f"reachable? Leave the scheduler unset to run on an embedded local cluster") from None
        try:
            yield connected
        finally:
            connected.close()
        return
    cluster = LocalCluster(n_workers=workers or default_workers(), processes=True, threads_per_worker=1,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", timeout=f"{max(timeout, 30)}s")
    try:
        local = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    try:
        yield local
    finally:
        local.close()
        try:
            # Dask gives a closing worker process 4 s before it kills it; one that has imported torch
            # can take longer than that just to exit on a busy machine. Close them with more patience.
            cluster.sync(_close_workers, cluster, CLOSE_TIMEOUT)
        finally:
            cluster.close()


async def _close_workers(cluster: LocalCluster, timeout: float) -> None:
    await asyncio.gather(*(worker.close(timeout=timeout) for worker in list(cluster.workers.values())))


def describe(dask: Client) -> str:
    """One line for people: where the work runs and how many workers (threads) it has."""
    info = dask.scheduler_info(n_workers=-1) if _takes_n_workers(dask) else dask.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(worker.get("nthreads", 1)) for worker in workers.values())
    embedded = isinstance(getattr(dask, "cluster", None), LocalCluster)
    where = "embedded LocalCluster" if embedded else f"scheduler {dask.scheduler.address}"
    return f"{where}: {len(workers)} worker{'s' if len(workers) != 1 else ''}, {threads} thread{'s' if threads != 1 else ''}"


def _takes_n_workers(dask: Client) -> bool:
    # Newer distributed lists only the first few workers unless n_workers=-1 is passed.
    return "n_workers" in inspect.signature(dask.scheduler_info).parameters
