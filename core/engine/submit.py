"""Hand a run to the engine: what the pages and `python -m core submit` call. The run folder is created first (the
click's time is its `created_at`); the configured executor (core/engine/executors.py: the local warm worker, or a
Ray cluster when FEWSHOT_RAY_ADDRESS is set) picks it up."""
from __future__ import annotations

from pathlib import Path

from core.engine.executors import get_executor
from core.retraining import retrain_plan
from core.runs import RETRAIN_PREFIX, Run, create_run


def submit(run: Run, address: str | None = None) -> Run:
    """Queue the run on the configured executor (Ray at `address`, if given) and return at once."""
    return get_executor(address).submit(run)


def retrain(source: Run, name: str = "", data: str | Path | None = None) -> Run:
    """Start a run like `source` (its mode, backbone and settings: `core.retraining.retrain_plan`) on the dataset
    as it is now, after label fixes.

    `data` replaces the dataset (e.g. the editable copy of the read-only demo the fixes were made in).
    Cached features make it fast: only new or changed image content goes through the backbone.
    """
    return submit(create_run(retrain_plan(source, data).config, name=name or f"{RETRAIN_PREFIX}{source.id}"))
