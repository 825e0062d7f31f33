"""A training is a run folder. `Run` is the only code that knows its files and their formats:

    config.json      everything needed to reproduce it (settings, name, library versions; a recipe story's link)
    status.json      a `RunStatus`: state, phase, progress, error, timings — rewritten atomically
    history.csv      one line per epoch, appended and fsynced as each epoch ends
    split.json       which image was in which split, and what the scan skipped
    predictions.csv  validation/test predictions (for the grid)
    metrics.json     final metrics; written last, so its presence means "results are on disk"
    labels.json      class names, in the model's output order
    head.weights.h5  the trained dense head (bottleneck and finetune runs)
    head_bottleneck.weights.h5   a finetune run's head before fine-tuning
    model.keras      end-to-end model (raw RGB in, class probabilities out)
    model.tflite, model-int8.tflite, model.onnx, model.html   conversions, when exported (core.export)
    exports.json     each conversion's check: sizes, agreement with model.keras, accuracy on the validation photos
    log.txt          the executing process's output
    STOP             present = stop requested

Pages poll these files every second, so every reader here is cheap and tolerant of a file being replaced, and no
reader depends on a write succeeding (a full disk must not take the pages down).
"""
from __future__ import annotations

import errno
import json
import os
import socket
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
from core.errors import FewShotError
from core.runs.process import process_alive
from core.runs.status import FIELD_NAMES, RunStatus

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "stage", "lr", "seconds"]
TEXT_COLUMNS = ("path", "split", "label", "predicted", "content")  # a class named "1" or "01" stays text


TRACEBACK_START = ("Traceback (most recent call last):", "During handling of the above exception",
                   "The above exception was the direct cause")


def without_tracebacks(text: str) -> str:
    """`text` with each Python traceback (its header, its indented frames and the exception line that ends it)
    replaced by one line saying the details stay in log.txt on the server."""
    out: list[str] = []
    in_traceback = False
    for line in text.splitlines():
        if line.startswith(TRACEBACK_START):
            if not in_traceback and (not out or out[-1] != TRACEBACK_NOTE):
                out.append(TRACEBACK_NOTE)
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith((" ", "\t")) or not line.strip():
                continue  # a frame, its code line, its ^^^^ markers
            in_traceback = False  # the exception line ("ValueError: …") ends it, and may hold paths too
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


TRACEBACK_NOTE = "[technical details (a Python traceback) are in the run's log.txt on the server]"


