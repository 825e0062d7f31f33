"""Helpers of the Predictions page: the clickable confusion matrix, grid filtering, predicting uploaded images."""
from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import ImageOps

from core import images
from core.charts import confusion_figure
from core.datasets import iter_image_files, safe_extract_zip
from core.errors import FewShotError
from core.model_cache import load_cached_model

ALL = "(all)"
MAX_UPLOAD_IMAGES = 2000  # a zip may hold more; predicting them here would keep the page busy for minutes
# The grid's CSS hook: a container keyed "predwrong-…" gets the class "st-key-predwrong-…".
WRONG_CSS = """<style>
[class*="st-key-predwrong-"] { border: 2px solid #d62728 !important; border-radius: 0.5rem; }
[class*="st-key-predright-"] { border: 2px solid #2ca02c33 !important; border-radius: 0.5rem; }
</style>"""


# ------------------------------------------------------------------------------------------- the run's results
def clickable_confusion(matrix: list[list[int]], classes: list[str]) -> go.Figure:
    """The confusion heatmap with one invisible square marker per cell on top.

    Plotly cannot select heatmap cells (plotly.js#170, streamlit#8760), but it can select scatter points: a click
    on a cell selects its marker, whose `customdata` is [true index, predicted index]; the selected cell gets a
    red frame.
    """
    fig = confusion_figure(matrix, classes)
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})
    xs, ys, data, text = [], [], [], []
    for i, true in enumerate(classes):
        for j, said in enumerate(classes):
            xs.append(said)
            ys.append(true)
            data.append([i, j])
            count = matrix[i][j]
            verdict = "right" if i == j else "wrong"
            text.append(f"true: {true}<br>model said: {said}<br>{count} image{'s' * (count != 1)} ({verdict})"
                        + ("<br>click to see them" if count else ""))
    n = len(classes)
    height = 170 + 48 * n
    # The marker must stay inside its cell: overlapping markers would make a click near a border pick a neighbour.
    side = int(max(8, min(36, 0.55 * (height - 170) / n)))
    fig.add_scatter(x=xs, y=ys, customdata=data, hovertext=text, hoverinfo="text", mode="markers",
                    showlegend=False, name="cells",
                    marker={"symbol": "square-open", "size": side, "color": "rgba(0,0,0,0)", "line": {"width": 3}},
                    selected={"marker": {"color": "rgba(214,39,40,0.8)"}}, unselected={"marker": {"opacity": 1}})
    # hoverdistance -1: the nearest marker wins wherever the pointer is, so the whole cell is clickable.
    fig.update_layout(clickmode="event+select", dragmode=False, hovermode="closest", hoverdistance=-1,
                      height=height)
    fig.update_xaxes(range=[-0.5, n - 0.5], fixedrange=True)
    fig.update_yaxes(range=[n - 0.5, -0.5], fixedrange=True)
    return fig


def cell_from_selection(selection: dict | None, classes: list[str]) -> tuple[str, str] | None:
    """(true class, predicted class) of the clicked cell, or None when nothing (or no cell) is selected."""
    points = (selection or {}).get("points") or []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2:
            i, j = int(data[0]), int(data[1])
            if 0 <= i < len(classes) and 0 <= j < len(classes):
                return classes[i], classes[j]
    return None


SORTS = {
    "least sure first": ("confidence", True),
    "most sure first": ("confidence", False),
    "closest call first (margin)": ("margin", True),
    "file name": ("path", True),
}


def filter_predictions(frame: pd.DataFrame, split: str, true: str = ALL, said: str = ALL, outcome: str = "all",
                       sort: str = "least sure first") -> pd.DataFrame:
    """The grid's rows: one split, optionally one true class / one predicted class / only right or wrong."""
    rows = frame[frame["split"] == split]
    if true != ALL:
        rows = rows[rows["label"] == true]
    if said != ALL:
        rows = rows[rows["predicted"] == said]
    if outcome == "wrong":
        rows = rows[~rows["correct"]]
    elif outcome == "right":
        rows = rows[rows["correct"]]
    column, ascending = SORTS.get(sort, SORTS["least sure first"])
    if column in rows:
        rows = rows.sort_values(column, ascending=ascending, kind="stable")
    return rows


def per_class_table(per_class: dict) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(per_class, orient="index")
    table.index.name = "class"
    return table.reindex(columns=["precision", "recall", "f1", "support"])


