"""'Retrain with my fixes' like for like: the retrain's settings, and before/after on the same photos."""
from __future__ import annotations

import numpy as np

from core.config import TrainConfig
from core.datasets import content_key
from core.evaluate import predictions_frame
from core.retraining import compare_on_same_photos, retrain_plan
from core.runs import create_run


def test_a_retrain_repeats_the_mode_backbone_and_settings(workspace, tiny_dataset, tmp_path):
    for mode in ("scratch", "bottleneck", "finetune"):
        source = create_run(TrainConfig(data=str(tiny_dataset), mode=mode, epochs=7, lr=3e-3, seed=5), tmp_path / mode)
        plan = retrain_plan(source, data=tmp_path / "copy")
        assert plan.config.mode == mode and plan.config.epochs == 7 and plan.config.lr == 3e-3
        assert plan.config.seed == 5 and plan.config.data == str(tmp_path / "copy") and not plan.differences
        assert "same settings" in plan.describe()


def test_a_finetune_from_another_run_says_it_starts_from_a_fresh_head(workspace, tiny_dataset, tmp_path):
    base = create_run(TrainConfig(data=str(tiny_dataset), mode="bottleneck"), tmp_path / "base")
    source = create_run(TrainConfig(data=str(tiny_dataset), mode="finetune", from_run=str(base.path)),
                        tmp_path / "ft")
    plan = retrain_plan(source)
    assert plan.config.mode == "finetune" and plan.config.from_run is None
    assert len(plan.differences) == 1 and "fresh head" in plan.describe()


def _write(run, paths, labels, predicted, classes, record_content=True):
    probs = np.eye(len(classes))[[classes.index(p) for p in predicted]]
    frame = predictions_frame(paths, [classes.index(label) for label in labels], probs, classes, "val")
    if record_content:
        frame["content"] = [content_key(p) for p in paths]
    run.write_predictions(frame)


def test_before_and_after_are_measured_on_the_same_photos_under_corrected_labels(workspace, tiny_dataset, tmp_path):
    classes = ["blue", "green", "red"]
    photos = sorted(tiny_dataset.rglob("*.png"))
    a, b, c, d = photos[0], photos[8], photos[9], photos[16]  # blue, green, green, red
    before = create_run(TrainConfig(data=str(tiny_dataset)), tmp_path / "before")
    # The old run validated on a, b, c; b was mislabelled "red" and the old model said "green" (it was right).
    _write(before, [a, b, c], ["blue", "red", "green"], ["blue", "green", "red"], classes)
    moved = tiny_dataset / "green" / "renamed on the move.png"
    b.rename(moved)  # the fix: back to green (a rename on the way, as when the name is taken)
    after = create_run(TrainConfig(data=str(tiny_dataset)), tmp_path / "after")
    _write(after, [a, moved, c, d], ["blue", "green", "green", "red"], ["blue", "green", "green", "red"], classes)
    same = compare_on_same_photos(before, after)
    assert same.n_photos == 3 and same.n_relabelled == 1 and same.n_only_after == 1 and same.n_only_before == 0
    assert same.before_accuracy == 2 / 3 and same.after_accuracy == 1.0  # b judged as green both times
    assert "same 3 photos" in same.sentence()


def test_runs_without_recorded_content_are_keyed_by_their_files(workspace, tiny_dataset, tmp_path):
    classes = ["blue", "green", "red"]
    photos = sorted(tiny_dataset.rglob("*.png"))[:2]
    before, after = (create_run(TrainConfig(data=str(tiny_dataset)), tmp_path / n) for n in ("b", "a"))
    _write(before, photos, ["blue", "blue"], ["blue", "green"], classes, record_content=False)
    _write(after, photos, ["blue", "blue"], ["blue", "blue"], classes, record_content=False)
    same = compare_on_same_photos(before, after)
    assert (same.n_photos, same.before_accuracy, same.after_accuracy) == (2, 0.5, 1.0)
