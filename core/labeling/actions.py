"""What a user asks of the Label page (and the fix widgets elsewhere), turned into journalled file moves.

Each function is one undoable action (one batch in the journal): it checks the dataset may be changed, decides
which files go where, and hands the moves to `journal.apply_moves`. Uploads are new files, not moves: they go
straight into the pool (deleting them later is journalled like any change).
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from core.datasets import DatasetError, iter_image_files, safe_extract_zip, validate_class_name
from core.datasets.importing import ImportReport, save_uploads
from core.labeling.journal import Op, apply_moves, new_id
from core.labeling.places import (
    LabelingError,
    class_folder,
    editable_root,
    inside,
    layout_of,
    pool_folder,
    split_of,
    trash_dir,
)


def _image_paths(root: Path, paths: Iterable[str | Path]) -> list[Path]:
    out, seen = [], set()
    for path in paths:
        resolved = inside(root, path)
        if not resolved.is_file():
            raise LabelingError(f"{resolved.name} is not there any more (already moved or deleted?).")
        if resolved not in seen:
            seen.add(resolved)
            out.append(resolved)
    return out


def move_to_class(dataset: str | Path, paths: Iterable[str | Path], class_name: str,
                  batch: str | None = None) -> list[Op]:
    """Assign (unlabelled) or relabel (labelled) images to `class_name`, created if new. One undoable action.

    In the split layout an image keeps its split (`validation/cats/x.jpg` → `validation/dogs/x.jpg`); pool images
    join `train/`. Images already in that class are left where they are. Names never collide: `x-2.jpg`.
    """
    root = editable_root(dataset)
    try:
        name = validate_class_name(class_name)
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None
    layout = layout_of(root)
    moves = []
    for src in _image_paths(root, paths):
        folder = class_folder(root, name, split_of(root, layout, src))
        if src.parent == folder:
            continue
        moves.append(("move", src, folder, src.name, None))
    return apply_moves(root, moves, batch)


def move_to_pool(dataset: str | Path, paths: Iterable[str | Path]) -> list[Op]:
    """Take images out of their class, back to the unlabelled pool (to decide later)."""
    root = editable_root(dataset)
    pool = pool_folder(root)
    moves = [("move", src, pool, src.name, None) for src in _image_paths(root, paths) if src.parent != pool]
    return apply_moves(root, moves, None)


def delete_images(dataset: str | Path, paths: Iterable[str | Path]) -> list[Op]:
    """Move images to the dataset's trash (`.fewshot/trash/<id>/`); `restore_from_trash` or `undo` bring them back."""
    root = editable_root(dataset)
    moves = [("delete", src, trash_dir(root) / new_id(), src.name, None) for src in _image_paths(root, paths)]
    return apply_moves(root, moves, None)


def add_unlabelled_uploads(dataset: str | Path, files: Iterable[tuple[str, bytes]]) -> ImportReport:
    """Save (filename, bytes) uploads into the dataset's unlabelled pool; unreadable files are skipped.

    A `.zip` among them (a flat zip of unsorted photos, or one with folders) adds every photo in it, unsorted:
    its folders are not classes here, the pool is one flat folder. It is unpacked with the limits of every zip.
    """
    root = editable_root(dataset)
    pool = pool_folder(root)
    pool.mkdir(exist_ok=True)
    photos, zips = [], []
    for name, data in files:
        (zips if name.lower().endswith(".zip") else photos).append((name, data))
    report = save_uploads(pool, photos)
    for name, data in zips:
        with tempfile.TemporaryDirectory(prefix="fewshot-pool-zip-") as tmp:
            archive, unpacked = Path(tmp) / "upload.zip", Path(tmp) / "unpacked"
            archive.write_bytes(data)
            notes = safe_extract_zip(archive, unpacked)
            found = list(iter_image_files(unpacked))
            part = save_uploads(pool, ((path.name, path.read_bytes()) for path in found))
        report.saved += part.saved
        report.skipped += part.skipped
        report.notes += [f"{name}: {note}" for note in notes]
        if not found:
            report.skipped.append((name, "the zip holds no photos"))
    return report
