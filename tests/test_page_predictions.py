"""AppTest of the Predictions page on a real finished run: summary, confusion matrix, image grid and its filters,
predicting uploaded photos and a zip, TFLite export; plus the pure helpers behind the clickable matrix."""
from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.charts import AXIS_NAME_CHARS, axis_name
from core.evaluate import frame_confusion
from core.runs import Run
from ui.prediction_views import ALL, cell_from_selection, clickable_confusion, filter_predictions, per_class_rows


@pytest.fixture
def predictions_page(open_app_page):
    def predictions_page(**state) -> AppTest:
        return open_app_page("pages/5_predictions.py", **state)

    return predictions_page


def n_images(at: AppTest) -> int:
    """The grid's photos (the suspicious-labels queue's are captioned "check this label")."""
    return sum(1 for img in at.image if not (img.captions and img.captions[0].startswith("check this label")))


def texts(at: AppTest) -> str:
    """The page's markdown, captions and HTML lines as shown (class and file names are escaped for markdown; the
    grid's names are HTML lines, ui.layout.name_line)."""
    import html

    lines = [m.value for m in at.markdown] + [c.value for c in at.caption]
    shown = re.sub(r"\\(.)", r"\1", "\n".join(lines))
    return shown + "\n" + "\n".join(html.unescape(h.proto.body) for h in at.get("html"))


@pytest.fixture
def demo_ws(demo_run, monkeypatch) -> Path:
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(demo_run.parent.parent))
    return demo_run


def test_empty_workspace_explains_to_train_first(workspace, predictions_page):
    at = predictions_page()
    assert any("No finished training" in i.value for i in at.info)
    assert at.get("page_link")
    assert not at.get("plotly_chart")


