"""Where things are in a dataset being labelled, and whether the app may change it.

The label of an image is the folder it sits in: `root/<class>/`, or `root/<split folder>/<class>/` in the split
layout. Unlabelled images wait in `root/unlabelled/`; the app's bookkeeping (journal, trash, origin) lives in
`root/.fewshot/`, which is never a class.
"""
from __future__ import annotations

from pathlib import Path

from core.datasets import DatasetError, detect_layout, validate_class_name
from core.errors import FewShotError
from core.workspace import PathError, ensure_writable

META_DIR = ".fewshot"
JOURNAL_NAME = "journal.jsonl"
ORIGIN_NAME = "origin.json"
POOL_NAMES = ("unlabelled", "unlabeled")


class LabelingError(FewShotError):
    """A labelling change that cannot be made; the message says why and what to do."""


def meta_dir(root: Path) -> Path:
    return Path(root) / META_DIR


def journal_path(root: Path) -> Path:
    return meta_dir(root) / JOURNAL_NAME


def trash_dir(root: Path) -> Path:
    return meta_dir(root) / "trash"


def editable_root(dataset: str | Path) -> Path:
    """The resolved dataset folder, or LabelingError if the app may not change it (`workspace.ensure_writable`)."""
    try:
        return ensure_writable(dataset)
    except PathError as exc:
        raise LabelingError(str(exc)) from None


def pool_folder(root: Path) -> Path:
    """The unlabelled pool: an existing `unlabelled/` (or `unlabeled/`) folder, else where one would be."""
    for name in POOL_NAMES:
        if (root / name).is_dir():
            return root / name
    return root / POOL_NAMES[0]


def layout_of(root: Path) -> dict[str, Path] | None:
    """`detect_layout`, its DatasetError as a LabelingError."""
    try:
        return detect_layout(root)
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None


def rel(root: Path, path: Path) -> str:
    """`path` relative to the dataset, as the journal records it (POSIX)."""
    return path.relative_to(root).as_posix()


def inside(root: Path, path: str | Path, allow_meta: bool = False) -> Path:
    """`path` (absolute, or relative to root) as an absolute path inside root; refuses anything else."""
    path = Path(path)
    candidate = path if path.is_absolute() else root / path
    if candidate.is_symlink():
        raise LabelingError(f"{path} is a symbolic link; the app only moves real files.")
    resolved = candidate.resolve()
    if root not in resolved.parents:
        raise LabelingError(f"{path} is outside the dataset {root.name}; refusing to touch it.")
    if not allow_meta and META_DIR in resolved.relative_to(root).parts:
        raise LabelingError(f"{path} is in the app's own bookkeeping folder; use restore instead.")
    return resolved


def split_of(root: Path, layout: dict[str, Path] | None, path: Path) -> str:
    """The split folder an image sits in (split layout), 'train' otherwise."""
    if layout:
        first = path.relative_to(root).parts[0]
        for split, folder in layout.items():
            if folder.name == first:
                return split
    return "train"


def class_folder(root: Path, class_name: str, split: str = "train") -> Path:
    """Where images of `class_name` live: `root/<class>`, or `root/<split folder>/<class>` in the split layout."""
    name = validate_class_name(class_name)
    layout = layout_of(root)
    return (layout.get(split, layout["train"]) if layout else root) / name


def label_of(dataset: str | Path, path: str | Path) -> str | None:
    """The class an image is filed under (its folder), None for the pool, the trash or outside the dataset."""
    root = Path(dataset).resolve()
    try:
        parts = Path(path).resolve().relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] == META_DIR or parts[0].lower() in POOL_NAMES:
        return None
    layout = layout_of(root)
    if layout and parts[0] in {folder.name for folder in layout.values()}:
        return parts[1] if len(parts) > 2 else None
    return parts[0]
