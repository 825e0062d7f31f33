"""Few-Shot Studio: the frame. Pages are in pages/, logic in core/.

    streamlit run app.py
"""
from __future__ import annotations

import os

# TensorFlow reads these at import; set them before any page imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st

from core.backbones import get_backbone
from core.engine import keep_engine_running
from core.runs import active_runs
from ui.common import dataset_label
from ui.frame import enter_frame
from ui.state import dataset_path, init_state

st.set_page_config(page_title="Few-Shot Studio", page_icon=":material/photo_library:", layout="wide")
init_state()


@st.cache_resource(show_spinner=False)
def warm_engine_once() -> None:
    """Start the warm worker with the server, so the first training does not wait for TensorFlow to load."""
    try:
        keep_engine_running(always=True)
    except OSError:  # a full or read-only workspace: the Training page says so when it is used
        pass


PAGES = [
    st.Page("pages/1_dataset.py", title="Dataset", icon=":material/folder_open:", default=True),
    st.Page("pages/2_label.py", title="Label", icon=":material/label:"),
    st.Page("pages/7_map.py", title="Photo map", icon=":material/scatter_plot:"),
    st.Page("pages/3_augmentation.py", title="Augmentation", icon=":material/auto_awesome:"),
    st.Page("pages/4_training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/5_predictions.py", title="Predictions", icon=":material/grid_view:"),
    st.Page("pages/6_runs.py", title="Runs", icon=":material/history:"),
]
page = st.navigation(PAGES)
warm_engine_once()
enter_frame()

with st.sidebar:
    st.markdown("### Few-Shot Studio")
    st.caption("Train an image classifier from a handful of photos per class.")
    st.markdown(f"**Dataset:** {dataset_label(dataset_path())}")
    try:
        st.markdown(f"**Backbone:** {get_backbone(st.session_state['backbone']).title}")
    except Exception:  # an unknown name left in a session: the Training page explains
        st.markdown(f"**Backbone:** {st.session_state['backbone']}")

    @st.fragment(run_every="2s")
    def running_trainings() -> None:
        keep_engine_running()
        runs = active_runs()
        if not runs:
            st.caption("No training running.")
            return
        for run in runs:
            status = run.status()
            st.markdown(f"**Training:** `{run.id}`")
            st.progress(float(status.progress or 0.0), text=status.message or status.state)
        st.page_link("pages/4_training.py", label="Watch it", icon=":material/monitoring:")

    running_trainings()

page.run()
