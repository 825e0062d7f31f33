"""Editable copies: the built-in demo (or any read-only dataset) is changed only in a copy in the workspace.

A copy remembers where it came from (`.fewshot/origin.json`), so a run trained on the original can be fixed and
retrained on its copy: `working_copy` finds the copy, `counterpart` finds an image of the original in it.
"""
from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

from core import fsutil
from core.datasets import DatasetError
from core.datasets.importing import dataset_name, list_datasets, unique_path
from core.labeling.journal import locate
from core.labeling.places import META_DIR, ORIGIN_NAME, LabelingError, meta_dir
from core.workspace import DEMO_DATASET, PathError, datasets_dir, ensure_allowed, is_editable


def make_editable_copy(source: str | Path, name: str) -> Path:
    """Copy a dataset (e.g. the built-in demo) into the workspace under a new name; returns the copy's folder.

    The app's bookkeeping (`.fewshot/`) is not copied: the copy starts with an empty history.
    """
    try:
        source = ensure_allowed(source)  # never copy (read) a folder outside the workspace and the demo
    except PathError as exc:
        raise LabelingError(str(exc)) from None
    if not source.is_dir():
        raise LabelingError(f"{source} is not a folder.")
    try:
        target = unique_path(datasets_dir(), dataset_name(name))
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None
    staging = target.with_name(f".copy-{target.name}-{secrets.token_hex(3)}")
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(META_DIR), symlinks=True)
        # Remember the source: runs trained on it can then fix and retrain on this copy (`working_copy`).
        fsutil.atomic_write_json(meta_dir(staging) / ORIGIN_NAME, {"source": str(source), "copied_at": time.time()})
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise LabelingError(f"could not copy {source.name}: {exc.strerror or exc}") from None
    return target


def origin_of(dataset: str | Path) -> Path | None:
    """The dataset this one was copied from by `make_editable_copy`, if any."""
    data = fsutil.read_json(meta_dir(Path(dataset)) / ORIGIN_NAME, None)
    return Path(data["source"]) if isinstance(data, dict) and data.get("source") else None


def working_copy(dataset: str | Path, prefer: str | Path | None = None) -> Path | None:
    """Where changes to `dataset` can be made: itself when editable, else an editable copy of it in the workspace
    (`prefer` if it is one, else the newest), else None."""
    root = Path(dataset).resolve()
    if is_editable(root):
        return root
    copies = [p.resolve() for p in list_datasets() if origin_of(p) == root]
    if prefer is not None and Path(prefer).resolve() in copies:
        return Path(prefer).resolve()
    return copies[0] if copies else None


def counterpart(dataset: str | Path, path: str | Path, copy: str | Path) -> Path | None:
    """Where an image of `dataset` is now in its working copy `copy` (following the copy's journal)."""
    try:
        rel = Path(path).resolve().relative_to(Path(dataset).resolve())
    except ValueError:
        return None
    return locate(copy, Path(copy).resolve() / rel)


def dataset_title(dataset: str | Path) -> str:
    """A dataset's name as people tell them apart: the demo and its editable copy (often also called "demo")
    must not read the same."""
    path = Path(dataset)
    try:
        if path.resolve() == DEMO_DATASET.resolve():
            return "built-in demo"
        origin = origin_of(path)
    except OSError:
        return path.name
    if origin is None:
        return path.name
    source = "the built-in demo" if origin.resolve() == DEMO_DATASET.resolve() else origin.name
    return f"{path.name} (your copy of {source})"