PER_CLASS_HEADERS = [
    ("precision", "Of the photos the model called this class, the share that really are."),
    ("recall", "Of the photos that really are this class, the share the model found."),
    ("F1", "Precision and recall in one number."),
    ("photos", "Photos of this class in this split."),
]


def per_class_rows(per_class: dict) -> list[tuple[str, list[str]]]:
    """The per-class table's rows for `ui.layout.names_table`: a class name and its formatted numbers."""
    def fmt(value, pattern: str) -> str:
        return "—" if value is None or pd.isna(value) else format(value, pattern)

    return [(str(name), [fmt(row["precision"], ".0%"), fmt(row["recall"], ".0%"), fmt(row["f1"], ".2f"),
                         fmt(row["support"], ".0f")])
            for name, row in per_class_table(per_class).iterrows()]


def export_check_sentence(check: dict | None) -> tuple[str, str]:
    """("success"|"warning"|"info", plain words) for metrics.json's export_check."""
    if not check or not check.get("n_images"):
        return "info", "The saved model file was not re-checked for this run."
    n, diff, same = check["n_images"], check.get("max_abs_diff") or 0.0, check.get("same_top1")
    if same == 1.0 and diff < 1e-3:
        return "success", (f"Export checked: the saved model file (`model.keras`), loaded back from disk, predicts "
                           f"exactly what the app predicted on {n} validation images (largest difference in any "
                           f"probability: {diff:.1e}). What you download is what you tested.")
    if same is not None and same >= 0.99:
        return "warning", (f"The saved model file agrees with the app's answer on {same:.0%} of {n} validation "
                           f"images, but its probabilities differ by up to {diff:.2f}.")
    return "warning", (f"The saved model file gives a different answer from the app on {1 - (same or 0):.0%} of "
                       f"{n} validation images (probabilities differ by up to {diff:.2f}): retrain before using it.")


def conversion_check_sentence(check: dict | None) -> tuple[str, str]:
    """("success"|"warning"|"info", plain words) for one conversion's entry in exports.json."""
    if not check:
        return "info", "Not checked yet."
    size = f"{check['size_bytes'] / 1e6:.1f} MB (model.keras: {check['keras_size_bytes'] / 1e6:.1f} MB)"
    if not check.get("n_images"):
        return "info", f"{size}. Not checked: this run has no validation photos."
    n, same, diff = check["n_images"], check["same_top1"], check["max_abs_diff"]
    acc, app = check["accuracy"], check["app_accuracy"]
    how = " (the ONNX model inside the page, run by ONNX Runtime)" if check.get("checked_with") == "onnxruntime" \
        else ""
    words = (f"{size}. Checked on {n} validation photos{how}: the same answer as the app on {same:.0%} of them, "
             f"probabilities differ by up to {diff:.1e}; accuracy {acc:.1%} (the app: {app:.1%}).")
    if same == 1.0:
        return "success", words
    return "warning", words + f" Quantisation or conversion changes {1 - same:.0%} of the answers."


# ------------------------------------------------------------------------------------------- the model file
def model_file_ready(run, key: str) -> bool:
    """True when the run's model.keras is on disk; otherwise says why (and what to do) and returns False.

    A bottleneck run is done as soon as its results are saved; its model.keras (the whole network, ~20 MB) is
    written a second or two later by the same process. Meanwhile a fragment polls and reruns the page once the file
    is there. If writing it failed (a full disk, a killed process), a button writes it again from the saved head.
    """
    state = run.model_file_state()
    if state == "ready":
        return True
    if state == "writing":
        st.fragment(_wait_for_model_file, run_every="1s")(run)
    elif state == "failed":
        st.error(f"The model file could not be written: {run.status().model_error or 'unknown reason'}")
        if st.button("Write the model file again", key=f"{key}_rewrite", icon=":material/refresh:",
                     help="Builds model.keras from this run's trained head and the frozen backbone."):
            from core.engine import write_run_model  # loads TensorFlow

            with st.spinner("Writing the model file…"):
                status = write_run_model(run)
            if status.model_file == "ready":
                st.rerun()
            st.error(f"Still failing: {status.model_error}")
    else:
        st.warning("This run's model file is gone (deleted, or never written); pick another run or train again.")
    return False


def _wait_for_model_file(run) -> None:
    if run.model_file_state() != "writing":
        st.rerun()  # the whole page: what needs the model can now be drawn (or the failure shown)
    st.info("Writing the model file (the whole network, about 20 MB)… the results above are final.",
            icon=":material/hourglass_top:")


# ------------------------------------------------------------------------------------------- new images


