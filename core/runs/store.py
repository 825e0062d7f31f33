"""The runs folder: create, find, list and delete runs, and the table the Runs page shows."""
from __future__ import annotations

import functools
import platform
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.config import TrainConfig
from core.errors import FewShotError
from core.runs.folder import Run
from core.runs.process import process_start_time
from core.runs.status import ACTIVE_STATES
from core.workspace import runs_dir

RETRAIN_PREFIX = "retrain of "  # a retrain's default name: "retrain of <source run id>"


class RunError(FewShotError):
    """A run that cannot be created, found or started."""


@functools.lru_cache(maxsize=1)  # installed packages do not change under a running process; ~15-80 ms a lookup
def _library_versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "pillow", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return tuple(out.items())


def library_versions() -> dict[str, str]:
    return dict(_library_versions())


def new_run_id(mode: str) -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{mode}-{secrets.token_hex(2)}"


def create_run(config: TrainConfig, out: str | Path | None = None, name: str = "", pid: int | None = None,
               executor: str | None = None, story: dict | None = None) -> Run:
    """Make the run folder with its config and a 'queued' status. `out` defaults to a new folder under runs/.
    Its creation time is the click every shown duration is measured from.

    `pid`: the process that will execute it, when it is already known (the command line executes in-process).
    Recorded in the first status, so a kill at any moment after creation leaves the run failed, not 'queued'
    forever. `story` links it to the other stages of a recipe story (core.story)."""
    path = Path(out) if out else runs_dir() / new_run_id(config.mode)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RunError(f"{path} cannot be a run folder: {blocking} is a file, not a folder; choose another --out.")
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path} already exists and is not empty; choose another --out folder.")
    path.mkdir(parents=True, exist_ok=True)
    run = Run(path.resolve())
    run.write_config(config, name, library_versions(), command="python -m core run " + str(run.path), story=story)
    now = time.time()
    process = dict(pid=pid, pid_start=process_start_time(pid), executor=executor) if pid else {}
    run.update_status(state="queued", phase="queued", progress=0.0, created_at=now, **process)
    return run


def check_finetune_source(source_path: str | Path, config: TrainConfig, classes: list[str]) -> Run:
    """The run a finetune starts from (`--from`), checked to have a head that fits: before any run folder is made
    (the command line) and again when the training loads it. Raises RunError saying what is wrong."""
    source = get_run(source_path)
    try:
        src_cfg = source.config()
    except FewShotError as exc:
        raise RunError(f"--from {source.id}: {exc}") from None
    if src_cfg.mode == "scratch":
        raise RunError(f"--from {source.id}: a scratch run has no head to fine-tune; use a bottleneck run.")
    if src_cfg.backbone != config.backbone:
        raise RunError(f"--from {source.id} used backbone {src_cfg.backbone}, not {config.backbone}.")
    if not source.has_head():
        raise RunError(f"--from {source.id} has no trained head ({Run.HEAD}): it did not finish "
                       f"({source.read_status().state}). Use a finished bottleneck run.")
    if source.labels() != list(classes):
        raise RunError(f"--from {source.id} was trained on classes {source.labels()}, this dataset has "
                       f"{list(classes)}. Train a bottleneck run on this dataset first.")
    return source


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Runs newest first. Cheap: a directory listing, no file reads."""
    base = Path(root) if root else runs_dir()
    if not base.exists():
        return []
    runs = [Run(p) for p in base.iterdir() if p.is_dir() and (p / Run.CONFIG).exists()]
    return sorted(runs, key=lambda r: r.id, reverse=True)


def runs_table(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run for the Runs page: the few small JSON files of each, nothing heavy."""
    from core.runs.titles import run_dataset_title, run_title  # titles imports this module

    rows = []
    now = time.time()
    for run in list_runs(root):
        cfg = run.config_dict()
        train = cfg["train"]
        status = run.status()
        metrics = run.metrics() or {}
        if status.created_at is None:  # older runs: the config's creation time is the click too
            status.created_at = cfg.get("created_at")
        seconds = status.seconds_from_click(now)
        rows.append({
            "run": run.id,
            "name": cfg.get("name", ""),
            "title": run_title(run),
            "dataset": run_dataset_title(run),
            "mode": train.get("mode"),
            "backbone": "—" if train.get("mode") == "scratch" else train.get("backbone"),
            "val_accuracy": metrics.get("val_accuracy"),
            "n_val": metrics.get("n_val"),
            "test_accuracy": metrics.get("test_accuracy"),
            "seconds": round(seconds, 1) if seconds is not None else None,
            "status": status.state,
            "date": datetime.fromtimestamp(cfg.get("created_at", 0)).strftime("%Y-%m-%d %H:%M"),
            "damaged": ", ".join(run.damaged()),
        })
    return pd.DataFrame(rows, columns=["run", "name", "title", "dataset", "mode", "backbone", "val_accuracy", "n_val",
                                       "test_accuracy", "seconds", "status", "date", "damaged"])


def active_runs(root: str | Path | None = None) -> list[Run]:
    return [run for run in list_runs(root) if run.status().active]


def get_run(run_id_or_path: str | Path, root: str | Path | None = None) -> Run:
    path = Path(run_id_or_path)
    if not path.is_absolute() and not path.exists():
        path = (Path(root) if root else runs_dir()) / str(run_id_or_path)
    if not (path / Run.CONFIG).exists():
        raise RunError(f"{run_id_or_path} is not a run folder (no {Run.CONFIG}).")
    return Run(path.resolve())


def delete_run(run: Run) -> None:
    state = run.status().state
    if state in ACTIVE_STATES:
        raise RunError(f"run {run.id} is still {state}: stop it before deleting it.")
    shutil.rmtree(run.path)


def retrained_from(name: str | None) -> str | None:
    """The source run's id when `name` is a retrain's default name ("retrain of <id>"), else None."""
    if not name or not name.startswith(RETRAIN_PREFIX):
        return None
    return name.removeprefix(RETRAIN_PREFIX).strip() or None
