"""Predictions: how good is a finished run, which images did it get wrong, and what does it say about new ones."""
from __future__ import annotations

import functools
import math
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import FewShotError
from core.evaluate import frame_confusion
from core.export.formats import FORMATS, input_text, snippet
from core.run_summary import saved_model_note
from core.runs import Run, file_stem, list_runs, run_dataset_title, run_title
from ui.common import dataset_label, md
from ui.dataset_views import IMAGE_TYPES
from ui.frame import require_frame
from ui.labeling_views import fix_controls, image_now, retrain_panel, suspects_queue
from ui.layout import grid, name_line, names_table, panels, row
from ui.prediction_views import (
    ALL,
    PER_CLASS_HEADERS,
    SORTS,
    WRONG_CSS,
    cell_from_selection,
    clickable_confusion,
    conversion_check_sentence,
    export_check_sentence,
    filter_predictions,
    heat_thumb,
    model_file_ready,
    page_heatmaps,
    per_class_rows,
    predict_uploads,
    square_thumb,
)
from ui.state import init_state, set_run
from ui.try_it import try_it

require_frame(__file__)
init_state()
st.title("Predictions")
st.caption("What a finished training learned: how often it is right, which photos it confuses, and what it says "
           "about photos it has never seen.")

# ------------------------------------------------------------------------------------------- which run
finished = [run for run in list_runs() if run.has_results()]
if not finished:
    st.info("No finished training yet. Train a model first; its results appear here.")
    st.page_link("pages/4_training.py", label="Go to Training", icon=":material/model_training:")
    st.stop()

ids = [run.id for run in finished]
by_id = {run.id: run for run in finished}
wanted = st.session_state.get("run_id")
if st.session_state.get("pred_run") not in by_id:
    st.session_state["pred_run"] = wanted if wanted in by_id else ids[0]  # list_runs: newest first
if wanted and wanted not in by_id:
    st.caption(f"Run {md(wanted)} has no results (yet): showing the newest finished run instead.")


def run_choice(run_id: str) -> str:
    run = by_id[run_id]
    metrics = run.metrics() or {}
    acc = metrics.get("val_accuracy")
    return (f"{run_title(run)} — on {run_dataset_title(run)}, {metrics.get('mode', '?')}"
            + (f", {acc:.0%} right" if acc is not None else ""))


run_id = st.selectbox("Run", ids, key="pred_run", format_func=run_choice,
                      help="Each training is a run. The newest is first; the Runs page compares them.")
if st.session_state.get("run_id") != run_id:
    set_run(run_id)  # the URL and the workspace say which run is shown: a reload comes back to it
run: Run = by_id[run_id]
stem = file_stem(run)  # downloads are named after the run, not its folder id: "bottleneck-demo-14-02.keras"
if st.session_state.get("pred_filters_run") != run_id:  # another run: its own photos, none of the last filters
    st.session_state["pred_filters_run"] = run_id
    for key in ("pred_true", "pred_said", "pred_outcome", "pred_page"):
        st.session_state.pop(key, None)
metrics = run.metrics() or {}
config = run.config_dict()
if run.damaged():
    st.warning(f"Some files of this run are damaged and cannot be read: {md(', '.join(run.damaged()))}. What is "
               f"readable is shown below; the Runs page can delete it.")
classes = metrics.get("classes") or run.labels()
train = config.get("train", {})
st.caption(f"Run `{md(run.id)}` · dataset **{md(dataset_label(train.get('data', '?')))}** · "
           f"mode **{train.get('mode', '?')}** · "
           f"backbone **{metrics.get('backbone') or '—'}** · {metrics.get('n_train', '?')} training images · "
           f"trained {datetime.fromtimestamp(config.get('created_at', 0)):%Y-%m-%d %H:%M}")

# ------------------------------------------------------------------------------------------- summary
val_acc, test_acc = metrics.get("val_accuracy"), metrics.get("test_accuracy")
seconds = metrics.get("total_seconds") or metrics.get("train_seconds")
summary = [("Validation accuracy", f"{val_acc:.1%}" if val_acc is not None else "—",
            f"Share of the {metrics.get('n_val', '?')} validation photos (kept aside, never trained on) that the "
            "model got right.")]
if test_acc is not None:
    summary.append(("Test accuracy", f"{test_acc:.1%}",
                    f"The same on the {metrics.get('n_test')} test photos, which were not even used to decide "
                    "when to stop training: the most honest estimate."))
cv = metrics.get("cross_validation") or {}
if cv.get("accuracy_mean") is not None:
    summary.append(("Cross-validated accuracy", f"{cv['accuracy_mean']:.1%} ± {cv['accuracy_std'] * 100:.0f}",
                    f"The {cv['k']} heads of a {cv['k']}-fold cross-validation on all {cv['n_photos']} training and "
                    f"validation photos, each judged by a head that never saw it (± the spread across the folds, "
                    f"in points). With few validation photos one split is noise: this is the steadier number."))
