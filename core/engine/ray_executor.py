"""Runs on a Ray cluster: several at once, one per CPU share, each on a worker actor that keeps TensorFlow loaded.

    RayExecutor       what `submit()` uses when FEWSHOT_RAY_ADDRESS is set: queue the run, make sure the dispatcher
                      of this workspace is up, return at once
    _Dispatcher       one detached actor per workspace (0 CPUs, lives on the cluster, not in the page or CLI
                      process that submitted): takes queued runs oldest first and hands each to a free worker actor,
                      creating workers up to the cluster's capacity; when a worker dies mid-run it marks that run
                      failed (the liveness check a page cannot do for a process on another machine)
    _RunWorker        an actor reserving CPUS_PER_RUN CPUs; executes one run at a time (execute_run, exclusive=False)

Capacity = floor(the cluster's CPUs / CPUS_PER_RUN) (FEWSHOT_RAY_CPUS_PER_RUN, default 1), recounted on every
dispatch, so a node that joins adds its CPUs. Ray places each worker where its CPUs are free.

The run folder stays the contract, on storage every node sees at the same path (the workspace, the feature cache
and the app's code): the queue is files (workspace/engine/ray-queue/), the dispatcher describes itself in
workspace/engine/ray.json, stop is the run's STOP file. So the pages read everything they show from files, with no
Ray connection; only submitting connects.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core import fsutil
from core.engine import queue
from core.engine.executors import ExecutorView, _placements
from core.errors import FewShotError
from core.runs import Run, list_runs
from core.workspace import PROJECT_ROOT, engine_dir, workspace_root

KIND = "ray"
NAMESPACE = "fewshot"
POLL_SECONDS = 0.2
# Passed from the submitting process to the cluster's actors: where the workspace and weights are, how to log.
FORWARDED_ENV = ("FEWSHOT_WEIGHTS_DIR", "FEWSHOT_WARM_BACKBONE", "FEWSHOT_RAY_CPUS_PER_RUN", "TF_CPP_MIN_LOG_LEVEL",
                 "FEWSHOT_INTRA_THREADS", "FEWSHOT_INTER_THREADS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


class RayUnavailable(FewShotError):
    """Ray is not installed, or the cluster cannot be reached."""


def cpus_per_run() -> float:
    return float(os.environ.get("FEWSHOT_RAY_CPUS_PER_RUN", "1"))


def ray_queue_dir() -> Path:
    path = engine_dir() / "ray-queue"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_path() -> Path:
    return engine_dir() / "ray.json"


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1")


def import_ray(address: str | None = None) -> Any:
    """Ray, imported on first use (the app runs without it). A loopback cluster (tests, one shared server) is kept on
    loopback: without this Ray swaps 127.0.0.1 for the machine's network address."""
    if address and _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailable("FEWSHOT_RAY_ADDRESS is set, but Ray is not installed here: "
                             "pip install -r requirements-ray.txt (or unset FEWSHOT_RAY_ADDRESS).") from None
    return ray


def connect(address: str) -> Any:
    ray = import_ray(address)
    if not ray.is_initialized():
        try:
            # On loopback the driver says so itself: Ray would take this machine's network address otherwise
            # (when it was imported before the variable above was set) and wait for a raylet that is not there.
            extra = {"_node_ip_address": "127.0.0.1"} if _is_loopback(address) else {}
            ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False,
                     configure_logging=False, **extra)
        except Exception as exc:  # ConnectionError, a timeout, a version mismatch
            raise RayUnavailable(f"Cannot reach the Ray cluster at {address}: {exc}") from None
    return ray


_driver_lock = threading.Lock()


@contextmanager
def driver_connection(address: str) -> Iterator[Any]:
    """Ray, connected as a driver for one errand and disconnected after it. A process that stays connected is ended
    by Ray (exit status 1, about a minute later) when its cluster goes away: the app's server must not be."""
    with _driver_lock:  # two sessions submitting at once share one connection, never shut it under each other
        joined_before = import_ray(address).is_initialized()  # the caller's own connection (a benchmark): kept
        ray = connect(address)
        try:
            yield ray
        finally:
            if not joined_before:
                ray.shutdown()


def dispatcher_name(workspace: Path | None = None) -> str:
    root = str(workspace or workspace_root())
    return f"dispatcher-{hashlib.sha1(root.encode()).hexdigest()[:12]}"


