"""A training is a run folder. `Run` is the only code that knows its files and their formats:

    config.json      everything needed to reproduce it (settings, name, library versions)
    status.json      a `RunStatus`: state, phase, progress, error, timings — rewritten atomically
    history.csv      one line per epoch, appended and fsynced as each epoch ends
    split.json       which image was in which split, and what the scan skipped
    predictions.csv  validation/test predictions (for the grid)
    metrics.json     final metrics; written last, so its presence means "results are on disk"
    labels.json      class names, in the model's output order
    head.weights.h5  the trained dense head (bottleneck and finetune runs)
    head_bottleneck.weights.h5   a finetune run's head before fine-tuning
    model.keras      end-to-end model (raw RGB in, class probabilities out); model.tflite when exported
    log.txt          the executing process's output
    STOP             present = stop requested

Pages poll these files every second, so every reader here is cheap and tolerant of a file being replaced, and no
reader depends on a write succeeding (a full disk must not take the pages down).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core import fsutil
from core.config import TrainConfig
from core.runs.process import process_alive
from core.runs.status import FIELD_NAMES, RunStatus

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "stage", "lr", "seconds"]
TEXT_COLUMNS = ("path", "split", "label", "predicted", "content")  # a class named "1" or "01" stays text


@dataclass(frozen=True)
class Run:
    path: Path

    CONFIG = "config.json"
    STATUS = "status.json"
    HISTORY = "history.csv"
    SPLIT = "split.json"
    PREDICTIONS = "predictions.csv"
    METRICS = "metrics.json"
    CROSSVAL = "crossval_predictions.csv"  # out-of-fold probabilities of the cross-validated head (small datasets)
    LABELS = "labels.json"
    HEAD = "head.weights.h5"
    BOTTLENECK_HEAD = "head_bottleneck.weights.h5"
    MODEL = "model.keras"
    TFLITE = "model.tflite"
    LOG = "log.txt"
    STOP = "STOP"

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # Paths other code hands to writers and readers of its own (Keras, downloads, the log).
    @property
    def model_path(self) -> Path:
        return self.file(self.MODEL)

    @property
    def tflite_path(self) -> Path:
        return self.file(self.TFLITE)

    @property
    def head_path(self) -> Path:
        return self.file(self.HEAD)

    @property
    def bottleneck_head_path(self) -> Path:
        return self.file(self.BOTTLENECK_HEAD)

    @property
    def log_path(self) -> Path:
        return self.file(self.LOG)

    # -------------------------------------------------------------------------------------- reading
    def config_dict(self) -> dict:
        return fsutil.read_json(self.file(self.CONFIG), {}) or {}

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config_dict()["train"])

    def name(self) -> str:
        return self.config_dict().get("name", "") or ""

    def read_status(self) -> RunStatus:
        """status.json as it is on disk, without the liveness check."""
        data = fsutil.read_json(self.file(self.STATUS), None)
        if not isinstance(data, dict):
            return RunStatus(state="failed", phase="failed", error="status.json is missing or damaged")
        return RunStatus.from_dict(data)

    def status(self) -> RunStatus:
        """The run's status. A process that died without saying so leaves the run failed (it was training) or its
        model file failed (it was writing model.keras after the run was done); either is recorded when it can be:
        on a full disk the status is still answered, only not saved."""
        status = self.read_status()
        if not self._orphaned(status):
            return status
        status = self.read_status()  # the process may have finished between our read and the liveness check
        if not self._orphaned(status):
            return status
        if status.active:
            changes: dict[str, Any] = dict(state="failed", phase="failed", finished_at=time.time(), error=(
                "The training process ended unexpectedly (it was killed or crashed). Nothing of this run was saved "
                "as a model."))
        else:
            changes = dict(model_file="failed", model_error=(
                "The training process ended before it wrote the model file; the results are kept. Write it again "
                "from the Predictions page."))
        try:
            status = self.update_status(**changes)
            fsutil.remove_temp_files(self.path)  # what the dead process was writing, never renamed in
        except OSError as exc:  # a full or read-only disk: say what happened, record it next time
            print(f"warning: could not record the end of run {self.id}: {exc}", file=sys.stderr)
            status = RunStatus.from_dict({**status.to_dict(), **changes})
        return status

    @staticmethod
    def _orphaned(status: RunStatus) -> bool:
        """The run's process should still be at work on it (training, or writing its model file) but is gone."""
        return status.busy and bool(status.pid) and not process_alive(status.pid, status.pid_start)

    def history(self) -> pd.DataFrame:
        path = self.file(self.HISTORY)
        if not path.exists() or path.stat().st_size == 0:
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
            return pd.DataFrame(columns=HISTORY_COLUMNS)

    def metrics(self) -> dict | None:
        return fsutil.read_json(self.file(self.METRICS), None)

    def labels(self) -> list[str]:
        return fsutil.read_json(self.file(self.LABELS), []) or []

    def split(self) -> dict | None:
        return fsutil.read_json(self.file(self.SPLIT), None)

    def predictions(self) -> pd.DataFrame | None:
        """predictions.csv with its names and labels as text and `correct` recomputed from them; None if absent.
        Raises OSError/ValueError when the file cannot be parsed."""
        path = self.file(self.PREDICTIONS)
        if not path.exists():
            return None
        frame = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                            na_values={c: [] for c in TEXT_COLUMNS})
        frame["correct"] = frame["label"] == frame["predicted"]
        return frame

    def has_model(self) -> bool:
        """model.keras is on disk (it may follow the run's results by a second or so: see `model_file_state`)."""
        return self.model_path.exists()

    def has_results(self) -> bool:
        """The run finished with results to look at: metrics.json is written last, after predictions and weights."""
        return self.file(self.METRICS).exists()

    def has_head(self) -> bool:
        return self.head_path.exists()

    def was_finetuned(self) -> bool:
        """Its backbone was changed by training: the frozen one would not match its head."""
        return self.bottleneck_head_path.exists()

    def model_file_state(self) -> str:
        """'ready', 'writing' (assembled right after the run is done), 'failed' (see `model_error`) or 'none' (no
        model: the run failed, or the file was deleted)."""
        if self.has_model():
            return "ready"
        state = self.status().model_file
        return state if state in ("writing", "failed") else "none"

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - n_chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -------------------------------------------------------------------------------------- writing
    def write_config(self, config: TrainConfig, name: str, versions: dict[str, str], command: str) -> None:
        fsutil.atomic_write_json(self.file(self.CONFIG), {
            "train": config.to_dict(), "name": name, "versions": versions, "created_at": time.time(),
            "command": command})

    def update_status(self, **changes: Any) -> RunStatus:
        unknown = set(changes) - FIELD_NAMES
        if unknown:
            raise TypeError(f"not RunStatus fields: {sorted(unknown)}")
        data = fsutil.read_json(self.file(self.STATUS), {}) or {}
        data.update(changes)
        data["updated_at"] = time.time()
        fsutil.atomic_write_json(self.file(self.STATUS), data)
        return RunStatus.from_dict(data)

    def request_stop(self) -> None:
        """Ask the run to stop; it ends within a batch, saving nothing half-trained over a good model."""
        self.file(self.STOP).touch()
        status = self.read_status()
        if status.state == "queued" and not process_alive(status.pid, status.pid_start):
            self.update_status(state="stopped", phase="stopped", finished_at=time.time())

    def stop_requested(self) -> bool:
        return self.file(self.STOP).exists()

    def append_history(self, row: dict) -> None:
        path = self.file(self.HISTORY)
        if not path.exists():
            fsutil.append_line(path, ",".join(HISTORY_COLUMNS))
        fsutil.append_line(path, ",".join("" if row.get(c) is None else str(row.get(c)) for c in HISTORY_COLUMNS))

    def write_split(self, split: dict) -> None:
        fsutil.atomic_write_json(self.file(self.SPLIT), split)

    def write_predictions(self, frame: pd.DataFrame) -> None:
        with fsutil.atomic_path(self.file(self.PREDICTIONS)) as tmp:
            frame.to_csv(tmp, index=False)

    def write_oof(self, paths: list[str], labels: list[str], probs, classes: list[str]) -> None:
        """The cross-validation's out-of-fold probabilities: each photo judged by a head that never saw it."""
        frame = pd.DataFrame({"path": paths, "label": labels})
        frame = pd.concat([frame, pd.DataFrame(probs[:, :len(classes)], columns=[f"p_{c}" for c in classes])],
                          axis=1)
        with fsutil.atomic_path(self.file(self.CROSSVAL)) as tmp:
            frame.to_csv(tmp, index=False)

    def oof(self) -> pd.DataFrame | None:
        """crossval_predictions.csv (path, label, p_<class>…), None if this run has none."""
        path = self.file(self.CROSSVAL)
        if not path.exists():
            return None
        return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                           na_values={c: [] for c in TEXT_COLUMNS})

    def write_labels(self, classes: list[str]) -> None:
        fsutil.atomic_write_json(self.file(self.LABELS), classes)

    def write_metrics(self, metrics: dict) -> None:
        """Written last by a training: a run folder with metrics.json has all its results."""
        fsutil.atomic_write_json(self.file(self.METRICS), metrics)

    def update_metrics(self, **changes: Any) -> dict:
        metrics = {**(self.metrics() or {}), **changes}
        self.write_metrics(metrics)
        return metrics

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path that replaces the run's file `name` in one rename when the block succeeds (for writers
        with their own format: Keras weights and models). The extension is kept, as Keras insists on it."""
        suffix = "".join(Path(name).suffixes)
        with fsutil.atomic_path(self.file(name), suffix=suffix) as tmp:
            yield tmp

    def remove_temp_files(self) -> None:
        fsutil.remove_temp_files(self.path)