summary += [("Validation photos", metrics.get("n_val", "—"), None),
            ("Training time", f"{seconds:.1f} s" if seconds else "—",
             "From the start of the training to its results.")]
for col, (title, value, explanation) in zip(st.columns(len(summary)), summary):
    col.metric(title, value, help=explanation)
if note := saved_model_note(metrics):
    st.caption(note)


def export_check_note(run: Run) -> None:
    """The export check runs in the training process just after the run is marked done: poll until it lands."""
    check = (run.metrics() or {}).get("export_check")
    finished = run.status().finished_at or 0
    if check is None and metrics.get("n_val") and time.time() - finished < 120:
        st.info("Checking the saved model file against the app's predictions… (a few seconds)")
        return
    kind, sentence = export_check_sentence(check)
    getattr(st, kind)(sentence)


pending = metrics.get("export_check") is None and metrics.get("n_val")
st.fragment(export_check_note, run_every="2s" if pending else None)(run)

try:
    frame = run.predictions()
except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
    st.error(f"predictions.csv of this run cannot be read: {md(exc)}")
    frame = None
if frame is None or frame.empty or not classes:
    st.warning("This run saved no predictions (predictions.csv is missing), so there is nothing to show below.")
    st.stop()

# ------------------------------------------------------------------------------------------- confusion
splits = [s for s in ("val", "test") if (frame["split"] == s).any()]
split = splits[0]
if len(splits) > 1:
    split = st.segmented_control("Photos to look at", splits, default="val", key="pred_split", required=True,
                                 format_func={"val": "Validation", "test": "Test"}.get,
                                 help="Validation photos guided the training (when to stop); test photos did not.") \
        or "val"
rows = frame[frame["split"] == split]
matrix = frame_confusion(rows, classes)

# Filter widgets' defaults (set before they are drawn; a click on the chart changes them in its callback).
for key, default in (("pred_true", ALL), ("pred_said", ALL), ("pred_outcome", "all")):
    st.session_state.setdefault(key, default)
chart_key = f"pred_confusion_{run_id}_{split}"


def on_cell_click() -> None:
    cell = cell_from_selection(st.session_state[chart_key].get("selection"), classes)
    st.session_state["pred_true"], st.session_state["pred_said"] = cell or (ALL, ALL)
    st.session_state["pred_outcome"] = "all"
    st.session_state.pop("pred_page", None)  # back to the first page of the new selection


# Side by side on a wide page, the table under the matrix on a narrow one (each then as wide as the page).
confusion_panels = panels("pred_confusion")
with confusion_panels.container():
    st.markdown("**Confusion matrix** — rows: the true class; columns: what the model said. The diagonal is right, "
                "everything else is a mistake. **Click a cell** to see its photos below.")
    st.plotly_chart(clickable_confusion(matrix, classes), key=chart_key, on_select=on_cell_click,
                    selection_mode=("points",), config={"displayModeBar": False})
with confusion_panels.container():
    st.markdown("**Per class**")
    split_metrics = metrics if split == "val" else (metrics.get("test") or {})
    if split_metrics.get("per_class"):
        # Class names whole, or cut with an ellipsis and a tooltip (st.dataframe clips them mid-word).
        names_table(per_class_rows(split_metrics["per_class"]), "class", PER_CLASS_HEADERS)
    mistakes = [(classes[i], classes[j], matrix[i][j]) for i in range(len(classes)) for j in range(len(classes))
                if i != j and matrix[i][j]]
    if mistakes:
        worst = sorted(mistakes, key=lambda m: -m[2])[:3]
        st.caption("Most confused: " + "; ".join(f"{md(t)} taken for {md(s)} ({n}×)" for t, s, n in worst))
    else:
        st.caption("No mistakes on these photos.")

# ------------------------------------------------------------------------------------------- the grid
st.subheader("Photos and what the model said")
st.caption("Confidence: how sure the model is (the probability it gave its answer). Sort by it to see the photos "
           "it hesitated on: often ambiguous, badly framed or mislabelled.")
options = [ALL] + list(classes)
for key in ("pred_true", "pred_said"):
    if st.session_state[key] not in options:  # another run with other classes
        st.session_state[key] = ALL
filters = row("pred_filters")  # wraps onto two lines on a narrow window instead of clipping
true = filters.selectbox("True class", options, key="pred_true", help="The class the photo is filed under.")
said = filters.selectbox("Model said", options, key="pred_said", help="The class the model predicted.")
outcome = filters.segmented_control("Show", ["all", "wrong", "right"], key="pred_outcome", required=True,
                                    format_func={"all": "All", "wrong": ":material/cancel: Wrong",
                                                 "right": ":material/check_circle: Right"}.get) or "all"
