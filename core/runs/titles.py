"""Names people can read for runs: the name typed at Start, else "bottleneck · my-dataset · 14:02"; the dataset
it used; and the file names of its downloads."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from core.runs.folder import Run
from core.runs.store import RETRAIN_PREFIX, retrained_from


def run_dataset_title(run: Run) -> str:
    from core.labeling.copies import dataset_title  # lazy: core.labeling imports core.runs

    data = run.config_dict().get("train", {}).get("data")
    return dataset_title(data) if data else "?"


def default_title(run: Run) -> str:
    """"bottleneck · my-dataset · 14:02": what the run did, on what, when (the folder id says the same, unread)."""
    config = run.config_dict()
    train = config.get("train", {})
    when = datetime.fromtimestamp(config.get("created_at", 0))
    today = datetime.now().date() == when.date()
    stamp = f"{when:%H:%M}" if today else f"{when:%d %b %H:%M}"
    dataset = Path(train["data"]).name if train.get("data") else "?"
    return f"{train.get('mode', '?')} · {dataset} · {stamp}"


def run_title(run: Run) -> str:
    """The run's name as the user typed it, else a readable default; a retrain names its source readably."""
    name = run.name().strip()
    source_id = retrained_from(name)
    if source_id and source_id != run.id and (run.path.parent / source_id / Run.CONFIG).exists():
        return f"{RETRAIN_PREFIX}{run_title(Run(run.path.parent / source_id))}"
    return name or default_title(run)


def file_stem(run: Run) -> str:
    """The downloads' file name stem, after the run's title: "bottleneck-my-dataset-14-02"."""
    stem = re.sub(r"[^\w.-]+", "-", run_title(run), flags=re.UNICODE).strip("-.")
    return (stem or run.id)[:80]
