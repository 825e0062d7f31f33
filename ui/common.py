"""Cached loaders and small widgets the pages share."""
from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from core import images
from core.datasets import Dataset, DatasetError, scan_dataset
from core.workspace import PathError, disk_full_message, ensure_allowed

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~$])")


def warn_if_disk_full() -> None:
    """On pages where a full disk makes the next click fail (start a training) or where space is freed (delete
    runs): say so first."""
    message = disk_full_message()
    if message:
        st.error(message, icon=":material/hard_drive:")


def md(text: object) -> str:
    """Text from files or errors, made safe to show in Streamlit markdown: `cats/*.jpg` must not turn italic,
    and a `$` in a file name must not start a formula."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def folder_fingerprint(root: Path) -> tuple:
    """Changes whenever a file under `root` is added, removed, moved or rewritten: the dataset cache key."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            try:
                st_ = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            entries.append((dirpath, name, st_.st_size, st_.st_mtime_ns))
    return hash(tuple(entries))


@st.cache_data(show_spinner="Reading the dataset…", max_entries=16)
def _scan(path: str, val_split: float, test_split: float, seed: int, fingerprint: int) -> Dataset:
    return scan_dataset(path, val_split, test_split, seed)


def load_dataset(path: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0) -> Dataset:
    """The scanned dataset; rescanned only when its files change. Raises DatasetError."""
    path = Path(path)
    try:
        ensure_allowed(path)  # before anything lists or reads it: only the workspace's datasets and the demo
    except PathError as exc:
        raise DatasetError(str(exc)) from None
    if not path.exists():
        raise DatasetError(f"{path} no longer exists.")
    return _scan(str(path), val_split, test_split, seed, folder_fingerprint(path))


def current_dataset(required: bool = True) -> Dataset | None:
    """The session's dataset, or an explanation and `st.stop()` when it cannot be read."""
    from ui.state import dataset_path, init_state

    init_state()
    try:
        return load_dataset(dataset_path(), st.session_state["val_split"], st.session_state["test_split"],
                            st.session_state["seed"])
    except DatasetError as exc:
        st.error(f"The dataset cannot be used: {md(exc)}")
        if required:
            st.info("Pick or build another dataset on the **Dataset** page.")
            st.stop()
        return None


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_bytes(path: str, side: int, mtime_ns: int) -> bytes | None:
    """A JPEG thumbnail, cached by path and modification time; None for an unreadable file."""
    import io

    try:
        thumb = images.thumbnail(path, side)
    except images.ImageError:
        return None
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def thumb(path: str | Path, side: int = 160) -> bytes | None:
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        return None
    return thumbnail_bytes(str(path), side, mtime)


def dataset_label(path: str | Path) -> str:
    """The dataset's readable name: the demo and an editable copy of it read apart."""
    from core.labeling.copies import dataset_title

    return dataset_title(path)


def unsaved_uploads(files: list | None) -> list:
    """The uploaded files not saved yet in this session.

    A browser uploading several files can report the same files to a widget's on_change more than once (seen in
    Chromium: every photo saved twice). Each UploadedFile has a unique file_id; remembering the saved ones makes
    saving idempotent.
    """
    saved: set = st.session_state.setdefault("_saved_upload_ids", set())
    fresh = [f for f in files or [] if f.file_id not in saved]
    saved.update(f.file_id for f in fresh)
    return fresh


# How often a page looks at an active run's folder (status.json: a small read). A bottleneck run on cached features
# is done in about a second, so the poll is a good part of what the user waits for: five times a second. Scratch
# and fine-tune runs take minutes: twice a second is plenty.
FAST_POLL_SECONDS = 0.2
SLOW_POLL_SECONDS = 0.5


def poll_seconds(run) -> float:
    """How often to poll `run` (a core.runs.Run) while it is active."""
    from core.errors import FewShotError

    try:
        return FAST_POLL_SECONDS if run.config().mode == "bottleneck" else SLOW_POLL_SECONDS
    except FewShotError:  # a damaged config.json: the run fails and says so
        return SLOW_POLL_SECONDS