class DamagedRunError(FewShotError):
    """A run whose files cannot give what is asked of them (a truncated or overwritten config.json, …)."""


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
    TFLITE_INT8 = "model-int8.tflite"
    ONNX = "model.onnx"
    WEB = "model.html"  # the web export: a page with the model and its runtime inside
    EXPORTS = "exports.json"
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
    def _read(self, name: str, kind: type) -> Any:
        """A JSON run file as `kind` (dict, list), or None if missing, damaged or of another type."""
        data = fsutil.read_json(self.file(name), None)
        return data if isinstance(data, kind) else None

    def config_dict(self) -> dict:
        """config.json as a dict whose `train` is a dict; {} (with an empty `train`) when it is damaged."""
        data = dict(self._read(self.CONFIG, dict) or {})
        if not isinstance(data.get("train"), dict):
            data["train"] = {}
        if not isinstance(data.get("created_at"), (int, float)):
            data.pop("created_at", None)
        if not isinstance(data.get("name", ""), str):
            data["name"] = str(data["name"])
        return data

    def config(self) -> TrainConfig:
        """The run's settings; raises DamagedRunError when config.json cannot give them."""
        try:
            return TrainConfig.from_dict(self.config_dict()["train"])
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise DamagedRunError(f"run {self.id}: its config.json is damaged ({exc}), so its settings cannot be "
                                  f"used. Delete the run or start a new training.") from None

    def name(self) -> str:
        return self.config_dict().get("name", "") or ""

    def story(self) -> dict | None:
        """{"id", "stage", "index"} when the run is one stage of a recipe story (core.story), else None."""
        story = self.config_dict().get("story")
        return story if isinstance(story, dict) and story.get("id") else None

    def read_status(self) -> RunStatus:
        """status.json as it is on disk, without the liveness check."""
        data = self._read(self.STATUS, dict)
        if data is None:
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
        return self.mark_process_lost(status)

    def mark_process_lost(self, status: RunStatus | None = None, who: str = "The training process") -> RunStatus:
        """Record that the process executing this run is gone: the run failed (it was training), or its model file
        failed (it was writing model.keras after the results). What the dead process was writing is removed. Called
        by the liveness check here and by an executor that learns of the death another way (a Ray actor's)."""
        status = status or self.read_status()
        if not status.busy:
            return status
        if status.active:
            changes: dict[str, Any] = dict(state="failed", phase="failed", finished_at=time.time(), error=(
                f"{who} ended unexpectedly (it was killed or crashed). Nothing of this run was saved as a model."))
        else:
            changes = dict(model_file="failed", model_error=(
                f"{who} ended before it wrote the model file; the results are kept. Write it again from the "
                f"Predictions page."))
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
        if status.host and status.host != socket.gethostname():
            return False  # its process is on another machine: the executor there (Ray) records its death
        return status.busy and bool(status.pid) and not process_alive(status.pid, status.pid_start)

    def _read_history(self) -> pd.DataFrame | None:
        """history.csv with its columns, None when it is damaged (not UTF-8, not our columns)."""
        path = self.file(self.HISTORY)
        try:
            if not path.exists() or path.stat().st_size == 0:
                return pd.DataFrame(columns=HISTORY_COLUMNS)
            frame = pd.read_csv(path, encoding="utf-8")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError):  # ValueError: not UTF-8
            return None
        if not set(HISTORY_COLUMNS) - {"lr", "seconds"} <= set(frame.columns):
            return None
        for column in HISTORY_COLUMNS:
            if column == "stage":
                frame[column] = frame[column].astype(str) if column in frame else ""
            else:  # a torn last line leaves text in a number column: not a number, not a crash
                frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
        return frame

    def history(self) -> pd.DataFrame:
        frame = self._read_history()
        return frame if frame is not None else pd.DataFrame(columns=HISTORY_COLUMNS)

    def metrics(self) -> dict | None:
        return self._read(self.METRICS, dict)

    def labels(self) -> list[str]:
        """Class names, in the model's output order: always text."""
        return [str(name) for name in self._read(self.LABELS, list) or []]

    def split(self) -> dict | None:
        return self._read(self.SPLIT, dict)

    # The files a reader checks, with the type each must hold.
    _JSON_KINDS = ((CONFIG, dict), (STATUS, dict), (METRICS, dict), (LABELS, list), (SPLIT, dict))

    def damaged(self) -> list[str]:
        """The run's files that are there but cannot be read as what they should hold (truncated, not UTF-8, JSON
        of another type): the pages show what is readable and say which files are not."""
        out = [name for name, kind in self._JSON_KINDS if self.file(name).exists() and self._read(name, kind) is None]
        labels = self._read(self.LABELS, list)
        if labels is not None and not all(isinstance(name, str) for name in labels):
            out.append(self.LABELS)  # class names are written as text: numbers here were put by something else
        if self._read_history() is None:
            out.append(self.HISTORY)
        return out

    def split_paths(self, split: str) -> list[Path]:
        """The files of one split ("train", "val", "test") as split.json lists them (some may be gone since)."""
        items = (self.split() or {}).get("items") or []
        return [Path(it["path"]) for it in items if it.get("split") == split]

    def exports(self) -> dict[str, dict]:
        """exports.json: {format: its check} for each conversion made (core.export.check)."""
        data = fsutil.read_json(self.file(self.EXPORTS), {})
        return data if isinstance(data, dict) else {}

    def conversion_is_current(self, name: str) -> bool:
        """The converted file `name` (model.onnx, model.tflite, …) exists and is not older than model.keras (a
        retrained run makes it stale)."""
        path, model = self.file(name), self.model_path
        return path.exists() and model.exists() and path.stat().st_mtime_ns >= model.stat().st_mtime_ns

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

    def log_tail(self, n_chars: int = 4000, tracebacks: bool = True) -> str:
        """The end of log.txt. `tracebacks=False` (what pages show): Python tracebacks, with the server's paths
        and code, are replaced by one line; the run's error says what went wrong in words."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - n_chars))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text if tracebacks else without_tracebacks(text)

    # -------------------------------------------------------------------------------------- writing
    def write_config(self, config: TrainConfig, name: str, versions: dict[str, str], command: str,
                     story: dict | None = None) -> None:
        data = {"train": config.to_dict(), "name": name, "versions": versions, "created_at": time.time(),
                "command": command}
        if story:
            data["story"] = story
        fsutil.atomic_write_json(self.file(self.CONFIG), data)

    def update_status(self, **changes: Any) -> RunStatus:
        unknown = set(changes) - FIELD_NAMES
        if unknown:
            raise TypeError(f"not RunStatus fields: {sorted(unknown)}")
        data = fsutil.read_json(self.file(self.STATUS), {}) or {}
        data.update(changes)
        data["updated_at"] = time.time()
        try:
            fsutil.atomic_write_json(self.file(self.STATUS), data)
        except OSError as exc:
            # A full disk: a run's end must still be recorded (the warm worker outlives the run, so no liveness
            # check would ever fail it), and status.json is small enough to rewrite in the blocks it holds.
            text = json.dumps(data, indent=2, default=str) + "\n"
            if exc.errno != errno.ENOSPC or not fsutil.overwrite_in_place(self.file(self.STATUS), text.encode()):
                raise
        return RunStatus.from_dict(data)

    def request_stop(self) -> None:
        """Ask the run to stop; it ends within a batch, saving nothing half-trained over a good model."""
        self.file(self.STOP).touch()
        status = self.read_status()
        here = not status.host or status.host == socket.gethostname()
        if status.state == "queued" and here and not process_alive(status.pid, status.pid_start):
            self.update_status(state="stopped", phase="stopped", finished_at=time.time())

    def stop_requested(self) -> bool:
        return self.file(self.STOP).exists()

    def append_history(self, *rows: dict) -> None:
        """Append epochs' rows to history.csv (one write and one fsync for all of them)."""
        path = self.file(self.HISTORY)
        lines = [] if path.exists() else [",".join(HISTORY_COLUMNS)]
        lines += [",".join("" if row.get(c) is None else str(row.get(c)) for c in HISTORY_COLUMNS) for row in rows]
        fsutil.append_lines(path, lines)

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

    def record_export(self, fmt: str, check: dict) -> None:
        fsutil.atomic_write_json(self.file(self.EXPORTS), {**self.exports(), fmt: check})

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path that replaces the run's file `name` in one rename when the block succeeds (for writers
        with their own format: Keras weights and models). The extension is kept, as Keras insists on it."""
        suffix = "".join(Path(name).suffixes)
        with fsutil.atomic_path(self.file(name), suffix=suffix) as tmp:
            yield tmp

    def remove_temp_files(self) -> None:
        fsutil.remove_temp_files(self.path)
