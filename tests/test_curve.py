"""How many photos do I need: the learning curve from cached features (pure parts, a synthetic dataset, the demo
with the real EfficientNet-Lite0 features, the command line)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.__main__ import main
from core.curve import (
    CurveError,
    CurveSettings,
    dataset_curve,
    draw_indices,
    enough_shots,
    learning_curve,
    parse_shots,
    shot_levels,
)


def test_levels_stop_below_the_largest_class_and_end_with_all():
    assert shot_levels([1, 2, 5, 10, 20], [31, 24, 20, 22]) == [1, 2, 5, 10, 20, 31]
    assert shot_levels([20, 1, 5, 5, 40], [8, 12]) == [1, 5, 12]


def test_a_draw_takes_k_photos_of_each_class_or_all_of_a_small_one():
    y = np.array([0] * 10 + [1] * 3 + [2] * 6)
    idx = draw_indices(y, 4, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [4, 3, 4]
    assert len(set(idx.tolist())) == len(idx)
    again = draw_indices(y, 4, np.random.default_rng(0))
    assert idx.tolist() == again.tolist()  # seeded
    assert idx.tolist() != draw_indices(y, 4, np.random.default_rng(1)).tolist()


def test_shots_are_parsed_and_bad_ones_refused():
    assert parse_shots("1,2, 5,10") == (1, 2, 5, 10)
    for bad in ("", "a,b", "0,1", "-1"):
        with pytest.raises(CurveError):
            parse_shots(bad)
    with pytest.raises(CurveError):
        CurveSettings(draws=0)


def test_enough_is_the_fewest_photos_within_two_points_of_the_best():
    rows = [{"shots": 1, "mean": 0.6}, {"shots": 2, "mean": 0.8}, {"shots": 5, "mean": 0.93},
            {"shots": 10, "mean": 0.95}, {"shots": 20, "mean": 0.94}]
    assert enough_shots(rows) == 5
    assert enough_shots(rows, points=0.0) == 10
    assert enough_shots([]) is None


def blobs(n_per_class: int, n_classes: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors around one random centre per class: few photos are ambiguous, many are not."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[y] + rng.normal(0, noise, (len(y), dim))).astype(np.float32), y


def test_the_curve_on_separable_features_is_seeded_and_spread_is_honest():
    x, y = blobs(12, 3, 24, 1.6, seed=1)
    xv, yv = blobs(20, 3, 24, 1.6, seed=2)
    settings = CurveSettings(shots=(1, 3), draws=4, seed=0, dense_units=32)
    rows = learning_curve(x, y, xv, yv, 3, settings)
    assert [r["shots"] for r in rows] == [1, 3, 12]
    assert [r["all"] for r in rows] == [False, False, True]
    assert [r["n_train"] for r in rows] == [3, 9, 36]
    assert all(r["n_val"] == 60 and r["draws"] == 4 for r in rows)
    assert all(0 <= r["min"] <= r["mean"] <= r["max"] <= 1 for r in rows)
    assert rows[0]["mean"] < rows[-1]["mean"]
    assert learning_curve(x, y, xv, yv, 3, settings) == rows  # the same seed, the same curve
    assert learning_curve(x, y, xv, yv, 3, CurveSettings(shots=(1, 3), draws=4, seed=5, dense_units=32)) != rows


def test_two_classes_use_the_sigmoid_head():
    x, y = blobs(10, 2, 16, 1.0, seed=1)
    xv, yv = blobs(15, 2, 16, 1.0, seed=2)
    rows = learning_curve(x, y, xv, yv, 2, CurveSettings(shots=(2,), draws=2, dense_units=16))
    assert [r["shots"] for r in rows] == [2, 10] and rows[-1]["mean"] > 0.8


def test_no_validation_photos_is_refused():
    x, y = blobs(5, 2, 8, 1.0, seed=1)
    with pytest.raises(CurveError, match="validation"):
        learning_curve(x, y, x[:0], y[:0], 2)


@pytest.fixture
def demo_cache(demo_run, monkeypatch):
    """The demo run's workspace: its feature cache holds every demo photo (the real EfficientNet-Lite0)."""
    ws = demo_run.parent.parent
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))
    return ws


def _demo_split(demo_dataset) -> tuple[int, int, int]:
    """The app's split of the demo (seed 0): training photos, validation photos, the largest class's training photos."""
    from collections import Counter

    from core.datasets import scan_dataset

    ds = scan_dataset(demo_dataset)
    return len(ds.split("train")), len(ds.split("val")), max(Counter(it.label for it in ds.split("train")).values())


def test_the_demo_curve_rises_from_one_photo_to_all_without_the_network(demo_cache, demo_dataset):
    result = dataset_curve(demo_dataset, "efficientnet_lite0", CurveSettings(shots=(1, 2, 5, 10, 20), draws=5))
    assert result.n_extracted == 0  # every feature came from the cache
    rows = result.rows
    n_train, n_val, largest = _demo_split(demo_dataset)
    assert [r["shots"] for r in rows] == [1, 2, 5, 10, 20, largest]  # "all": the largest class's training photos
    assert rows[-1]["all"] and rows[-1]["n_train"] == n_train
    assert all(r["n_val"] == n_val and r["draws"] == 5 for r in rows)
    assert rows[0]["n_train"] == 4
    # It rises: one photo per class is clearly worse than all of them, which are nearly perfect on the demo.
    assert rows[0]["mean"] + 0.05 < rows[-1]["mean"]
    assert rows[-1]["mean"] >= 0.9
    assert rows[0]["min"] < rows[0]["max"]  # one photo per class: which photo matters
    enough = enough_shots(rows)
    assert enough is not None and 1 < enough <= largest


def test_the_command_line_prints_the_curve_as_json(demo_cache, demo_dataset, capsys):
    assert main(["curve", str(demo_dataset), "--shots", "1,5", "--draws", "2", "--seed", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    _, n_val, largest = _demo_split(demo_dataset)
    assert [r["shots"] for r in rows] == [1, 5, largest]
    for row in rows:
        assert {"shots", "mean", "min", "max", "n_val"} <= set(row)
        assert row["n_val"] == n_val and 0 <= row["min"] <= row["mean"] <= row["max"] <= 1


def test_the_command_line_refuses_bad_shots_in_one_line(demo_cache, demo_dataset, capsys):
    assert main(["curve", str(demo_dataset), "--shots", "one,two"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shots") and "\n" not in err
