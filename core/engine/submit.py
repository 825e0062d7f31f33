"""Hand a run to the engine: what the pages call. The run folder is created first (the click's time is its
`created_at`); the warm worker picks it up from the queue within a poll."""
from __future__ import annotations

import os
from pathlib import Path

from core.engine import queue
from core.engine.worker import ensure_worker
from core.retraining import retrain_plan
from core.runs import RETRAIN_PREFIX, Run, create_run, start_run_process


def submit(run: Run) -> Run:
    """Queue `run` for the warm worker (started if needed). FEWSHOT_EXECUTOR=process runs it in a new process of
    its own instead: the design before the warm engine, kept for side-by-side benchmarks and as a fallback."""
    if os.environ.get("FEWSHOT_EXECUTOR") == "process":
        run.update_status(executor="process")
        start_run_process(run)
        return run
    run.update_status(executor="warm worker", message="waiting for the engine")
    queue.enqueue(run)
    ensure_worker()
    return run


def retrain(source: Run, name: str = "", data: str | Path | None = None) -> Run:
    """Start a run like `source` (its mode, backbone and settings: `core.retraining.retrain_plan`) on the dataset
    as it is now, after label fixes.

    `data` replaces the dataset (e.g. the editable copy of the read-only demo the fixes were made in).
    Cached features make it fast: only new or changed image content goes through the backbone.
    """
    return submit(create_run(retrain_plan(source, data).config, name=name or f"{RETRAIN_PREFIX}{source.id}"))
