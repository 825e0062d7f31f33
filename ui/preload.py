"""Libraries the pages import only when they need them, loaded once in the background as the server starts.

The Predictions page's suspicious-labels queue imports cleanlab (which brings scikit-learn and SciPy), the Photo
map imports scikit-learn's t-SNE: ~1.5 s each the first time, on a quiet machine. Inside a page's run that import
is what a user waits for, and a click that lands during it waits too (a rerun cannot interrupt an import): a
Retrain measured 2.4 s from the click to the first change on the page for that reason. Loaded by a thread when
the server starts, they are there before the first page asks for them.
"""
from __future__ import annotations

import importlib
import threading

import streamlit as st

PRELOADED = ("cleanlab.filter", "sklearn.manifold")


@st.cache_resource(show_spinner=False)
def preload_in_background() -> threading.Thread:
    """Start (once per server) the thread that imports `PRELOADED`."""
    thread = threading.Thread(target=_import_all, name="fewshot-preload", daemon=True)
    thread.start()
    return thread


def _import_all() -> None:
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except Exception:  # the page that needs it reports the failure in its own words
            pass
