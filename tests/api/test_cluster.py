"""spikeforge.cluster: an embedded process LocalCluster, a real `dask scheduler` + `dask worker` pair on
localhost, and the errors for addresses that are malformed or do not answer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spikeforge.cluster import ClusterError, check_address, client, default_workers, describe
from spikeforge.ir.errors import InputError


def _whoami(x):
    return os.getpid(), x * x


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_addresses_are_checked_before_connecting():
    assert check_address("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert check_address(" tcp://node-7.cluster:9000 ") == "tcp://node-7.cluster:9000"
    for bad in ("127.0.0.1:8786", "http://127.0.0.1:8786", "tcp://", "tcp://a b:1", ""):
        with pytest.raises(ClusterError, match="is not accepted; accepted: tcp://HOST:PORT") as caught:
            check_address(bad)
        assert repr(bad) in str(caught.value)
    assert issubclass(ClusterError, InputError)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_worker_counts_are_checked(workers):
    with pytest.raises(ClusterError, match=rf"workers {workers!r} must be a positive integer"):
        with client(workers=workers):
            pass


def test_workers_and_a_scheduler_do_not_mix():
    with pytest.raises(ClusterError, match="applies to the embedded cluster only"):
        with client("tcp://127.0.0.1:8786", workers=2):
            pass


def test_default_is_one_worker_per_core():
    assert default_workers() == len(os.sched_getaffinity(0))


def test_a_scheduler_that_does_not_answer_is_an_input_error_naming_it():
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot connect to the Dask scheduler at {address} within 1 s"):
        with client(address, timeout=1):
            pass
    assert time.monotonic() - started < 20


@pytest.mark.slow
def test_embedded_local_cluster_runs_process_workers_and_shuts_them_down():
    with client(workers=2) as dask:
        assert describe(dask) == "embedded LocalCluster: 2 workers, 2 threads"
        results = dask.gather([dask.submit(_whoami, i, pure=False) for i in range(6)])
        assert [square for _, square in results] == [i * i for i in range(6)]
        pids = {pid for pid, _ in results}
        assert os.getpid() not in pids            # processes, not threads of this one
        cluster = dask.cluster
    assert cluster.status.name == "closed"
    assert all(_gone(pid) for pid in pids)


def _dask_command() -> list:
    executable = Path(sys.executable).with_name("dask")
    if executable.is_file():
        return [str(executable)]
    found = shutil.which("dask")
    if found is None:
        pytest.fail("the `dask` command (from the distributed package) is not installed")
    return [found]


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"{process.args[:2]} did not stop within 60 s of SIGINT:\n{err[-2000:]}")
    return process.returncode, err


@pytest.mark.slow
def test_a_real_scheduler_and_worker_pair_on_localhost(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = _dask_command()
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = subprocess.Popen([*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                   "--nworkers", "1", "--no-dashboard", "--name", "pair-worker"],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        with client(address, timeout=30) as connected:
            connected.wait_for_workers(1, timeout=60)
            assert describe(connected) == f"scheduler {address}: 1 worker, 1 thread"
            # Functions the worker can import itself (this test module is not on its path).
            assert connected.gather([connected.submit(pow, i, 2) for i in range(3)]) == [0, 1, 4]
            (pid,) = set(connected.gather([connected.submit(os.getpid, pure=False) for _ in range(3)]))
            # The task ran in the worker process the `dask worker` command started (its nanny's child).
            assert pid in {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}
        # Closing our client leaves the cluster running for others.
        assert worker.poll() is None and scheduler.poll() is None
    finally:
        outcomes = []
        if worker is not None:
            outcomes.append(("worker", *_stop(worker)))
        outcomes.append(("scheduler", *_stop(scheduler)))
    for name, code, err in outcomes:
        assert code == 0, f"dask {name} exited with {code}:\n{err[-2000:]}"
        assert "Traceback" not in err, f"dask {name}:\n{err[-2000:]}"
    assert _gone(pid)
