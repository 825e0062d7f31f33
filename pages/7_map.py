"""Photo map: every photo of the dataset (labelled or not) as a dot placed by what the network sees in it.
Select dots to see their photos and relabel them right here."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import labeling
from core.backbones import get_backbone
from core.charts import photo_map_figure, points_from_selection
from core.errors import FewShotError
from core.runs import Run, get_run
from core.workspace import features_dir
from ui import labeling_views as lv
from ui.common import dataset_label, folder_fingerprint, md, thumb
from ui.dataset_views import show_flash
from ui.frame import require_frame
from ui.state import dataset_path, init_state

require_frame(__file__)
init_state()
MAX_SHOWN = 48

st.title("Photo map")
st.caption("Each dot is a photo, placed by what the pretrained network sees in it: similar photos sit together. "
           "Colours are labels (grey: not labelled yet); ✕ marks a photo the model got wrong, ◆ one whose nearest "
           "neighbours all carry another label (often a mislabelled photo). Drag a box or a lasso over dots — or "
           "click one — to see the photos and relabel them at once.")
root = dataset_path().resolve()
show_flash("map")


@st.cache_data(max_entries=8, show_spinner=False)
def _map(root: str, backbone: str, fingerprint: int, run_id: str, run_version: int) -> tuple[pd.DataFrame, int]:
    from core.photo_map import dataset_map  # TensorFlow only if features are missing from the cache

    predictions, trained_on = None, None
    if run_id:
        run = get_run(run_id)
        predictions = run.predictions()
        trained_on = Path(run.config_dict().get("train", {}).get("data", root))
    found = dataset_map(root, backbone, features_dir(), predictions=predictions, prediction_root=trained_on)
    return found.frame, found.n_extracted


runs, mine = labeling.suggestion_runs(root)
by_id = {run.id: run for run in runs if run.id in mine and run.has_results()}
options = [""] + list(by_id)
if st.session_state.get("map_run") not in options:
    st.session_state["map_run"] = options[1] if len(options) > 1 else ""
c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
run_id = c1.selectbox("Mark the mistakes of", options, key="map_run",
                      format_func=lambda rid: "No run (only labels)" if not rid else
                      f"{by_id[rid].config_dict().get('name') or rid} ({by_id[rid].metrics().get('mode', '?')})",
                      help="A training on this dataset: its wrong answers on the validation and test photos get ✕.")
run = by_id.get(run_id)
backbone = (run.metrics() or {}).get("backbone") if run else None
backbone = backbone or st.session_state["backbone"]
c2.caption(f"Dataset **{md(dataset_label(root))}** · features of **{md(get_backbone(backbone).title)}**")
try:
    with st.spinner("Placing the photos… (photos not seen before go through the network once)"):
        version = run.path.joinpath(Run.PREDICTIONS).stat().st_mtime_ns if run else 0
        frame, n_extracted = _map(str(root), backbone, folder_fingerprint(root), run_id or "", version)
except (FewShotError, OSError) as exc:
    st.error(f"No map for this dataset: {md(exc)}")
    st.stop()

n_unlabelled = int(frame["label"].isna().sum())
st.caption(f"{len(frame)} photos · {n_unlabelled} unlabelled · {int(frame['wrong'].sum())} wrong · "
           f"{int(frame['doubt'].notna().sum())} with a doubtful label"
           + (f" · {n_extracted} photos went through the network for this map" if n_extracted else ""))
event = st.plotly_chart(photo_map_figure(frame), key="map_chart", on_select="rerun",
                        selection_mode=("points", "box", "lasso"), config={"displaylogo": False})

# ------------------------------------------------------------------------------------------- the chosen photos
SHOW = {"map": "Selected on the map", "unlabelled": "All unlabelled", "doubt": "Doubtful labels",
        "wrong": "Wrong answers"}
show = st.segmented_control("Photos to look at", list(SHOW), format_func=SHOW.get, default="map",
                            key="map_show", required=True) or "map"
if show == "map":
    chosen = frame.loc[[i for i in points_from_selection(event.selection if event else None) if i in frame.index]]
elif show == "unlabelled":
    chosen = frame[frame["label"].isna()]
elif show == "doubt":
    chosen = frame[frame["doubt"].notna()]
else:
    chosen = frame[frame["wrong"]]
if chosen.empty:
    st.info("Select dots on the map (box or lasso: the tools at the chart's top right) to see their photos here."
            if show == "map" else "No such photo.")
    st.stop()

paths = [Path(p) for p in chosen["path"]]
editable = labeling.is_editable(root)
if editable:
    classes = labeling.label_view(root).classes
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1:
        hint = chosen["doubt"].dropna()
        if not hint.empty and st.session_state.get("map_class") is None:
            st.session_state["map_class"] = hint.mode().iloc[0]  # what the neighbours say: the likely fix
        lv.class_picker(classes, key="map_class", label="Move them to")
    c2.button(f"Move {lv.plural(len(paths), 'photo')}", key="map_move", type="primary", icon=":material/label:",
              on_click=lambda: lv.assign_to_picked(root, paths, "map_class", section="map"),
              help="Every change is recorded and can be undone on the Label page.")
else:
    st.info(f"**{md(dataset_label(root))}** is read-only: make an editable copy on the Label page to relabel "
            f"photos from the map.")
    st.page_link("pages/2_label.py", label="Go to Label", icon=":material/label:")
if len(chosen) > MAX_SHOWN:
    st.caption(f"The first {MAX_SHOWN} of {len(chosen)} photos are shown"
               + (f"; moving applies to all {len(chosen)}." if editable else "."))
per_row = 8
rows = list(chosen.head(MAX_SHOWN).itertuples())
for start in range(0, len(rows), per_row):
    for col, row in zip(st.columns(per_row), rows[start:start + per_row]):
        with col.container(border=True):
            data = thumb(row.path, 160)
            if data is None:
                st.caption("(cannot be shown)")
            else:
                st.image(data, width="stretch")
            label = md(row.label) if isinstance(row.label, str) else "*unlabelled*"
            notes = [f":red[said {md(row.predicted)}]"] if row.wrong else []
            notes += [f":orange[looks like {md(row.doubt)}]"] if isinstance(row.doubt, str) else []
            st.markdown(f"**{label}**" + ("  \n" + " · ".join(notes) if notes else ""))
            st.caption(md(Path(row.path).name))
