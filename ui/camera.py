"""The webcam as a way in: shots saved straight into a class, several in a row without leaving the page.

`st.camera_input` shows the live camera until a shot is taken, then the shot (with "Clear photo"). Each shot is
saved in the widget's callback and the widget is then drawn anew under a fresh key, so it is back to the live
camera for the next shot. Saving is keyed by the shot's content: a rerun that reports the same shot again (or a
double click) never saves it twice.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import streamlit as st

from core.datasets.importing import add_uploads
from core.errors import FewShotError
from ui.common import md


def shot_name(data: bytes) -> str:
    """camera-20260101-120000-1a2b3c4d.jpg: sortable by time, unique by content."""
    return f"camera-{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(data).hexdigest()[:8]}.jpg"


def _save_shot(dataset: Path, class_name: str, key: str, keep_open: str | None) -> None:
    if keep_open:
        st.session_state[keep_open] = True  # the expander the camera sits in stays open after the rerun
    shot = st.session_state.get(f"{key}_{st.session_state.get(f'{key}_n', 0)}")
    if shot is None:
        return
    data = shot.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    saved: set = st.session_state.setdefault("_saved_camera_shots", set())
    if digest in saved:
        return
    try:
        report = add_uploads(dataset, class_name, [(shot_name(data), data)])
    except (FewShotError, OSError) as exc:
        st.session_state[f"{key}_note"] = ("error", f"The shot could not be saved: {md(exc)}")
        return
    saved.add(digest)
    if report.saved:
        st.session_state[f"{key}_count"] = st.session_state.get(f"{key}_count", 0) + 1
        st.session_state[f"{key}_note"] = ("success", f"Saved shot {st.session_state[f'{key}_count']} into "
                                                      f"**{md(class_name)}**. Take the next one.")
    else:
        reason = report.skipped[0][1] if report.skipped else "not saved"
        st.session_state[f"{key}_note"] = ("warning", f"The shot was not saved: {md(reason)}")
    st.session_state[f"{key}_n"] = st.session_state.get(f"{key}_n", 0) + 1  # a fresh camera for the next shot


def camera_into_class(dataset: Path, class_name: str, key: str, keep_open: str | None = None) -> None:
    """A toggle that opens the camera (the browser asks for it only then); every shot lands in `class_name`.
    `keep_open`: the key of an expander around it, kept open when a shot is saved."""
    if not st.toggle("Take photos with the camera", key=f"{key}_on", help="Each shot is saved into the class "
                     "at once; the camera is then ready for the next one."):
        return
    note = st.session_state.pop(f"{key}_note", None)
    if note:
        getattr(st, note[0])(note[1])
    widget = f"{key}_{st.session_state.get(f'{key}_n', 0)}"
    st.camera_input(f"Shot for {class_name}", key=widget, on_change=_save_shot,
                    args=(dataset, class_name, key, keep_open),
                    help="Take as many shots as you like: each is saved into the class above.")