sort = filters.selectbox("Order", list(SORTS), key="pred_sort")
page_size = filters.selectbox("Per page", [12, 24, 48, 96], index=1, key="pred_page_size")

heat = st.toggle("Show where the model looked (heatmaps), wrong ones first", key="pred_heat",
                 help="Grad-CAM from this run's own model: bright where the evidence for what it said is. On a "
                      "wrong answer, bright background means the model learned the background, not the thing.")
if heat and not model_file_ready(run, key="pred_model_heat"):
    heat = False
shown = filter_predictions(frame, split, true, said, outcome, sort)
if heat:
    shown = shown.sort_values("correct", kind="stable")  # wrong first, each group in the chosen order
dataset_root = Path(train.get("data", "."))
n_pages = max(1, math.ceil(len(shown) / page_size))
wrong_total = int((~rows["correct"]).sum())
st.caption(f"{len(shown)} of {len(rows)} photos ({wrong_total} wrong in this split).")
if shown.empty:
    st.info("No photo matches these filters.")
else:
    st.html(WRONG_CSS)
    page = st.pagination(n_pages, key="pred_page") if n_pages > 1 else 1
    chunk = shown.iloc[(page - 1) * page_size: page * page_size]
    heatmaps = {}
    if heat:
        try:
            with st.spinner(f"Computing {len(chunk)} heatmaps…"):
                heatmaps = page_heatmaps(run.model_path, list(chunk["path"]))
        except (FewShotError, OSError) as exc:
            st.error(f"Heatmaps cannot be computed for this run's model: {md(exc)}")
    # As many columns as the page's width allows (ui.layout's CSS grid), not a fixed six.
    with grid("pred"):
        for _, item in chunk.iterrows():
            key = f"pred{'right' if item['correct'] else 'wrong'}-{item.name}"
            with st.container(border=True, key=key):
                now = image_now(dataset_root, Path(item["path"]))  # a photo fixed since training: its new place
                data = square_thumb(now, 200) if now is not None else None
                if data is not None and heatmaps.get(item["path"]) is not None:
                    data = heat_thumb(item["path"], heatmaps[item["path"]], 200) or data
                if data is None:
                    st.markdown(":material/hide_image: *file gone*")
                    st.caption("Deleted, renamed outside the app, or unreadable since training.")
                else:
                    st.image(data, width="stretch")
                sure = "" if pd.isna(item["confidence"]) else f"{item['confidence']:.0%} sure"
                name_line(("✓ " if item["correct"] else "✗ ") + str(item["predicted"]), suffix=sure,
                          color="#15803d" if item["correct"] else "#b91c1c")
                if not item["correct"]:
                    name_line(f"true: {item['label']}", color="#b91c1c")
                st.caption(md(Path(item["path"]).name), help=str(Path(item["path"]).name))
                # Fix right here, on every photo: move it to its right class or delete it.
                if data is not None:
                    fix_controls(dataset_root, Path(item["path"]), classes, key=f"fix_{run_id}_{item.name}")
suspects_queue(run, classes, dataset_root)
st.caption("A photo filed under the wrong class, or one that does not belong? Fix it on its card above (or on "
           "the Label page), then retrain: only changed photos are processed anew, so it takes seconds.")
retrain_panel(run, key="pred_retrain")
st.page_link("pages/2_label.py", label="More labelling tools (undo, trash, duplicates)", icon=":material/label:")

# ------------------------------------------------------------------------------------------- new images
st.subheader("Try it on new photos")
st.caption("Drop photos (or a .zip of photos) the model has never seen. Nothing is added to your dataset.")
model_path = run.model_path
uploads = None
if model_file_ready(run, key="pred_model_new"):
    try_it(run, list(classes), key="pred_try")
    st.markdown("**Many photos or a zip** — one line per photo, in a table you can download.")
    uploads = st.file_uploader("Photos or a .zip: drag them here, or browse", accept_multiple_files=True,
                               key="pred_uploads", type=[*IMAGE_TYPES, "zip"])
