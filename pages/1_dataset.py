"""Dataset: pick the demo or one of yours, import a zip or build one here, see the classes, split and photos."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.charts import class_counts_figure
from core.datasets import DatasetError, dataset_warnings, detect_layout, split_share_note
from core.datasets.importing import add_uploads, create_class, create_dataset, dataset_name, import_zip, list_datasets
from core.errors import FewShotError
from core.workspace import DEMO_DATASET, PathError, datasets_dir, ensure_allowed, is_editable
from ui.camera import camera_into_class
from ui.common import dataset_label, load_dataset, unsaved_uploads
from ui.dataset_views import IMAGE_TYPES, class_image_counts, flash, md, show_flash, synced, thumbnail_grid
from ui.frame import require_frame
from ui.state import dataset_path, init_state, set_dataset

require_frame(__file__)

THUMBS_PER_CLASS = 8

init_state()
st.session_state.setdefault("ds_upload_counter", 0)  # a new uploader key after each save: nothing is saved twice
st.session_state.setdefault("ds_zip_counter", 0)


# ---------------------------------------------------------------------------------------------- callbacks
# Changes happen in callbacks, before the script reruns, so every widget below already shows the new state.


def _create_dataset() -> None:
    st.session_state["ds_bring"] = True
    name = st.session_state.get("ds_new_name", "")
    try:
        existed = (datasets_dir() / dataset_name(name)).is_dir()
        path = create_dataset(name)
    except (FewShotError, OSError) as exc:
        flash("build", "error", f"Cannot create that dataset: {md(exc)}")
        return
    set_dataset(path)
    st.session_state["ds_new_name"] = ""
    flash("build", "info" if existed else "success",
          f"A dataset named **{md(path.name)}** already exists: switched to it." if existed
          else f"Created the dataset **{md(path.name)}**. Now add at least two classes and their photos.")


def _create_class() -> None:
    st.session_state["ds_bring"] = True
    name = st.session_state.get("ds_new_class", "")
    try:
        folder = create_class(dataset_path(), name)
    except (FewShotError, OSError) as exc:
        flash("build", "error", f"Cannot add that class: {md(exc)}")
        return
    st.session_state["ds_new_class"] = ""
    st.session_state["ds_upload_class"] = folder.name
    flash("build", "success", f"Added the class **{md(folder.name)}**. Now drop its photos below.")


def _save_photos(uploader_key: str) -> None:
    """Save the dropped photos at once (uploads only live until the next rerun), then reset the uploader."""
    st.session_state["ds_bring"] = True
    class_name = st.session_state.get("ds_upload_class")
    if not class_name:
        return
    files = unsaved_uploads(st.session_state.get(uploader_key))
    if not files:
        return
    try:
        report = add_uploads(dataset_path(), class_name, [(f.name, f.getvalue()) for f in files])
    except (FewShotError, OSError) as exc:
        flash("build", "error", f"The photos could not be saved: {md(exc)}")
        return
    st.session_state["ds_upload_counter"] += 1
    if report.saved:
        flash("build", "success", f"Saved {len(report.saved)} photo(s) into **{md(class_name)}**.")
    if report.skipped:
        flash("build", "warning", f"{len(report.skipped)} file(s) were not added:")
        flash("build", "table", [{"file": name, "reason": reason} for name, reason in report.skipped])


def _import_zip(uploader_key: str) -> None:
    st.session_state["ds_bring"] = True
    upload = st.session_state.get(uploader_key)
    if upload is None:
        flash("zip", "error", "Choose a .zip file first.")
        return
    name = st.session_state.get("ds_zip_name", "").strip() or Path(upload.name).stem
    try:
        with tempfile.TemporaryDirectory() as tmp:
            zip_path = Path(tmp) / "upload.zip"
            with open(zip_path, "wb") as out:
                upload.seek(0)
                shutil.copyfileobj(upload, out)
            root, notes = import_zip(zip_path, name)
    except (FewShotError, OSError) as exc:
        flash("zip", "error", f"The zip could not be imported: {md(exc)}")
        return
    set_dataset(root)
    st.session_state["ds_zip_counter"] += 1
    st.session_state["ds_zip_name"] = ""
    flash("zip", "success", f"Imported **{md(root.name)}** and switched to it.")
    if notes:
        flash("zip", "warning", f"{len(notes)} entr{'y was' if len(notes) == 1 else 'ies were'} left out of the zip "
                                f"or renamed:")
        flash("zip", "table", [{"entry": note} for note in notes])


# ---------------------------------------------------------------------------------------------- page

st.title("Dataset")
st.markdown(
    "A dataset is **a folder per class of photos; the folder name is the label**. For example `fish/` holds "
    "photos of fish and `tools/` photos of tools. Start with the built-in demo, upload a zip of such folders, or "
    "build a new dataset here by naming classes and dropping photos into them. A few dozen photos per class "
    "are enough to get started: the model reuses what a network pretrained on millions of photos already knows.")

# --- choose
current = dataset_path()
options = [str(DEMO_DATASET)] + [str(p) for p in list_datasets()]
if str(current) not in options:
    resolved = {str(Path(o).resolve()): o for o in options}
    match = resolved.get(str(current.resolve()))
    if match:
        set_dataset(match)
    else:
        options.append(str(current))
st.selectbox("Dataset", options, format_func=dataset_label, **synced("ds_pick", "dataset"),
             help="The demo, or any dataset you imported or built (kept in the workspace's datasets folder).")
current = dataset_path()

try:
    ensure_allowed(current)
    allowed = current.is_dir()
    if not allowed:
        st.error(f"The folder {md(current)} no longer exists. Pick another dataset above.")
except PathError as exc:
    allowed = False
    st.error(f"This folder cannot be used: {md(exc)}")

is_yours = allowed and is_editable(current)  # the one rule for changes: core.workspace
folders = class_image_counts(current) if is_yours else {}  # only your own datasets are built here
is_empty = is_yours and sum(folders.values()) == 0

ds, problem = None, None
if allowed and not is_empty:
    try:
        ds = load_dataset(current, st.session_state["val_split"], st.session_state["test_split"],
                          st.session_state["seed"])
    except DatasetError as exc:
        problem = exc

# --- bring your own photos (kept open while one of your datasets is empty or unusable: it is being built)
if is_empty or (is_yours and problem is not None):
    st.session_state["ds_bring"] = True
with st.expander("Bring your own photos: build a dataset here or upload a zip", key="ds_bring", on_change="rerun",
                 icon=":material/add_photo_alternate:"):
    tab_build, tab_zip = st.tabs(["Build it here", "Upload a zip"])
    with tab_build:
        show_flash("build")
        st.markdown("**1. Name a new dataset** (or pick one of yours above to add to it)")
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.text_input("New dataset name", key="ds_new_name", placeholder="e.g. cats-and-dogs")
        c2.button("Create dataset", key="ds_create", on_click=_create_dataset, icon=":material/create_new_folder:")
        if not is_yours:
            st.info("Create a dataset above, or pick one of yours, to add classes and photos (the built-in demo "
                    "stays as it is).")
        else:
            try:
                split_layout = detect_layout(current) is not None
            except DatasetError:
                split_layout = True
            if split_layout:
                st.info("This dataset is already split into train/validation folders: add photos to those folders "
                        "on disk, or import a new zip.")
            else:
                st.markdown(f"**2. Add a class to {md(current.name)}**: one per kind of thing to recognise.")
                c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
                c1.text_input("New class name", key="ds_new_class", placeholder="e.g. cats",
                              help="Letters, digits, spaces, '-', '_' or '.'; it becomes the folder name and the "
                                   "label the model predicts.")
                c2.button("Add class", key="ds_add_class", on_click=_create_class, icon=":material/add:")
                st.markdown("**3. Add photos to a class**: drop many at once; they are saved straight away.")
                if not folders:
                    st.caption("Add a class first.")
                else:
                    if st.session_state.get("ds_upload_class") not in folders:
                        st.session_state["ds_upload_class"] = next(iter(folders))
                    st.caption("So far: " + " · ".join(f"**{md(c)}** {n} photo{'' if n == 1 else 's'}"
                                                       for c, n in folders.items()))
                    st.selectbox("Class", list(folders), key="ds_upload_class")
                    uploader_key = f"ds_photos_{st.session_state['ds_upload_counter']}"
                    st.file_uploader("Photos for this class: drag photos here, or browse", type=IMAGE_TYPES,
                                     accept_multiple_files=True, key=uploader_key, on_change=_save_photos,
                                     args=(uploader_key,),
                                     help="JPEG, PNG, HEIC (phones), WebP, BMP, GIF or TIFF. Unreadable files are "
                                          "skipped and listed.")
                    camera_into_class(dataset_path(), st.session_state["ds_upload_class"], key="ds_camera",
                                      keep_open="ds_bring")
    with tab_zip:
        show_flash("zip")
        st.markdown("Zip a folder that holds one folder per class (`cats/…`, `dogs/…`), or `train/` and "
                    "`validation/` folders that each hold the class folders, and upload it here.")
        zip_key = f"ds_zip_{st.session_state['ds_zip_counter']}"
        st.file_uploader("A .zip of class folders: drag it here, or browse", type="zip", key=zip_key,
                         help="Photos not sorted into folders yet? Add them on the Label page (Add unlabelled "
                              "photos): a flat zip goes straight into the unlabelled pool.")
        st.text_input("Name for the new dataset", key="ds_zip_name", placeholder="the zip's name")
        st.button("Import the zip", key="ds_import", on_click=_import_zip, args=(zip_key,),
                  disabled=st.session_state.get(zip_key) is None, icon=":material/unarchive:")

# --- what is in it
if not allowed:
    st.stop()
if is_empty:
    st.info(f"**{md(current.name)}** has no photos yet. Use *Bring your own photos* above: add at least two classes "
            f"and a few photos to each (a dozen or more per class works best).")
    st.stop()

if problem is not None:
    st.error(f"This dataset cannot be used yet: {md(problem)}")
    st.info("Fix it with *Bring your own photos* above (for example add another class), or pick another dataset."
            if is_yours else "Pick another dataset above, or build your own.")
    st.stop()

counts = ds.counts()
st.subheader("What is in it")
m = st.columns(2 + len(counts.columns) - 1)
m[0].metric("Classes", len(ds.classes))
m[1].metric("Photos", int(counts["total"].sum()))
for col, split in zip(m[2:], [c for c in counts.columns if c != "total"]):
    col.metric({"train": "Training", "val": "Validation", "test": "Test"}[split], int(counts[split].sum()))

left, right = st.columns([2, 3])
left.dataframe(counts, width="stretch")
right.plotly_chart(class_counts_figure(counts), key="ds_counts_chart")

for warning in dataset_warnings(ds):
    st.warning(md(warning))
if ds.skipped:
    with st.expander(f"Files skipped ({len(ds.skipped)})"):
        st.dataframe(pd.DataFrame([{"file": str(s.path.relative_to(ds.root)) if ds.root in s.path.parents
                                    else str(s.path), "reason": s.reason} for s in ds.skipped]),
                     hide_index=True, width="stretch")

# --- split
st.subheader("Training, validation and test photos")
if ds.layout == "split":
    st.markdown("This dataset has its own `train` and `validation` folders, so **the folders decide** which photos "
                "are used for training and which are held out.")
else:
    st.markdown("Part of each class is **held out to measure accuracy on images the model never trained on** "
                "(validation). An optional test share is kept aside until the very end, for one final honest score. "
                "Each photo's split is drawn from its own content and the seed, so it stays put when you add or "
                "relabel photos.")
    c1, c2, c3 = st.columns(3)
    c1.slider("Validation share", 0.0, 0.5, step=0.05, format="%.2f", **synced("ds_val_split", "val_split"),
              help="Fraction of each class held out for validation. 0.2 (one photo in five) is the usual choice.")
    c2.slider("Test share", 0.0, 0.4, step=0.05, format="%.2f", **synced("ds_test_split", "test_split"),
              help="Fraction of each class kept for a final test. 0 is fine for small datasets.")
    c3.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, **synced("ds_seed", "seed"),
                    help="Change it to draw a different split; the same seed always gives the same one.")
    if note := split_share_note(ds.items, st.session_state["val_split"], st.session_state["test_split"]):
        st.caption(note)

# --- photos
st.subheader("Photos per class")
st.caption(f"The first {THUMBS_PER_CLASS} photos of each class, with the part of the split each one is in.")
tabs = st.tabs([f"{c} ({int(counts.loc[c, 'total'])})" for c in ds.classes])
for tab, label in zip(tabs, ds.classes):
    with tab:
        items = [it for it in ds.items if it.label == label][:THUMBS_PER_CLASS]
        thumbnail_grid([it.path for it in items], [f"{it.path.name} · {it.split}" for it in items],
                       ncols=THUMBS_PER_CLASS)
