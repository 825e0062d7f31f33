"""The executor boundary: what runs queued run folders. One interface, two implementations:

    LocalWorkerExecutor   the default: the queue folder + the warm worker on this machine, one run at a time
    ProcessExecutor       FEWSHOT_EXECUTOR=process: a new process per run (the benchmarks' baseline, a fallback)
    RayExecutor           a Ray cluster (core/engine/ray_executor.py): one run per CPU share of the cluster at once,
                          chosen when FEWSHOT_RAY_ADDRESS is set (or `python -m core --ray ADDRESS ...`)

Either way the run folder stays the contract: the pages poll it, a stop is its STOP file, and `describe()` reads
only files of the workspace (no Ray connection), so a page can show where each run is and how many wait cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

from core.engine import queue
from core.runs import Run

RAY_ADDRESS_ENV = "FEWSHOT_RAY_ADDRESS"


@dataclass
class Placement:
    run_id: str
    name: str
    state: str            # queued | running
    node: str | None      # where it runs ("this machine", a Ray node's address); None while it waits


@dataclass
class ExecutorView:
    """What the UI shows of the engine: where each run is and how many wait."""
    kind: str                        # "warm worker" | "ray"
    where: str                       # "this machine" | the cluster's address
    capacity: int                    # how many runs execute at once
    waiting: int                     # runs queued, not yet on a worker
    placements: list[Placement] = field(default_factory=list)
    note: str = ""                   # e.g. the cluster's nodes, or why it cannot be reached

    @property
    def running(self) -> list[Placement]:
        return [p for p in self.placements if p.state == "running"]


class Executor(Protocol):
    kind: str

    def submit(self, run: Run) -> Run:
        """Queue the run (its folder exists, state 'queued') and return at once."""

    def describe(self) -> ExecutorView:
        """Where each active run is and how many wait (cheap: files only)."""

    def stop(self, run: Run) -> None:
        """Ask the run to stop, wherever it is (queued, or running on any node)."""


def _placements(kind: str) -> list[Placement]:
    from core.runs import active_runs

    out = []
    for run in active_runs():
        status = run.read_status()
        if status.executor != kind:
            continue
        state = "running" if status.state == "running" else "queued"
        out.append(Placement(run.id, run.name(), state, status.node if state == "running" else None))
    return out


class LocalWorkerExecutor:
    """Today's default: a queue entry per run, executed one at a time by the warm worker of this workspace."""

    kind = "warm worker"

    def submit(self, run: Run) -> Run:
        from core.engine.worker import ensure_worker

        run.update_status(executor=self.kind, message="waiting for the engine")
        queue.enqueue(run)
        ensure_worker()
        return run

    def describe(self) -> ExecutorView:
        return ExecutorView(self.kind, "this machine", 1, len(queue.entries()), _placements(self.kind))

    def stop(self, run: Run) -> None:
        run.request_stop()


class ProcessExecutor:
    """FEWSHOT_EXECUTOR=process: each run in a new process of its own (the design before the warm engine, kept for
    side-by-side benchmarks and as a fallback). Runs take turns through the training slot."""

    kind = "process"

    def submit(self, run: Run) -> Run:
        from core.runs import start_run_process

        run.update_status(executor=self.kind)
        start_run_process(run)
        return run

    def describe(self) -> ExecutorView:
        placements = _placements(self.kind)
        return ExecutorView(self.kind, "this machine", 1, sum(p.state == "queued" for p in placements), placements)

    def stop(self, run: Run) -> None:
        run.request_stop()


def ray_address() -> str | None:
    return os.environ.get(RAY_ADDRESS_ENV) or None


def get_executor(address: str | None = None) -> Executor:
    """Ray when an address is given or configured (FEWSHOT_RAY_ADDRESS), a process per run with
    FEWSHOT_EXECUTOR=process, else the local warm worker."""
    address = address or ray_address()
    if address:
        from core.engine.ray_executor import RayExecutor

        return RayExecutor(address)
    if os.environ.get("FEWSHOT_EXECUTOR") == "process":
        return ProcessExecutor()
    return LocalWorkerExecutor()
