"""Bringing images into the workspace: new datasets, uploaded files, uploaded zips.

Everything lands under the workspace's `datasets/` folder with sanitised names; every file is written
atomically and checked to be a readable image before it counts.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core import fsutil, images
from core.datasets.dataset import DatasetError
from core.datasets.names import safe_name, validate_class_name
from core.datasets.scan import find_dataset_root, iter_image_files
from core.datasets.zips import safe_extract_zip
from core.workspace import datasets_dir, ensure_writable

MAX_UPLOAD_BYTES = 50 * 1024**2  # per image


@dataclass
class ImportReport:
    saved: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    notes: list[str] = field(default_factory=list)


def dataset_name(name: str) -> str:
    cleaned = safe_name(name).strip()
    if not cleaned:
        raise DatasetError(f"{name!r} is not a usable dataset name.")
    return cleaned


def list_datasets() -> list[Path]:
    """Dataset folders in the workspace (newest first)."""
    root = datasets_dir()
    folders = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)


def create_dataset(name: str) -> Path:
    path = datasets_dir() / dataset_name(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_class(dataset: Path, name: str) -> Path:
    dataset = ensure_writable(dataset)
    folder = dataset / validate_class_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unique_path(folder: Path, filename: str) -> Path:
    """`folder/filename`, or `name-2.ext`, `name-3.ext`… if taken: an upload never overwrites a photo."""
    name = safe_name(filename) or "image"
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def save_image_bytes(folder: Path, filename: str, data: bytes) -> Path:
    """Save one uploaded image into `folder` after checking it decodes; raises images.ImageError if not."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise images.ImageError(f"larger than {MAX_UPLOAD_BYTES // 1024**2} MB")
    if not images.has_image_extension(filename):
        raise images.ImageError(f"not an image file ({Path(filename).suffix or 'no extension'})")
    with tempfile.NamedTemporaryFile(suffix=Path(filename).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        reason = images.check_image(tmp.name)
    if reason:
        raise images.ImageError(reason)
    target = unique_path(folder, filename)
    fsutil.atomic_write_bytes(target, data)
    return target


def save_uploads(folder: Path, files: Iterable[tuple[str, bytes]]) -> ImportReport:
    """Save (filename, bytes) uploads into `folder`; unreadable files are skipped with their reason."""
    report = ImportReport()
    for name, data in files:
        try:
            report.saved.append(save_image_bytes(folder, name, data))
        except images.ImageError as exc:
            report.skipped.append((name, str(exc)))
    return report


def add_uploads(dataset: Path, class_name: str, files: list[tuple[str, bytes]]) -> ImportReport:
    """Save (filename, bytes) uploads into a class folder of `dataset` (created if new)."""
    return save_uploads(create_class(dataset, class_name), files)


def import_zip(zip_file: Path, name: str) -> tuple[Path, list[str]]:
    """Unpack an uploaded zip of class folders into a new workspace dataset. Returns (dataset root, notes)."""
    target = datasets_dir() / dataset_name(name)
    if target.exists():
        raise DatasetError(f"a dataset named {target.name!r} already exists; choose another name.")
    # A private staging folder per import: two sessions importing one zip under one name never share it.
    staging = fsutil.temp_folder(datasets_dir(), f".import-{target.name}-")
    try:
        notes = safe_extract_zip(Path(zip_file), staging / "unpacked")
        root = find_dataset_root(staging / "unpacked")
        if next(iter_image_files(root), None) is None:
            raise DatasetError("the zip holds no images (.jpg, .png, .webp, …): put each class's images in a folder "
                               "named after the class (cats/…, dogs/…) and zip those folders.")
        if not any(p.is_dir() for p in root.iterdir()):
            raise DatasetError("the zip holds no folders: put each class's images in a folder named after the "
                               "class (cats/…, dogs/…) and zip those folders.")
        try:
            # One rename: a name another import took meanwhile is refused, never merged into.
            os.rename(root, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise DatasetError(f"a dataset named {target.name!r} already exists; choose another name.") from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, notes
