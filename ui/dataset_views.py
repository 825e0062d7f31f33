"""Small Streamlit helpers for the Dataset and Augmentation pages: synced widgets, flash messages, image grids."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core import images
from core.datasets import class_folders, iter_image_files
from ui.common import (
    md,  # noqa: F401  (re-exported: pages import it from here)
    thumb,
)

IMAGE_TYPES = sorted(ext.lstrip(".") for ext in images.IMAGE_EXTENSIONS)  # for st.file_uploader(type=…)


# ---------------------------------------------------------------------------------------------- text



# ---------------------------------------------------------------------------------------------- state


def _copy_back(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


def synced(widget_key: str, state_key: str) -> dict[str, Any]:
    """Widget kwargs that mirror a plain session key (which survives page switches; widget values do not).

    The widget is set from the session key before it is drawn, and writes its value back when the user changes it.
    """
    st.session_state[widget_key] = st.session_state[state_key]
    return {"key": widget_key, "on_change": _copy_back, "args": (widget_key, state_key)}


def flash(section: str, level: str, body: Any) -> None:
    """Queue a message for the next run: level is success/info/warning/error, or 'table' for a list of dicts."""
    st.session_state.setdefault("views_flash", {}).setdefault(section, []).append((level, body))


def show_flash(section: str) -> None:
    """Show (once) the messages queued for `section` by a callback."""
    for level, body in st.session_state.get("views_flash", {}).pop(section, []):
        if level == "table":
            st.dataframe(pd.DataFrame(body), hide_index=True, width="stretch")
        else:
            getattr(st, level)(body)


# ---------------------------------------------------------------------------------------------- folders


def class_image_counts(root: Path) -> dict[str, int]:
    """Class folders directly under `root` and how many image files each holds (empty ones included).

    A freshly built dataset has empty class folders, which `scan_dataset` rightly refuses; the builder still
    needs to list them.
    """
    if not root.is_dir():
        return {}
    return {folder.name: sum(1 for _ in iter_image_files(folder)) for folder in class_folders(root)}


# ---------------------------------------------------------------------------------------------- grids


def thumbnail_grid(paths: Sequence[Path], captions: Sequence[str], ncols: int = 8, side: int = 160) -> None:
    """Thumbnails of image files in rows of `ncols`, each with a caption; unreadable files say so."""
    for start in range(0, len(paths), ncols):
        cols = st.columns(ncols)
        for col, path, caption in zip(cols, paths[start:start + ncols], captions[start:start + ncols]):
            data = thumb(path, side)
            with col:
                if data is None:
                    st.caption(f"{caption} (cannot be shown)")
                else:
                    st.image(data, caption=caption, width="stretch")


def array_grid(arrays: Sequence[Any], ncols: int = 4, captions: Sequence[str] | None = None) -> None:
    """Images (HxWx3 uint8 arrays) in rows of `ncols`."""
    for start in range(0, len(arrays), ncols):
        cols = st.columns(ncols)
        for i, (col, array) in enumerate(zip(cols, arrays[start:start + ncols])):
            with col:
                st.image(array, caption=captions[start + i] if captions else None, width="stretch")
