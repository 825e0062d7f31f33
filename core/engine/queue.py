"""The warm worker's queue: one small file per submitted run, oldest first. The run folder stays the contract;
an entry only says "the worker should execute this run", so a lost entry costs a run that stays queued (and can
be stopped), never a run half-done."""
from __future__ import annotations

import time
from pathlib import Path

from core import fsutil
from core.runs import Run
from core.workspace import engine_dir


def queue_dir() -> Path:
    path = engine_dir() / "queue"
    path.mkdir(parents=True, exist_ok=True)
    return path


def enqueue(run: Run, folder: Path | None = None) -> Path:
    """Queue the run in `folder` (default: the warm worker's queue; the Ray dispatcher has its own)."""
    entry = (folder or queue_dir()) / f"{time.time_ns():020d}-{run.id}.json"
    fsutil.atomic_write_json(entry, {"run": str(run.path)})
    return entry


def entries(folder: Path | None = None) -> list[Path]:
    """Waiting entries, oldest first (the name starts with the submission time). A directory listing: cheap.
    `folder` (the worker's own queue) is listed as it is, never created."""
    try:
        folder = folder or queue_dir()
        return sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except OSError:
        return []


def run_of(entry: Path) -> Run | None:
    data = fsutil.read_json(entry, None)
    return Run(Path(data["run"])) if isinstance(data, dict) and data.get("run") else None


def position(run: Run, folder: Path | None = None) -> int | None:
    """1 for the next run the worker takes, None when the run is not waiting in the queue."""
    for index, entry in enumerate(entries(folder), start=1):
        if entry.name.endswith(f"-{run.id}.json"):
            return index
    return None


def remove(entry: Path) -> None:
    entry.unlink(missing_ok=True)
