"""A training is a run folder; this module creates, reads, starts and stops them.

    config.json      everything needed to reproduce it (settings, library versions)
    status.json      state, phase, progress, error — rewritten atomically
    history.csv      one line per epoch, appended and fsynced as each epoch ends
    metrics.json     final metrics
    predictions.csv  validation/test predictions (for the grid)
    model.keras      end-to-end model (raw RGB in, class probabilities out); labels.json beside it
    log.txt          the run process's output
    STOP             present = stop requested

Pages poll these files every second, so every reader here is cheap and tolerant of a file being replaced.
"""
from __future__ import annotations

from core.errors import FewShotError
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from core import fsutil
from core.config import TrainConfig
from core.workspace import PROJECT_ROOT, runs_dir

STATES = ("queued", "running", "done", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")
RETRAIN_PREFIX = "retrain of "  # a retrain's default name: "retrain of <source run id>"
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "stage", "lr", "seconds"]


class RunError(FewShotError):
    """A run that cannot be created, found or started."""


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a recycled pid is not mistaken for our run."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start_time: str | None = None) -> bool:
    if not pid:
        return False
    try:
        # If the run is our child (the app started it), reap it: a dead child stays a zombie until its parent
        # waits for it, and a zombie still answers kill(pid, 0).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_time is not None and Path("/proc").exists():
        return _process_start_time(pid) == start_time and _process_state(pid) != "Z"
    return True


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _orphaned(status: dict) -> bool:
    """The run's process should still be at work on it (training, or writing its model file) but is gone."""
    busy = status.get("state") in ACTIVE_STATES or status.get("model_file") == "writing"
    return busy and bool(status.get("pid")) and not process_alive(status["pid"], status.get("pid_start"))


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # -------------------------------------------------------------------------------------- reading
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(fsutil.read_json(self.file("config.json"), {})["train"])

    def config_dict(self) -> dict:
        return fsutil.read_json(self.file("config.json"), {}) or {}

    def status(self) -> dict:
        """The run's status. A process that died without saying so leaves the run failed (it was training) or its
        model file failed (it was writing model.keras after the run was done); either is recorded."""
        status = fsutil.read_json(self.file("status.json"), None) or {"state": "failed", "error": "status missing"}
        if _orphaned(status):
            # Re-read first: the process may have finished between our read and the liveness check.
            status = fsutil.read_json(self.file("status.json"), status)
            if _orphaned(status):
                if status.get("state") in ACTIVE_STATES:
                    status = self.update_status(state="failed", finished_at=time.time(),
                                                error="The training process ended unexpectedly (it was killed or "
                                                      "crashed). Nothing of this run was saved as a model.")
                else:
                    status = self.update_status(model_file="failed", model_error=(
                        "The training process ended before it wrote the model file; the results are kept. "
                        "Write it again from the Predictions page."))
                fsutil.remove_temp_files(self.path)  # what the dead process was writing, never renamed in
        return status

    def history(self) -> pd.DataFrame:
        path = self.file("history.csv")
        if not path.exists() or path.stat().st_size == 0:
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
            return pd.DataFrame(columns=HISTORY_COLUMNS)

    def metrics(self) -> dict | None:
        return fsutil.read_json(self.file("metrics.json"), None)

    def labels(self) -> list[str]:
        return fsutil.read_json(self.file("labels.json"), []) or []

    def predictions(self) -> pd.DataFrame | None:
        path = self.file("predictions.csv")
        return pd.read_csv(path) if path.exists() else None

    def has_model(self) -> bool:
        """model.keras is on disk (it may follow the run's results by a second or so: see `model_file_state`)."""
        return self.file("model.keras").exists()

    def has_results(self) -> bool:
        """The run finished with results to look at: metrics.json is written last, after predictions and weights."""
        return self.file("metrics.json").exists()

    def model_file_state(self) -> str:
        """'ready', 'writing' (assembled right after the run is done), 'failed' (see status 'model_error') or
        'none' (no model: the run failed, or the file was deleted)."""
        if self.has_model():
            return "ready"
        state = self.status().get("model_file")
        return state if state in ("writing", "failed") else "none"

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            with open(self.file("log.txt"), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - n_chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -------------------------------------------------------------------------------------- writing
    def update_status(self, **changes: object) -> dict:
        status = fsutil.read_json(self.file("status.json"), {}) or {}
        status.update(changes)
        status["updated_at"] = time.time()
        fsutil.atomic_write_json(self.file("status.json"), status)
        return status

    def request_stop(self) -> None:
        """Ask the run to stop; it ends within a batch, saving nothing half-trained over a good model."""
        self.file("STOP").touch()
        status = fsutil.read_json(self.file("status.json"), {}) or {}
        if status.get("state") == "queued" and not process_alive(status.get("pid"), status.get("pid_start")):
            self.update_status(state="stopped", finished_at=time.time())

    def stop_requested(self) -> bool:
        return self.file("STOP").exists()

    def append_history(self, row: dict) -> None:
        path = self.file("history.csv")
        if not path.exists():
            fsutil.append_line(path, ",".join(HISTORY_COLUMNS))
        fsutil.append_line(path, ",".join("" if row.get(c) is None else str(row.get(c)) for c in HISTORY_COLUMNS))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "pillow", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def new_run_id(mode: str) -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{mode}-{secrets.token_hex(2)}"


def create_run(config: TrainConfig, out: str | Path | None = None, name: str = "") -> Run:
    """Make the run folder with its config and a 'queued' status. `out` defaults to a new folder under runs/."""
    path = Path(out) if out else runs_dir() / new_run_id(config.mode)
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path} already exists and is not empty; choose another --out folder.")
    path.mkdir(parents=True, exist_ok=True)
    run = Run(path.resolve())
    fsutil.atomic_write_json(run.file("config.json"), {
        "train": config.to_dict(),
        "name": name,
        "versions": library_versions(),
        "created_at": time.time(),
        "command": "python -m core run " + str(run.path),
    })
    fsutil.atomic_write_json(run.file("status.json"), {"state": "queued", "phase": "queued", "progress": 0.0,
                                                        "created_at": time.time(), "updated_at": time.time()})
    return run


