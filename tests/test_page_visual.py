"""AppTests of the visual features on a real finished run (real EfficientNet-Lite0): "try it" where the run
finishes (a dropped photo, a camera shot) and heatmaps in the Predictions grid, wrong predictions first."""
from __future__ import annotations

import pandas as pd

from core import explain

WRONG, RIGHT = "✗", "✓"  # how a card's verdict line starts (ui.layout.name_line: HTML)


def _verdicts(at) -> list[str]:
    """The grid's cards, in order: ✗ for a wrong answer, ✓ for a right one."""
    bodies = [element.proto.body for element in at.get("html")]
    return [body.split("<b>", 1)[1][0] for body in bodies if "<b>✓ " in body or "<b>✗ " in body]


def _captions(at) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def _progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_try_a_photo_where_the_run_finished(run_copy, demo_dataset, open_app_page):
    at = open_app_page("pages/4_training.py", watch_run=run_copy.name)
    assert any("Finished" in s.value for s in at.subheader)
    tool = sorted((demo_dataset / "tools").glob("*.jpg"))[0]
    at.file_uploader(key="train_try_files").set_value([(tool.name, tool.read_bytes(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    bars = _progress_texts(at)
    assert len(bars) == 3 and bars[0].startswith("tools ")  # the top class first, with its share
    assert any(c.startswith("Where it looked for “tools”") for c in _captions(at))


def test_try_a_camera_shot_on_the_predictions_page(run_copy, demo_dataset, open_app_page):
    at = open_app_page("pages/5_predictions.py")
    at.segmented_control(key="pred_try_source").set_value("camera").run()
    fish = sorted((demo_dataset / "fish").glob("*.jpg"))[0]
    at.camera_input(key="pred_try_camera").set_value(("image.jpg", fish.read_bytes(), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert _progress_texts(at)[0].startswith("fish ")
    at.toggle(key="pred_try_heat").set_value(False).run()  # the plain photo: no heatmap caption
    assert not any(c.startswith("Where it looked") for c in _captions(at))


def test_grid_heatmaps_show_the_wrong_predictions_first(run_copy, open_app_page):
    # Make two confident answers wrong (the demo run gets every validation photo right): relabel them in the
    # results, so with "least sure first" they would come last.
    frame = pd.read_csv(run_copy / "predictions.csv")
    val = frame[frame["split"] == "val"].sort_values("confidence")
    flipped = val.index[-2:]
    frame.loc[flipped, "label"] = ["monuments" if p != "monuments" else "fish" for p in frame.loc[flipped, "predicted"]]
    frame.loc[flipped, "correct"] = False
    frame.to_csv(run_copy / "predictions.csv", index=False)
    at = open_app_page("pages/5_predictions.py")
    marks = _verdicts(at)
    assert marks[:2] == [RIGHT, RIGHT]  # without heatmaps: the chosen order only (least sure first)
    at.toggle(key="pred_heat").set_value(True).run()
    assert not at.exception, at.exception
    marks = _verdicts(at)
    assert marks[:2] == [WRONG, WRONG] and set(marks[2:]) == {RIGHT}
    # The page's photos were explained by the run's own model (the heatmap cache holds them).
    model = str(run_copy / "model.keras")
    cached = {key[2] for key in explain._heatmaps if key[0] == model}
    assert set(frame.loc[flipped, "path"]) <= cached
    assert len(cached) >= min(24, len(val))
