"""A Ray cluster on this machine, on loopback only, for the tests and the scaling benchmark: started with
`ray start --head` in a temporary folder of its own, and stopped by ending exactly its processes (found by that
folder), never with a machine-wide `ray stop`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # else Ray swaps 127.0.0.1 for the network address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_pids(temp_dir: str) -> list[int]:
    """The processes of the cluster started in `temp_dir`: those naming it on their command line (GCS, raylet,
    monitors) and all their descendants (the workers)."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if temp_dir.encode() in (proc / "cmdline").read_bytes():
                roots.add(int(proc.name))
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found - {os.getpid()})


def disconnect_driver() -> None:
    """Leave the cluster if this process joined it as a driver. A driver whose cluster is gone exits its whole
    process with status 1 about a minute later (Ray's GCS reconnect timeout): a test process would end mid-run."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def stop_cluster(temp_dir: str) -> None:
    """End the cluster's processes (SIGTERM, then SIGKILL: gcs_server ignores SIGTERM) and remove its folder.
    This process leaves the cluster first (see disconnect_driver)."""
    disconnect_driver()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_pids(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
    shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def local_cluster(num_cpus: int = 2) -> Iterator[str]:
    """A head node on 127.0.0.1 with `num_cpus` CPUs; yields its address. Sets the loopback variable in this
    process too (a driver must agree with the cluster on the node's address)."""
    os.environ.update(LOOPBACK_ENV)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    port = _free_port()
    ray = Path(sys.executable).parent / "ray"
    try:
        subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", str(num_cpus), "--include-dashboard=false", "--disable-usage-stats",
                        "--temp-dir", temp_dir], check=True, env=dict(os.environ, **LOOPBACK_ENV),
                       capture_output=True, timeout=300)
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp_dir)