if uploads:
    cache_key = (str(model_path), model_path.stat().st_mtime_ns, tuple(u.file_id for u in uploads))
    result = st.session_state.get("pred_new")
    if not result or result.get("key") != cache_key:
        from core.export import ExportError  # TensorFlow loads only when a model is needed

        try:
            with st.spinner(f"Predicting {len(uploads)} upload(s)…"):
                result = predict_uploads(model_path, list(classes), uploads) | {"key": cache_key}
            st.session_state["pred_new"] = result
        except ExportError as exc:
            st.error(f"The model of this run could not be loaded: {md(exc)}")
            result = None
    if result:
        for note in result["notes"][:10]:
            st.caption(f"Left out: {md(note)}")
        table = result["table"]
        per_row = 5
        for start in range(0, min(len(table), 60), per_row):
            for col, (index, item) in zip(st.columns(per_row), table.iloc[start:start + per_row].iterrows()):
                with col.container(border=True):
                    if result["thumbs"][index]:
                        st.image(result["thumbs"][index], width="stretch")
                    if pd.isna(item["predicted"]):
                        st.markdown(f":orange[:material/warning:] *unreadable*: {md(item['problem'])}")
                    else:
                        st.markdown(f"**{md(item['predicted'])}** · {item['confidence']:.0%}")
                        probs = sorted(((c, item[f"p_{c}"]) for c in classes), key=lambda cp: -cp[1])[:3]
                        for name, p in probs:
                            st.progress(float(p), text=f"{md(name)} {p:.0%}")
                    st.caption(md(item["file"]))
        if len(table) > 60:
            st.caption(f"The first 60 of {len(table)} are shown; the table below has them all.")
        st.dataframe(table, key="pred_new_table", hide_index=True, column_config={
            "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0, max_value=1),
            "margin": st.column_config.NumberColumn("margin", format="%.2f",
                                                    help="Top probability minus the second: small = a close call."),
            **{f"p_{c}": st.column_config.NumberColumn(c, format="%.3f") for c in classes}})
        st.download_button("New photos' predictions (CSV)", table.to_csv(index=False).encode(),
                           file_name=f"{stem}-new-predictions.csv", mime="text/csv", key="pred_dl_new",
                           icon=":material/download:", on_click="ignore")

# ------------------------------------------------------------------------------------------- downloads
st.subheader("Download")
st.caption("`model.keras` takes a photo of any size (RGB, values 0–255) and returns one probability per class in "
           "the order of `labels.json`; it needs only Keras, none of this app's code. The conversions below run "
           "without TensorFlow; they take a photo already resized to the model's input size.")
d1, d2, d3 = st.columns(3)
d1.download_button("Predictions (CSV)", functools.partial(run.file(Run.PREDICTIONS).read_bytes),
                   file_name=f"{stem}-predictions.csv", mime="text/csv", key="pred_dl_csv",
                   icon=":material/table:", on_click="ignore", help="One line per validation/test photo.")
d3.download_button("Class names (labels.json)", functools.partial(run.file(Run.LABELS).read_bytes),
                   file_name=f"{stem}-labels.json", mime="application/json", key="pred_dl_labels",
                   icon=":material/label:", on_click="ignore")
if model_path.exists():  # else the notice above says why it is not there (yet)
    d2.download_button("Model (model.keras)", functools.partial(model_path.read_bytes),
                       file_name=f"{stem}.keras", mime="application/octet-stream", key="pred_dl_model",
                       icon=":material/neurology:", on_click="ignore",
                       help=f"{model_path.stat().st_size / 1e6:.0f} MB")
    size = run.config().input_size()
    checks = run.exports()
    for fmt in FORMATS.values():
        key = fmt.name.replace("-", "_")
        name_col, action_col, check_col = st.columns([2, 2, 5], vertical_alignment="center")
        name_col.markdown(f"**{fmt.title}**  \n{fmt.purpose}")
        with action_col:
            if run.conversion_is_current(fmt.file):
                path = run.file(fmt.file)
                st.download_button(fmt.file, functools.partial(path.read_bytes), file_name=f"{stem}-{fmt.file}",
                                   mime=fmt.mime, key=f"pred_dl_{key}",
                                   icon=":material/download:", on_click="ignore",
                                   help=f"Input: {input_text(fmt, size)}.")
                if fmt.usage:
                    st.caption(fmt.usage)
            elif st.button(f"Make {fmt.file}", key=f"pred_make_{key}", icon=":material/build:",
                           help="Converts model.keras, then re-runs the file on the validation photos to check it "
                                "(up to a minute or two)."):
                from core.export import ExportError, export_format  # TensorFlow only when converting

                try:
                    with st.spinner(f"Converting to {fmt.title} and checking it…"):
                        export_format(run, fmt.name)
                    st.rerun()
                except (ExportError, OSError) as exc:
                    st.error(f"The conversion failed: {md(exc)}")
        with check_col:
            if run.conversion_is_current(fmt.file):
                kind, sentence = conversion_check_sentence(checks.get(fmt.name))
                getattr(st, kind)(sentence)
                if fmt.snippet:  # the web page needs no code: its one line is under its download
                    with st.expander("How to use it"):
                        st.caption(f"Input: {input_text(fmt, size)}. Output: one probability per class, in the "
                                   f"order of labels.json.")
                        st.code(snippet(fmt, size), language=fmt.language)