def save_uploads(files: Sequence, folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """Write uploaded images to `folder` and unpack uploaded zips there.

    Returns ([(file on disk, name to show)], notes on what was left out)."""
    out: list[tuple[Path, str]] = []
    notes: list[str] = []
    for index, upload in enumerate(files):
        name = Path(upload.name).name
        target = folder / f"{index:04d}_{name}"
        target.write_bytes(upload.getvalue())
        if name.lower().endswith(".zip"):
            dest = folder / f"{index:04d}_unzipped"
            try:
                notes += safe_extract_zip(target, dest)
            except FewShotError as exc:  # DatasetError: not a zip, too big, too many entries
                notes.append(f"{name}: {exc}")
                continue
            members = list(iter_image_files(dest))
            if not members:
                notes.append(f"{name}: no images inside.")
            out += [(path, f"{name}/{path.relative_to(dest).as_posix()}") for path in members]
        elif images.has_image_extension(name):
            out.append((target, name))
        else:
            notes.append(f"{name}: not an image file.")
    if len(out) > MAX_UPLOAD_IMAGES:
        notes.append(f"Only the first {MAX_UPLOAD_IMAGES} of {len(out)} images were predicted.")
        out = out[:MAX_UPLOAD_IMAGES]
    return out, notes


def _square_jpeg(path: str | Path, side: int) -> bytes | None:
    """The photo fitted into a light square, so the grid's cards line up whatever the photos' shapes."""
    try:
        thumb = images.thumbnail(path, side)
    except images.ImageError:
        return None
    buffer = io.BytesIO()
    ImageOps.pad(thumb, (side, side), color=(240, 242, 246)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(max_entries=4096, show_spinner=False)
def _cached_square(path: str, side: int, mtime_ns: int) -> bytes | None:
    return _square_jpeg(path, side)


def square_thumb(path: str | Path, side: int = 200) -> bytes | None:
    """A cached square thumbnail; None when the file is gone or unreadable."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        return None
    return _cached_square(str(path), side, mtime)


def page_heatmaps(model_path: Path, paths: Sequence[str]) -> dict[str, object]:
    """{path: core.explain.Explanation or None} for the grid's page, in batches (cached per photo version)."""
    from core.explain import explain_files  # TensorFlow only when heatmaps are asked for

    return dict(zip(paths, explain_files(model_path, paths)))


def heat_thumb(path: str | Path, explanation, side: int = 200) -> bytes | None:
    """The square thumbnail with the heatmap over the photo; None when the photo is gone or unreadable."""
    from core.explain import overlay

    try:
        photo = images.thumbnail(path, 2 * side)
    except images.ImageError:
        return None
    drawn = overlay(photo, explanation.heatmap)
    drawn.thumbnail((side, side))
    buffer = io.BytesIO()
    ImageOps.pad(drawn, (side, side), color=(240, 242, 246)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def predict_uploads(model_path: Path, classes: list[str], files: Sequence) -> dict:
    """Predict uploaded images/zips. Files live in a temporary folder only while predicting; the result keeps
    thumbnails as bytes. Returns {"table": DataFrame, "thumbs": [bytes|None], "notes": [str]}."""
    from core.export import predict_files

    model = load_cached_model(model_path)  # the app's one model cache, shared with the Label page
    folder = Path(tempfile.mkdtemp(prefix="fewshot-predict-"))
    try:
        saved, notes = save_uploads(files, folder)
        probs, failed = predict_files(model, [path for path, _ in saved]) if saved else (np.zeros((0, 0)), [])
        reasons = {str(path): reason for path, reason in failed}
        rows, thumbs = [], []
        for (path, shown), p in zip(saved, probs):
            row = {"file": shown}
            if np.isnan(p).any():
                row.update(predicted=None, confidence=None, margin=None,
                           problem=reasons.get(str(path), "could not be read"))
            else:
                order = np.argsort(p)[::-1]
                row.update(predicted=classes[order[0]], confidence=float(p[order[0]]),
                           margin=float(p[order[0]] - (p[order[1]] if len(p) > 1 else 0.0)), problem="")
            row.update({f"p_{c}": (None if np.isnan(p).any() else float(p[k])) for k, c in enumerate(classes)})
            rows.append(row)
            thumbs.append(_square_jpeg(path, 200))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    columns = ["file", "predicted", "confidence", "margin", "problem"] + [f"p_{c}" for c in classes]
    return {"table": pd.DataFrame(rows, columns=columns), "thumbs": thumbs, "notes": notes}
