"""Make sure every page runs inside app.py's frame.

On a freshly started server, the first request for a page URL (say /training, a bookmark or a reload after a
restart) is served by Streamlit's older pages/ folder mode, which runs the page script alone: no sidebar, no
navigation. Each page calls `require_frame` first; outside the frame it hands over to app.py, which then opens
the page that was asked for.

Why a hand-over and not a setting (checked in Streamlit 1.67): when the first session starts, Streamlit sets
`PagesManager.uses_pages_directory` (a class attribute, so for the whole server) to whether a pages/ folder sits
next to the entrypoint, and while it is set every script run goes through the folder mode's own router
(`_mpa_v1` in runtime/scriptrunner/script_runner.py), which runs a page's file without app.py (app.py only for
the root URL). Only a call of `st.navigation` clears it ("as soon as any session of your app executes the
st.navigation command, your app will ignore the pages/ directory", says its reference). No config option turns
the folder mode off: `client.showSidebarNavigation` only hides its menu, the page still runs without app.py.
Renaming the folder would avoid it, but the project's layout keeps pages/.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

FRAME_FLAG = "_frame_seen"
WANTED_PAGE = "_wanted_page"


def require_frame(page_file: str) -> None:
    """First thing on every page (`require_frame(__file__)`): outside app.py's frame, go through app.py."""
    if st.session_state.get(FRAME_FLAG):
        return
    from ui.state import init_state

    init_state()  # reads the URL's ?dataset=…&run=… before the hand-over drops them; app.py writes them back
    st.session_state[WANTED_PAGE] = f"pages/{Path(page_file).name}"
    st.switch_page("app.py")


def open_page(page: str) -> None:
    """Open `page` ("pages/…py") from a widget inside a fragment: the switch happens in a whole-app run (app.py's
    `enter_frame`), never in the fragment's own run. After a `st.switch_page` from a fragment run the browser test
    once saw the frontend fail ("Bad delta path index 6 (should be between [0, 0])", a blank page until a reload):
    most likely the new page drawn at that fragment's element paths."""
    st.session_state[WANTED_PAGE] = page
    st.rerun(scope="app")


def enter_frame() -> None:
    """Called by app.py on every run, after st.navigation: marks the session as framed and finishes a hand-over
    started by `require_frame` by opening the page that was asked for."""
    st.session_state[FRAME_FLAG] = True
    wanted = st.session_state.pop(WANTED_PAGE, None)
    if wanted:
        st.switch_page(wanted)
