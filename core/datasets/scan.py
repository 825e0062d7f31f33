"""Reading class folders from disk: the layouts, the one walk over a folder's image files, and the file checks.

The label of an image is the folder it sits in: the data on disk is the source of truth. Bad files are skipped
and reported, never fatal.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from core import images
from core.datasets.dataset import Dataset, DatasetError, Item, Skipped
from core.datasets.names import NOT_TEXT_REASON, RESERVED_FOLDERS, SPLIT_FOLDER_NAMES, is_text, printable
from core.datasets.split import item_order, stratified_split
from core.datasets.zips import unpack_zip_cached

# How many file checks are remembered: enough for the datasets people bring (a rescan on every rerun then decodes
# nothing), bounded so a server that runs for weeks over changing files does not grow without end.
CHECK_CACHE_SIZE = 100_000


@lru_cache(maxsize=CHECK_CACHE_SIZE)
def _check_memo(path: str, size: int, mtime_ns: int) -> str | None:
    return images.check_image(path)


def _check_cached(path: Path, st: os.stat_result) -> str | None:
    """check_image, memoised on (path, size, mtime) so the UI can rescan every rerun for free."""
    return _check_memo(str(path), st.st_size, st.st_mtime_ns)


def _walk(folder: Path) -> Iterator[tuple[Path, os.stat_result, str | None]]:
    """Every file under `folder` (recursively, sorted) with the reason it is not one of the dataset's images,
    None for an image file (judged by its name; nothing is decoded here).

    Files inside hidden folders (e.g. __MACOSX/._*, .fewshot/) and documentation (credits, licences) are not part
    of the dataset and are left out silently; symbolic links are never followed.
    """
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(images.is_hidden(part) for part in rel.parts[:-1]):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # moved or deleted since the listing (the Label page relabelling while a run scans)
        if stat.S_ISDIR(st.st_mode):
            continue
        name = path.name
        if not is_text(str(rel)):
            yield printable(path), st, NOT_TEXT_REASON
        elif stat.S_ISLNK(st.st_mode):
            yield path, st, "symbolic link (not followed)"
        elif images.is_hidden(name):
            yield path, st, "hidden or system file"
        elif not stat.S_ISREG(st.st_mode):
            yield path, st, "not a regular file"
        elif not images.has_image_extension(name):
            if not images.is_sidecar(name):
                yield path, st, f"not an image file ({path.suffix or 'no extension'})"
        else:
            yield path, st, None


def iter_image_files(folder: Path) -> Iterator[Path]:
    """The image files under `folder` (recursively, sorted) by the rules of `scan_class_folder`, undecoded:
    regular files with an image extension and a UTF-8 name, not hidden, not in a hidden folder, not symlinks."""
    for path, _, reason in _walk(folder):
        if reason is None:
            yield path


def scan_class_folder(folder: Path, check: bool = True) -> tuple[list[Path], list[Skipped]]:
    """Usable image files under `folder` (recursively, sorted) and the files skipped, with reasons."""
    good: list[Path] = []
    skipped: list[Skipped] = []
    for path, st, reason in _walk(folder):
        if reason is None and check:
            reason = _check_cached(path, st)
        if reason is None:
            good.append(path)
        else:
            skipped.append(Skipped(path, reason))
    return good, skipped


def class_folders(root: Path) -> list[Path]:
    """The class (or split) folders directly in `root`: real folders, not hidden, reserved or unreadable names."""
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and not images.is_hidden(p.name)
                  and p.name.lower() not in RESERVED_FOLDERS and is_text(p.name))


def _untextual_folders(root: Path) -> list[Skipped]:
    return [Skipped(printable(p), NOT_TEXT_REASON) for p in sorted(root.iterdir())
            if p.is_dir() and not is_text(p.name)]


def detect_layout(root: Path) -> dict[str, Path] | None:
    """{'train': path, 'val': path, 'test': path?} for the split layout, None for the flat one."""
    found: dict[str, Path] = {}
    for child in class_folders(root):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower())
        if split:
            found.setdefault(split, child)
    if "train" in found and "val" in found:
        return found
    if "train" in found:
        # `train/` alone: the user meant the split layout but the validation folder is missing or misnamed.
        raise DatasetError(f"{root} has a 'train' folder but no 'validation' (or 'val', 'valid') folder beside it.")
    return None


def find_dataset_root(path: Path) -> Path:
    """Descend through a single wrapping folder (zips often have one), ignoring litter like __MACOSX."""
    current = path
    for _ in range(3):
        children = class_folders(current)
        files = [p for p in current.iterdir() if p.is_file() and images.has_image_extension(p.name)]
        if len(children) == 1 and not files and detect_layout(current) is None:
            current = children[0]
        else:
            break
    # The descent went one level too far if it landed in a class folder of a single-class dataset.
    return current if class_folders(current) else path


def scan_dataset(data: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
                 check_images: bool = True) -> Dataset:
    """Read a dataset folder or zip into a `Dataset`, or raise `DatasetError` saying what to fix."""
    if not 0.0 <= val_split < 1.0 or not 0.0 <= test_split < 1.0 or val_split + test_split >= 1.0:
        raise DatasetError(f"val_split ({val_split}) and test_split ({test_split}) must be in [0, 1) and sum below 1.")
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DatasetError(f"{path} is a file; give a folder of class folders or a .zip of one.")
        from core.workspace import imports_dir
        path = unpack_zip_cached(path, imports_dir())
    root = find_dataset_root(path.resolve())
    layout = detect_layout(root)
    if layout is None:
        return _scan_flat(root, val_split, test_split, seed, check_images)
    return _scan_split(root, layout, check_images)


def _scan_flat(root: Path, val_split: float, test_split: float, seed: int, check: bool) -> Dataset:
    files: dict[str, list[Path]] = {}
    skipped: list[Skipped] = _untextual_folders(root)
    for folder in class_folders(root):
        good, bad = scan_class_folder(folder, check)
        files[folder.name] = good
        skipped += bad
    _validate_classes(root, {"train": files})
    items = stratified_split(files, val_split, test_split, seed)
    return Dataset(root, "flat", sorted(files), items, skipped)


def _scan_split(root: Path, layout: dict[str, Path], check: bool) -> Dataset:
    per_split: dict[str, dict[str, list[Path]]] = {}
    skipped: list[Skipped] = []
    for split, folder in layout.items():
        per_split[split] = {}
        skipped += _untextual_folders(folder)
        for class_folder in class_folders(folder):
            good, bad = scan_class_folder(class_folder, check)
            per_split[split][class_folder.name] = good
            skipped += bad
    _validate_classes(root, per_split)
    items = [Item(p, label, split) for split, files in per_split.items() for label, paths in files.items()
             for p in paths]
    classes = sorted(per_split["train"])
    return Dataset(root, "split", classes, sorted(items, key=item_order), skipped)


def _validate_classes(root: Path, per_split: dict[str, dict[str, list[Path]]]) -> None:
    train = per_split["train"]
    if len(train) < 2:
        found = f"only {sorted(train)}" if train else "no class folders"
        raise DatasetError(f"'{root.name}': found {found}. A classifier needs at least 2 class folders of images, "
                           f"like {root.name}/cats/*.jpg and {root.name}/dogs/*.jpg.")
    for split, files in per_split.items():
        empty = sorted(label for label, paths in files.items() if not paths)
        if empty:
            where = "" if len(per_split) == 1 else f" in '{split}'"
            raise DatasetError(f"class {', '.join(map(repr, empty))}{where} has no usable image. Add images or "
                               f"remove the folder.")
        if split != "train" and set(files) != set(train):
            missing = sorted(set(train) - set(files))
            extra = sorted(set(files) - set(train))
            parts = ([f"missing from '{split}': {missing}"] if missing else []) + \
                    ([f"only in '{split}': {extra}"] if extra else [])
            raise DatasetError(f"the class folders of 'train' and '{split}' differ ({'; '.join(parts)}). "
                               f"Every split needs the same classes.")
