"""Few-Shot Studio: the frame. Pages are in pages/, logic in core/.

    streamlit run app.py
"""
from __future__ import annotations

import os
from pathlib import Path

# TensorFlow reads these at import; set them before any page imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st

from core.backbones import get_backbone
from core.engine import keep_engine_running
from core.errors import FewShotError
from core.runs import active_runs, run_title
from core.workspace import disk_full_message
from ui.common import dataset_label, md
from ui.frame import enter_frame
from ui.layout import frame_css
from ui.preload import preload_in_background
from ui.state import dataset_path, init_state, publish_state

# A local image, not ":material/…:" (which the browser fetches from a font CDN: an error on every load offline).
ICON = Path(__file__).resolve().parent / "ui" / "assets" / "icon.png"
st.set_page_config(page_title="Few-Shot Studio", page_icon=str(ICON), layout="wide")
init_state()


@st.cache_resource(show_spinner=False)
def warm_engine_once() -> None:
    """Start the warm worker with the server, so the first training does not wait for TensorFlow to load."""
    try:
        keep_engine_running(always=True)
    except (FewShotError, OSError):  # a full or read-only workspace, a worker that cannot start: the pages say so
        pass


# The default page lives at / only: Streamlit answers its own name (/dataset, which every other page's URL invites
# and which the server's first session, run in the pages/ folder mode, does serve) with a "Page not found" dialog
# over the page, which leaves the page inert until closed. A hidden page takes /dataset and hands over to the
# Dataset page at / (a page's id comes from its url_path: the default page's own, never shown, must differ).
DATASET = st.Page("pages/1_dataset.py", title="Dataset", icon=":material/folder_open:", default=True,
                  url_path="dataset-page")


def _dataset_by_name() -> None:
    st.switch_page(DATASET)


DATASET_BY_NAME = st.Page(_dataset_by_name, title="Dataset", url_path="dataset", visibility="hidden")
PAGES = [
    DATASET,
    st.Page("pages/2_label.py", title="Label", icon=":material/label:"),
    st.Page("pages/7_map.py", title="Photo map", icon=":material/scatter_plot:"),
    st.Page("pages/3_augmentation.py", title="Augmentation", icon=":material/auto_awesome:"),
    st.Page("pages/4_training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/5_predictions.py", title="Predictions", icon=":material/grid_view:"),
    st.Page("pages/6_runs.py", title="Runs", icon=":material/history:"),
    st.Page("pages/8_presenter.py", title="Presenter", icon=":material/co_present:"),
    DATASET_BY_NAME,
]
page = st.navigation(PAGES)
warm_engine_once()
preload_in_background()
enter_frame()
if page is DATASET_BY_NAME:  # before the sidebar is drawn: the hand-over is one quick rerun
    _dataset_by_name()
frame_css()
publish_state()  # the dataset and run in the URL and the workspace: a reload or a second tab shows the same

with st.sidebar:
    st.markdown("### Few-Shot Studio")
    st.caption("Train an image classifier from a handful of photos per class.")
    st.markdown(f"**Dataset:** {md(dataset_label(dataset_path()))}")
    try:
        st.markdown(f"**Backbone:** {get_backbone(st.session_state['backbone']).title}")
    except Exception:  # an unknown name left in a session: the Training page explains
        st.markdown(f"**Backbone:** {st.session_state['backbone']}")

    @st.fragment(run_every="2s")
    def running_trainings() -> None:
        full = disk_full_message()
        if full:
            st.error(full, icon=":material/hard_drive:")
        try:
            keep_engine_running()
        except (FewShotError, OSError) as exc:  # a worker that cannot start: say so, keep the page
            st.error(str(exc))
        try:
            runs = active_runs()
        except OSError as exc:  # a full or read-only workspace must not take every page down
            st.caption(f"Trainings cannot be listed: {exc.strerror or exc}.")
            return
        if not runs:
            st.caption("No training running.")
            return
        for run in runs:
            status = run.status()
            st.markdown(f"**Training:** {md(run_title(run))}")
            st.progress(float(status.progress or 0.0), text=status.message or status.state)
        st.page_link("pages/4_training.py", label="Watch it", icon=":material/monitoring:")

    running_trainings()

page.run()
