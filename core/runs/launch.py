"""Start a run's execution outside the caller's process, and the retrain that repeats a run."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from core.runs.folder import Run
from core.runs.process import process_start_time
from core.runs.store import RETRAIN_PREFIX, create_run
from core.workspace import PROJECT_ROOT


def start_run_process(run: Run) -> int:
    """Execute the run in its own OS process (its own session: a closed browser or a restarted server leaves it
    running). Returns the pid; the process records itself in status.json."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core", "run", str(run.path)], cwd=PROJECT_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    run.update_status(pid=proc.pid, pid_start=process_start_time(proc.pid))
    return proc.pid


def retrain(source: Run, name: str = "", data: str | Path | None = None) -> Run:
    """Start a bottleneck run with `source`'s settings on the dataset as it is now (after label fixes).

    `data` replaces the dataset (e.g. the editable copy of the read-only demo the fixes were made in).
    Cached features make it fast: only new or changed image content goes through the backbone.
    """
    config = replace(source.config(), mode="bottleneck", from_run=None, **({"data": str(data)} if data else {}))
    run = create_run(config, name=name or f"{RETRAIN_PREFIX}{source.id}")
    start_run_process(run)
    return run
