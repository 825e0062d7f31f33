"""Make sure every page runs inside app.py's frame.

On a freshly started server, the first request for a page URL (say /training, a bookmark or a reload after a
restart) is served by Streamlit's older pages/ folder mode, which runs the page script alone: no sidebar, no
navigation. Each page calls `require_frame` first; outside the frame it hands over to app.py, which then opens
the page that was asked for.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

FRAME_FLAG = "_frame_seen"
WANTED_PAGE = "_wanted_page"


def mark_frame() -> None:
    """Called by app.py on every run."""
    st.session_state[FRAME_FLAG] = True


def require_frame(page_file: str) -> None:
    if st.session_state.get(FRAME_FLAG):
        return
    st.session_state[WANTED_PAGE] = f"pages/{Path(page_file).name}"
    st.switch_page("app.py")


def open_wanted_page() -> None:
    """Called by app.py after st.navigation: finish the hand-over started by `require_frame`."""
    wanted = st.session_state.pop(WANTED_PAGE, None)
    if wanted:
        st.switch_page(wanted)
