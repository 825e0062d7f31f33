"""Names in a dataset: which folder names are splits or reserved, what a class may be called, and how any name
from outside (a zip entry, an upload, a typed dataset name) is made safe to write to disk."""
from __future__ import annotations

import os
import re
from pathlib import Path

from core.datasets.dataset import DatasetError

SPLIT_FOLDER_NAMES = {"train": "train", "training": "train", "validation": "val", "val": "val", "valid": "val",
                      "test": "test", "testing": "test"}
# Folders inside a dataset that are never classes: the labelling pool and the app's own bookkeeping.
RESERVED_FOLDERS = {"unlabelled", "unlabeled", "_trash"}
CLASS_NAME_RE = re.compile(r"^[\w][\w .\-()+,&']{0,63}$", re.UNICODE)

NOT_TEXT_REASON = "its name is not valid UTF-8 text (an old archive or disk?): rename it to use it"


def is_text(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as lone surrogates, which every
    later step that writes text — JSON, CSV, the browser — would choke on)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: Path) -> Path:
    """`path` with undecodable bytes shown as U+FFFD: for the skipped list only (it names no real file)."""
    return Path(os.fsencode(path).decode("utf-8", "replace"))


def safe_name(name: str, max_bytes: int = 150) -> str:
    """A file or folder name that cannot escape its folder or trip a shell: no separators, no control characters,
    no leading dots, valid UTF-8, at most `max_bytes` bytes (file systems allow 255) with its extension kept."""
    name = name.encode("utf-8", "ignore").decode("utf-8")
    name = Path(name.replace("\\", "/")).name
    name = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", name).strip()
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    stem = name[: len(name) - len(suffix)].lstrip(".").strip()
    if not stem:
        return "_" + suffix if suffix else ""
    stem = stem.encode("utf-8")[: max_bytes - len(suffix.encode("utf-8"))].decode("utf-8", "ignore").rstrip()
    return stem + suffix


def free_name(path: Path) -> Path:
    """`name (2).jpg`, `name (3).jpg`…: the first that is not taken."""
    n = 2
    while (candidate := path.with_name(f"{path.stem} ({n}){path.suffix}")).exists():
        n += 1
    return candidate


def validate_class_name(name: str) -> str:
    """Return the stripped class name, or raise DatasetError explaining what a class name may be."""
    cleaned = name.strip()
    if (not cleaned or not CLASS_NAME_RE.match(cleaned) or cleaned.lower() in RESERVED_FOLDERS
            or cleaned.lower() in SPLIT_FOLDER_NAMES):
        raise DatasetError(f"{name!r} is not a usable class name: use letters, digits, spaces, '-', '_' or '.', "
                           f"at most 64 characters, not starting with '.' and not one of "
                           f"{sorted(RESERVED_FOLDERS | set(SPLIT_FOLDER_NAMES))}.")
    return cleaned
