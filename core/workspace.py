"""Where things live on disk: the workspace (datasets, runs, feature cache) and the built-in demo dataset.

The workspace is a plain folder (env `FEWSHOT_WORKSPACE`, default `./workspace` beside the app). Everything the
app knows is in it, which is why a browser reload or a server restart loses nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import FewShotError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_DATASET = PROJECT_ROOT / "data" / "demo"


class PathError(FewShotError):
    """A path the app refuses to read or write (outside the allowed roots, or an invalid name)."""


def workspace_root() -> Path:
    root = Path(os.environ.get("FEWSHOT_WORKSPACE", PROJECT_ROOT / "workspace")).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _subdir(name: str) -> Path:
    path = workspace_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    return _subdir("datasets")


def runs_dir() -> Path:
    return _subdir("runs")


def features_dir() -> Path:
    return _subdir("cache/features")


def activations_dir() -> Path:
    """Fine-tuning's cache: activations of the frozen lower part of a backbone (core.activations)."""
    return _subdir("cache/activations")


def engine_dir() -> Path:
    """The warm engine's queue, its state file and its log."""
    return _subdir("engine")


def imports_dir() -> Path:
    """Zips given on the command line are unpacked here."""
    return _subdir("cache/imports")


def allowed_roots() -> list[Path]:
    """Folders the dataset picker may read: the workspace's datasets and the built-in demo."""
    return [datasets_dir(), DEMO_DATASET.resolve()]


def ensure_allowed(path: str | Path) -> Path:
    """Resolve `path` (symlinks included) and refuse it unless it lies inside an allowed root."""
    resolved = Path(path).expanduser().resolve()
    for root in allowed_roots():
        if resolved == root or root in resolved.parents:
            return resolved
    raise PathError(f"{path} is outside the folders this app may read ({', '.join(map(str, allowed_roots()))}).")


def is_demo(path: str | Path) -> bool:
    """The built-in demo dataset, or a folder inside it."""
    resolved, demo = Path(path).expanduser().resolve(), DEMO_DATASET.resolve()
    return resolved == demo or demo in resolved.parents


def ensure_writable(dataset: str | Path) -> Path:
    """The resolved dataset folder, or PathError saying why the app may not change it.

    The one rule for every change the app makes to a dataset (new classes, uploads, labelling): only a dataset of
    the workspace, i.e. a folder directly in datasets/ (not one of its classes); the built-in demo stays read-only.
    """
    root = Path(dataset).expanduser().resolve()
    if is_demo(root):
        raise PathError("The built-in demo dataset is read-only. Make an editable copy of it in the workspace "
                        "first (the Label page has a button for it).")
    if root.parent != datasets_dir():
        raise PathError(f"{root} is not a dataset in the workspace ({datasets_dir()}); only those can be "
                        f"changed here.")
    if not root.is_dir():
        raise PathError(f"{root} does not exist (any more).")
    return root


def is_editable(dataset: str | Path) -> bool:
    """Whether `ensure_writable` accepts the dataset (pages offer changes, or an editable copy, by it)."""
    try:
        ensure_writable(dataset)
    except PathError:
        return False
    return True