def start_run_process(run: Run) -> int:
    """Execute the run in its own OS process (its own session: a closed browser or a restarted server leaves it
    running). Returns the pid; the process records itself in status.json."""
    log = open(run.file("log.txt"), "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "core", "run", str(run.path)], cwd=PROJECT_ROOT,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    log.close()
    run.update_status(pid=proc.pid, pid_start=_process_start_time(proc.pid))
    return proc.pid


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Runs newest first. Cheap: a directory listing, no file reads."""
    base = Path(root) if root else runs_dir()
    if not base.exists():
        return []
    runs = [Run(p) for p in base.iterdir() if p.is_dir() and (p / "config.json").exists()]
    return sorted(runs, key=lambda r: r.id, reverse=True)


def runs_table(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run for the Runs page: the few small JSON files of each, nothing heavy."""
    rows = []
    for run in list_runs(root):
        cfg = run.config_dict()
        train = cfg.get("train", {})
        status = run.status()
        metrics = run.metrics() or {}
        started = status.get("started_at") or cfg.get("created_at")
        finished = status.get("finished_at") or (time.time() if status.get("state") in ACTIVE_STATES else None)
        rows.append({
            "run": run.id,
            "name": cfg.get("name", ""),
            "dataset": Path(train.get("data", "")).name,
            "mode": train.get("mode"),
            "backbone": "—" if train.get("mode") == "scratch" else train.get("backbone"),
            "val_accuracy": metrics.get("val_accuracy"),
            "test_accuracy": metrics.get("test_accuracy"),
            "seconds": round(finished - started, 1) if started and finished else None,
            "status": status.get("state"),
            "date": datetime.fromtimestamp(cfg.get("created_at", 0)).strftime("%Y-%m-%d %H:%M"),
        })
    return pd.DataFrame(rows, columns=["run", "name", "dataset", "mode", "backbone", "val_accuracy",
                                       "test_accuracy", "seconds", "status", "date"])


def active_runs(root: str | Path | None = None) -> list[Run]:
    return [run for run in list_runs(root) if run.status().get("state") in ACTIVE_STATES]


def get_run(run_id_or_path: str | Path, root: str | Path | None = None) -> Run:
    path = Path(run_id_or_path)
    if not path.is_absolute() and not path.exists():
        path = (Path(root) if root else runs_dir()) / str(run_id_or_path)
    if not (path / "config.json").exists():
        raise RunError(f"{run_id_or_path} is not a run folder (no config.json).")
    return Run(path.resolve())


def delete_run(run: Run) -> None:
    if run.status().get("state") in ACTIVE_STATES:
        raise RunError(f"run {run.id} is still {run.status()['state']}: stop it before deleting it.")
    shutil.rmtree(run.path)


def retrain(source: Run, name: str = "", data: str | None = None) -> Run:
    """Start a bottleneck run with `source`'s settings on the dataset as it is now (after label fixes).

    `data` replaces the dataset (e.g. the editable copy of the read-only demo the fixes were made in).
    Cached features make it fast: only new or changed image content goes through the backbone.
    """
    from dataclasses import replace

    config = replace(source.config(), mode="bottleneck", from_run=None, **({"data": str(data)} if data else {}))
    run = create_run(config, name=name or f"{RETRAIN_PREFIX}{source.id}")
    start_run_process(run)
    return run


def retrained_from(name: str | None) -> str | None:
    """The source run's id when `name` is a retrain's default name ("retrain of <id>"), else None."""
    if not name or not name.startswith(RETRAIN_PREFIX):
        return None
    return name.removeprefix(RETRAIN_PREFIX).strip() or None