def _runtime_env(workspace: Path) -> dict:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    env["FEWSHOT_WORKSPACE"] = str(workspace)
    # A run's TensorFlow uses its CPU share, not the node's: two runs on a 2-CPU node must not each take both.
    env.setdefault("FEWSHOT_INTRA_THREADS", str(max(1, int(cpus_per_run()))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return {"env_vars": env}


class RayExecutor:
    kind = KIND

    def __init__(self, address: str) -> None:
        self.address = address

    def dispatcher(self, ray: Any) -> Any:
        """This workspace's dispatcher, started on the cluster if it is not running (detached: it outlives us)."""
        workspace = workspace_root()
        handle = ray.remote(_Dispatcher).options(
            name=dispatcher_name(workspace), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_restarts=0, runtime_env=_runtime_env(workspace)).remote(str(workspace), self.address)
        ray.get(handle.ping.remote(), timeout=120)
        return handle

    def submit(self, run: Run) -> Run:
        run.update_status(executor=self.kind, message=f"waiting for a Ray worker ({self.address})")
        queue.enqueue(run, ray_queue_dir())
        with driver_connection(self.address) as ray:
            self.dispatcher(ray)
        return run

    def describe(self) -> ExecutorView:
        state = fsutil.read_json(_state_path(), {}) or {}
        view = ExecutorView(self.kind, self.address, int(state.get("capacity") or 0),
                            len(queue.entries(ray_queue_dir())), _placements(self.kind))
        nodes = state.get("nodes") or []
        view.note = (f"{len(nodes)} node(s), {state.get('cpus', 0):g} CPUs, {cpus_per_run():g} CPU per run; "
                     f"{state.get('workers', 0)} warm worker(s)") if state else "the dispatcher has not started yet"
        return view

    def stop(self, run: Run) -> None:
        run.request_stop()  # the STOP file, on shared storage: the worker on any node sees it within a batch

    def shutdown(self) -> None:
        """End this workspace's dispatcher and its workers (a running run fails; tests and `ray stop` do this)."""
        with driver_connection(self.address) as ray:
            try:
                ray.kill(ray.get_actor(dispatcher_name(), namespace=NAMESPACE))
            except ValueError:
                pass


# ------------------------------------------------------------------------------------------ on the cluster

class _RunWorker:
    """Keeps TensorFlow (and the default backbone, unless FEWSHOT_WARM_BACKBONE=none) loaded; one run at a time."""

    def __init__(self) -> None:
        from core.engine.worker import warm_up

        warm_up()

    def where(self) -> str:
        import ray

        return f"{ray.util.get_node_ip_address()} pid {os.getpid()}"

    def execute(self, path: str) -> str:
        from core.engine.execute import execute_run
        from core.engine.worker import _output_to

        run = Run(Path(path))
        with _output_to(run.log_path):
            status = execute_run(run, executor=KIND, handle_sigterm=False, exclusive=False, node=self.where())
        return status.state


class _Busy:
    def __init__(self, worker: Any, ref: Any, run: Run) -> None:
        self.worker, self.ref, self.run = worker, ref, run


class _Dispatcher:
    def __init__(self, workspace: str, address: str) -> None:
        os.environ["FEWSHOT_WORKSPACE"] = workspace
        self.workspace = Path(workspace)
        self.address = address
        self.idle: list[Any] = []
        self.busy: list[_Busy] = []
        self.started_at = time.time()
        self._recover()
        threading.Thread(target=self._loop, daemon=True, name="dispatch").start()

    def ping(self) -> bool:
        return True

    def _recover(self) -> None:
        """Runs a previous dispatcher handed out died with it (its workers are fate-shared): mark them failed."""
        waiting = {queue.run_of(e).id for e in queue.entries(ray_queue_dir()) if queue.run_of(e)}
        for run in list_runs():
            status = run.read_status()
            if status.executor == KIND and status.busy and run.id not in waiting:
                run.mark_process_lost(status, who="The Ray worker (its dispatcher restarted)")

    def _loop(self) -> None:
        while True:
            try:
                if not self.workspace.exists():
                    return  # its workspace was deleted (a test's temporary folder): serve nothing, create nothing
                self._collect()
                self._dispatch()
                self._describe()
            except Exception:
                traceback.print_exc()
            time.sleep(POLL_SECONDS)

    def _capacity(self) -> int:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 0) // cpus_per_run()))

    def _collect(self) -> None:
        """Finished runs free their worker; a dead worker's run is marked failed and the worker is dropped."""
        import ray

        if not self.busy:
            return
        ready, _ = ray.wait([b.ref for b in self.busy], num_returns=len(self.busy), timeout=0)
        done = set(ready)
        for item in [b for b in self.busy if b.ref in done]:
            self.busy.remove(item)
            try:
                ray.get(item.ref)
                self.idle.append(item.worker)
            except ray.exceptions.RayActorError:
                item.run.mark_process_lost(who="The Ray worker executing it")
            except Exception as exc:  # execute_run records its own failures; this is the actor failing to start
                print(f"run {item.run.id}: {exc}", file=sys.stderr)
                item.run.mark_process_lost(who="The Ray worker executing it")
                ray.kill(item.worker)

    def _free_worker(self) -> Any | None:
        import ray

        if self.idle:
            return self.idle.pop()
        if len(self.busy) < self._capacity():
            return ray.remote(_RunWorker).options(num_cpus=cpus_per_run(), max_restarts=0,
                                                  max_concurrency=1).remote()
        return None

    def _dispatch(self) -> None:
        for entry in queue.entries(ray_queue_dir()):
            run = queue.run_of(entry)
            if run is None or not run.path.exists() or run.read_status().state != "queued":
                queue.remove(entry)  # stopped while waiting, or deleted
                continue
            worker = self._free_worker()
            if worker is None:
                return  # all CPU shares busy: it waits, oldest first
            run.update_status(message="starting on a Ray worker")
            self.busy.append(_Busy(worker, worker.execute.remote(str(run.path)), run))
            queue.remove(entry)

    def _describe(self) -> None:
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        state = {"address": self.address, "capacity": self._capacity(), "cpus": ray.cluster_resources().get("CPU", 0),
                 "nodes": [n.get("NodeManagerAddress") for n in nodes], "workers": len(self.idle) + len(self.busy),
                 "running": [b.run.id for b in self.busy], "dispatcher_host": socket.gethostname()}
        if state != getattr(self, "_last_state", None):
            fsutil.atomic_write_json(_state_path(), {**state, "updated_at": time.time()})
            self._last_state = state
