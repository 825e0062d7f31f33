"""Where things live on disk: the workspace (datasets, runs, feature cache) and the built-in demo dataset.

The workspace is a plain folder (env `FEWSHOT_WORKSPACE`, default `./workspace` beside the app). Everything the
app knows is in it, which is why a browser reload or a server restart loses nothing.
"""
from __future__ import annotations

from core.errors import FewShotError
import os
from pathlib import Path

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


def ensure_writable(path: str | Path) -> Path:
    """Like `ensure_allowed`, for changes: only datasets in the workspace; the built-in demo stays read-only."""
    resolved = ensure_allowed(path)
    if resolved == DEMO_DATASET.resolve() or DEMO_DATASET.resolve() in resolved.parents:
        raise PathError("The built-in demo dataset is read-only: make an editable copy of it first.")
    return resolved