def test_demo_run_shows_summary_confusion_and_grid(demo_ws, predictions_page):
    frame = pd.read_csv(demo_ws / "predictions.csv")
    at = predictions_page()
    assert at.selectbox(key="pred_run").value == demo_ws.name
    assert at.metric[0].label == "Validation accuracy" and at.metric[0].value.endswith("%")
    assert any("exactly what the app predicted" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 1
    val = frame[frame["split"] == "val"]
    assert n_images(at) == min(24, len(val)) > 0
    shown = texts(at)
    assert all(label in shown for label in val["predicted"].unique())
    assert Path(val.sort_values("confidence")["path"].iloc[0]).name in shown  # least sure first by default
    assert at.get("download_button")
    at.selectbox(key="pred_page_size").set_value(12).run()
    pages = at.get("pagination")[0]
    assert pages.num_pages == -(-len(val) // 12) >= 2
    pages.set_value(pages.num_pages).run()
    assert n_images(at) == len(val) - 12 * (pages.num_pages - 1)

    wrong = int((val["label"] != val["predicted"]).sum())
    at.segmented_control(key="pred_outcome").set_value("wrong").run()
    assert not at.exception
    assert n_images(at) == min(24, wrong)
    if not wrong:
        assert any("No photo matches" in i.value for i in at.info)


def test_choosing_a_confusion_cell_filters_the_grid(demo_ws, predictions_page):
    frame = pd.read_csv(demo_ws / "predictions.csv")
    val = frame[frame["split"] == "val"]
    cls = val["label"].value_counts().index[0]
    at = predictions_page()
    at.selectbox(key="pred_true").set_value(cls).run()
    at.selectbox(key="pred_said").set_value(cls).run()
    assert not at.exception
    assert n_images(at) == int(((val["label"] == cls) & (val["predicted"] == cls)).sum()) > 0
    other = next(c for c in sorted(val["label"].unique()) if c != cls and
                 not ((val["label"] == cls) & (val["predicted"] == c)).any())
    at.selectbox(key="pred_said").set_value(other).run()
    assert n_images(at) == 0
    assert any("No photo matches" in i.value for i in at.info)


def test_clickable_matrix_maps_a_clicked_point_to_its_cell():
    classes = ["cat", "dog", "fox"]
    matrix = [[3, 1, 0], [0, 4, 2], [1, 0, 5]]
    fig = clickable_confusion(matrix, classes)
    cells = [t for t in fig.data if t.type == "scatter"][0]
    assert len(cells.customdata) == 9
    # The frontend sends back the clicked marker with its customdata ([true, predicted]).
    index = list(cells.x).index("fox") + 3  # row "dog", column "fox"
    assert (cells.y[index], cells.x[index]) == ("dog", "fox")
    point = {"curve_number": 1, "point_number": index, "x": "fox", "y": "dog",
             "customdata": list(cells.customdata[index])}
    assert cell_from_selection({"points": [point], "point_indices": [index], "box": []}, classes) == ("dog", "fox")
    assert cell_from_selection({"points": [], "point_indices": [], "box": []}, classes) is None
    assert "2 images (wrong)" in cells.hovertext[index]


def test_long_class_names_are_cut_on_the_matrix_axes_and_whole_in_the_table():
    """Issue 12: a long class name takes no room from the matrix's cells (cut with an ellipsis on the axes, whole
    in the hover text), and the per-class table keeps it whole for its tooltip."""
    long = "a_really_long_class_name_that_goes_on"
    classes = ["cat", long]
    fig = clickable_confusion([[2, 1], [0, 3]], classes)
    assert list(fig.layout.xaxis.tickvals) == classes and list(fig.layout.yaxis.tickvals) == classes
    cut = fig.layout.xaxis.ticktext[1]
    assert cut.endswith("…") and len(cut) == AXIS_NAME_CHARS and long.startswith(cut[:-1])
    assert fig.layout.xaxis.ticktext[0] == "cat" == axis_name("cat")
    cells = [t for t in fig.data if t.type == "scatter"][0]
    assert any(long in text for text in cells.hovertext)
    rows = per_class_rows({"cat": {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3},
                           long: {"precision": 0.75, "recall": 1.0, "f1": 0.8571, "support": 3}})
    assert rows == [("cat", ["100%", "67%", "0.80", "3"]), (long, ["75%", "100%", "0.86", "3"])]


def test_filters_and_confusion_from_predictions(tmp_path):
    # Classes named "1" and "01" must come back from predictions.csv as those texts, not the number 1.
    Run(tmp_path).write_predictions(pd.DataFrame({
        "path": ["a", "b", "c", "d", "e"], "split": ["val", "val", "val", "test", "val"],
        "label": ["1", "1", "2", "2", "01"], "predicted": ["1", "2", "2", "1", "1"],
        "confidence": [0.9, 0.6, 0.7, 0.8, 0.5], "margin": [0.8, 0.2, 0.4, 0.6, 0.1],
        "correct": [True, False, True, False, True]}))
    frame = Run(tmp_path).predictions()
    assert frame["label"].tolist() == ["1", "1", "2", "2", "01"] and not frame["correct"].iloc[4]
    frame = frame.iloc[:4]
    assert frame_confusion(frame[frame["split"] == "val"], ["1", "2"]) == [[1, 1], [0, 1]]
    assert filter_predictions(frame, "val")["path"].tolist() == ["b", "c", "a"]
    assert filter_predictions(frame, "val", sort="most sure first")["path"].tolist() == ["a", "c", "b"]
    assert filter_predictions(frame, "val", outcome="wrong")["path"].tolist() == ["b"]
    assert filter_predictions(frame, "val", true="1", said="1")["path"].tolist() == ["a"]
    assert filter_predictions(frame, "test", said=ALL)["path"].tolist() == ["d"]


def test_moved_files_and_test_split_do_not_break_the_page(run_copy, predictions_page):
    """Images deleted since training show as "file gone"; a run with test photos gets a selector."""
    frame = pd.read_csv(run_copy / "predictions.csv")
    val_rows = frame.index[frame["split"] == "val"]
    frame.loc[val_rows[0], "path"] = str(run_copy / "gone" / "missing.jpg")
    frame.loc[val_rows[-3:], "split"] = "test"
    frame.to_csv(run_copy / "predictions.csv", index=False)
    at = predictions_page()
    assert any("file gone" in m.value for m in at.markdown)
    assert n_images(at) == min(24, len(val_rows) - 3) - 1
    at.segmented_control(key="pred_split").set_value("test").run()
    assert not at.exception
    assert n_images(at) == 3


def test_uploaded_photos_and_zip_are_predicted(demo_ws, demo_dataset, predictions_page):
    classes = (demo_ws / "labels.json").read_text()
    fish = sorted((demo_dataset / "fish").glob("*.jpg"))[:2]
    tool = sorted((demo_dataset / "tools").glob("*.jpg"))[0]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in fish:
            zf.write(path, f"new/{path.name}")
        zf.writestr("__MACOSX/._x.jpg", b"litter")
        zf.writestr("notes.txt", b"not an image")
    at = predictions_page()
    at.file_uploader(key="pred_uploads").set_value([
        (tool.name, tool.read_bytes(), "image/jpeg"),
        ("photos.zip", archive.getvalue(), "application/zip"),
        ("broken.png", b"not really a png", "image/png")]).run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "file" in df.value.columns)
    assert table["file"].tolist() == [tool.name, "photos.zip/new/" + fish[0].name, "photos.zip/new/" + fish[1].name,
                                      "broken.png"]
    readable = table.dropna(subset=["predicted"])
    assert len(readable) == 3 and all(p in classes for p in readable["predicted"])
    prob_cols = [c for c in table.columns if c.startswith("p_")]
    assert (readable[prob_cols].sum(axis=1) - 1).abs().max() < 1e-4
    assert (readable["confidence"] == readable[prob_cols].max(axis=1)).all()
    assert table.loc[3, "problem"]  # the broken file is reported, not a crash
    assert at.get("download_button")


def test_tflite_is_offered_only_when_it_matches_the_model(run_copy, predictions_page):
    """A model.tflite older than model.keras (the run was retrained) is not offered; a current one is.
    (The conversion itself is tested in test_training.py: 30+ s, too slow to repeat here.)"""
    import os

    tflite = run_copy / "model.tflite"
    tflite.write_bytes(b"stand-in")
    keras_mtime = (run_copy / "model.keras").stat().st_mtime
    os.utime(tflite, (keras_mtime - 60, keras_mtime - 60))
    at = predictions_page()
    keys = {b.key for b in at.get("download_button")}
    assert "pred_dl_tflite" not in keys and {"pred_dl_csv", "pred_dl_model", "pred_dl_labels"} <= keys
    assert at.button(key="pred_make_tflite")
    os.utime(tflite, (keras_mtime + 60, keras_mtime + 60))
    at.run()
    assert "pred_dl_tflite" in {b.key for b in at.get("download_button")}


def test_each_conversion_is_offered_with_its_check_and_a_snippet(run_copy, predictions_page):
    """Issue 13.5: a current conversion is downloadable next to its check (exports.json) and how to use it; one not
    made yet has a Make button. (Real conversions: tests/test_exports.py.)"""
    run = Run(run_copy)
    (run_copy / Run.ONNX).write_bytes(b"stand-in")
    run.record_export("onnx", {"format": "onnx", "file": Run.ONNX, "size_bytes": 14_800_000,
                               "keras_size_bytes": 15_500_000, "n_images": 25, "max_abs_diff": 6e-7,
                               "same_top1": 1.0, "accuracy": 1.0, "app_accuracy": 1.0})
    (run_copy / Run.TFLITE_INT8).write_bytes(b"stand-in")
    run.record_export("tflite-int8", {"format": "tflite-int8", "file": Run.TFLITE_INT8, "size_bytes": 4_300_000,
                                      "keras_size_bytes": 15_500_000, "n_images": 25, "max_abs_diff": 0.3,
                                      "same_top1": 0.96, "accuracy": 0.96, "app_accuracy": 1.0})
    at = predictions_page()
    keys = {b.key for b in at.get("download_button")}
    assert {"pred_dl_onnx", "pred_dl_tflite_int8"} <= keys and "pred_dl_tflite" not in keys
    assert at.button(key="pred_make_tflite")
    assert any("4.3 MB" in w.value and "96%" in w.value and "accuracy 96.0% (the app: 100.0%)" in w.value
               for w in at.warning)
    assert any("14.8 MB" in s.value and "100%" in s.value for s in at.success)
    codes = [c.value for c in at.code]
    assert any("onnxruntime.InferenceSession(\"model.onnx\")" in c and "(224, 224)" in c for c in codes)
    assert any("model-int8.tflite" in c and "np.uint8" in c for c in codes)


def test_the_web_page_is_offered_with_how_to_open_it(run_copy, predictions_page):
    """Issue 13.5: the web page (model.html) has a Make button, then its download with one line on how to use it
    (open it in a browser) and its check, which says what was run. (The real export, and the page in Chromium:
    tests/test_export_web.py.)"""
    at = predictions_page()
    assert at.button(key="pred_make_web") and "pred_dl_web" not in {b.key for b in at.get("download_button")}
    (run_copy / Run.WEB).write_text("<!DOCTYPE html><title>stand-in</title>")
    Run(run_copy).record_export("web", {
        "format": "web", "file": Run.WEB, "size_bytes": 23_200_000, "keras_size_bytes": 15_500_000, "n_images": 23,
        "max_abs_diff": 9.3e-7, "same_top1": 1.0, "accuracy": 1.0, "app_accuracy": 1.0,
        "runtime": "onnxruntime-web 1.30.0", "checked_with": "onnxruntime"})
    at.run()
    assert "pred_dl_web" in {b.key for b in at.get("download_button")}
    assert any("any browser" in c.value and "offline" in c.value for c in at.caption)
    assert any("23.2 MB" in s.value and "the ONNX model inside the page, run by ONNX Runtime" in s.value
               for s in at.success)


def test_fix_a_photo_from_a_confusion_cell_then_retrain(run_copy, demo_run, demo_dataset, predictions_page):
    """Issue 4.3: a confusion cell's photo is relabelled right in the grid, then Retrain reuses cached features."""
    import json
    import time

    from core.runs import get_run, list_runs

    ws = run_copy.parent.parent
    shutil.copytree(demo_run.parent.parent / "cache", ws / "cache")  # the demo's cached features come along
    first = Run(run_copy).predictions()
    true_class = first[first["split"] == "val"]["label"].iloc[0]
    at = predictions_page(pred_true=true_class, pred_said=true_class)
    copy_buttons = [b for b in at.button if b.key and b.key.endswith("_copy")]
    assert copy_buttons, "each photo of a chosen cell offers a fix (the demo first needs an editable copy)"
    copy_buttons[0].click().run()
    assert not at.exception
    selects = [s for s in at.selectbox if s.key and s.key.startswith("fix_") and s.key.endswith("_class")]
    assert selects
    other = next(c for c in selects[0].options if c != true_class)
    selects[0].set_value(other).run()
    move = next(b for b in at.button if b.key == selects[0].key.replace("_class", "_move"))
    move.click().run()
    assert not at.exception
    copies = [p for p in (ws / "datasets").iterdir() if p.is_dir()]
    assert len(copies) == 1
    assert len(list((copies[0] / other).glob("*"))) == len(list((demo_dataset / other).glob("*"))) + 1

    at.button(key="pred_retrain").click().run()
    assert not at.exception
    new_id = at.session_state["pred_retrain_started"]
    new = get_run(new_id)
    deadline = time.time() + 240
    while new.status().state in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    assert new.status().state == "done", new.log_tail()
    metrics = json.loads(new.file("metrics.json").read_text())
    assert metrics["n_extracted"] == 0  # a moved photo keeps its content: nothing re-extracted
    assert new.config().data == str(copies[0]) and len(list_runs()) == 2
    at.run()  # the retraining's note: its result, and a button to show it
    assert not at.exception
    # Before/after on the same validation photos: the relabelled one stayed in validation (its split follows its
    # content), and the old model is judged by its corrected label there.
    n_val = int((first["split"] == "val").sum())
    assert metrics["n_val"] == n_val
    assert any("Retrained in" in m.value and f"on the same {n_val} photos, 1 of them relabelled" in m.value
               for m in at.success), [m.value for m in at.success]
    at.button(key="pred_retrain_show").click().run()
    assert not at.exception
    assert at.selectbox(key="pred_run").value == new_id
    assert "pred_retrain_started" not in at.session_state and not any("Retrained in" in m.value for m in at.success)


def test_cross_validated_accuracy_and_the_suspicious_labels_queue(run_copy, predictions_page):
    """Issue 11.5/11.6: a small dataset shows its cross-validated accuracy beside the split's, and a queue of the
    photos whose labels the cross-validated head doubts, each fix preset to the class it believes."""
    run = Run(run_copy)
    metrics = run.metrics()
    cv = metrics["cross_validation"]
    assert cv["n_photos"] == metrics["n_train"] + metrics["n_val"] and cv["k"] == 5
    oof = run.oof()
    classes = metrics["classes"]
    # Make one photo look mislabelled: its cross-validated probabilities confidently say another class.
    row = oof.index[0]
    other = next(c for c in classes if c != oof.loc[row, "label"])
    for c in classes:
        oof.loc[row, f"p_{c}"] = 0.97 if c == other else 0.01
    run.write_oof(oof["path"].tolist(), oof["label"].tolist(), oof[[f"p_{c}" for c in classes]].to_numpy(),
                  classes)
    at = predictions_page()
    assert not at.exception
    shown = next(m for m in at.metric if m.label == "Cross-validated accuracy")
    assert shown.value.startswith(f"{cv['accuracy_mean']:.1%}")
    assert "Check these labels first" in texts(at)
    assert any(img.captions and img.captions[0].startswith("check this label") for img in at.image)
    assert f"looks like **{other}**" in texts(at)
    assert any(b.key and b.key.startswith("suspect_") and b.key.endswith("_copy") for b in at.button)
