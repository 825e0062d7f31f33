"""The photo map on real images through the real EfficientNet-Lite0 features: layout, unlabelled photos,
suspicious labels, a run's mistakes, and a stable layout across relabelling."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import labeling, photo_map
from core.backbones import DEFAULT_BACKBONE

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


@pytest.fixture
def mapped_dataset(workspace, make_dataset, make_image):
    root = make_dataset(workspace / "datasets" / "colours", COLOURS, per_class=8)  # editable: in the workspace
    pool = labeling.pool_folder(root)
    for i in range(3):
        make_image(pool / f"new_red_{i}.png", COLOURS["red"], seed=500 + i)
    make_image(root / "green" / "filed_wrong.png", COLOURS["red"], seed=900)  # a red photo under green
    return root


def test_map_places_photos_by_content_and_flags_a_wrong_label(mapped_dataset, tmp_path):
    cache = tmp_path / "cache"
    found = photo_map.dataset_map(mapped_dataset, DEFAULT_BACKBONE, cache)
    frame = found.frame
    assert len(frame) == 3 * 8 + 3 + 1 and found.n_extracted == len(frame) and not found.failed
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()
    unlabelled = frame[frame["label"].isna()]
    assert sorted(p.rsplit("/", 1)[1] for p in unlabelled["path"]) == [f"new_red_{i}.png" for i in range(3)]
    # The suspicious label is the red photo filed under green, and it is the only one.
    doubted = frame.dropna(subset=["doubt"])
    assert doubted["path"].str.endswith("filed_wrong.png").tolist() == [True]
    assert doubted["doubt"].tolist() == ["red"]
    # On the map, each new red photo's nearest labelled dot is a red one: a user can label the cluster at once.
    labelled = frame.dropna(subset=["label"])
    labelled = labelled[~labelled["path"].str.endswith("filed_wrong.png")]
    for _, dot in unlabelled.iterrows():
        distance = np.hypot(labelled["x"] - dot["x"], labelled["y"] - dot["y"])
        assert labelled.loc[distance.idxmin(), "label"] == "red"
    # Classes form their own regions: each dot's nearest neighbour mostly shares its label.
    xy = labelled[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    same = labelled["label"].to_numpy()[d.argmin(axis=1)] == labelled["label"].to_numpy()
    assert same.mean() >= 0.9


def test_a_runs_mistakes_are_marked_and_relabelling_keeps_the_layout(mapped_dataset, tmp_path):
    cache = tmp_path / "cache"
    first = photo_map.dataset_map(mapped_dataset, DEFAULT_BACKBONE, cache).frame
    blue = str((mapped_dataset / "blue" / "img_0.png").resolve())
    green = str((mapped_dataset / "green" / "img_1.png").resolve())
    predictions = pd.DataFrame({"path": [blue, green], "split": "val", "label": ["blue", "green"],
                                "predicted": ["blue", "red"], "confidence": [0.9, 0.6], "correct": [True, False]})
    # Fix the suspicious photo; the map is read again (features from the cache) with the run's answers.
    labeling.move_to_class(mapped_dataset, [mapped_dataset / "green" / "filed_wrong.png"], "red")
    again = photo_map.dataset_map(mapped_dataset, DEFAULT_BACKBONE, cache, predictions=predictions,
                                  prediction_root=mapped_dataset)
    assert again.n_extracted == 0  # the features are cached by content: moving a photo costs nothing
    frame = again.frame
    assert frame.loc[frame["wrong"], "path"].tolist() == [green]
    assert frame.loc[frame["path"] == blue, "predicted"].item() == "blue"
    moved = frame[frame["path"].str.endswith("filed_wrong.png")]
    assert moved["label"].item() == "red" and moved["doubt"].isna().item()
    # Same content, same place: the layout does not jump when photos are relabelled.
    np.testing.assert_allclose(frame[["x", "y"]].to_numpy(), first[["x", "y"]].to_numpy(), atol=1e-3)


def test_small_sets_use_pca_and_one_photo_is_refused(tmp_path, make_dataset):
    features = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    xy = photo_map.embed_2d(features)
    assert xy.shape == (5, 2) and np.isfinite(xy).all() and xy.std() > 0
    root = make_dataset(tmp_path / "one", {"a": (200, 0, 0)}, per_class=1)
    with pytest.raises(photo_map.MapError):
        photo_map.dataset_map(root, DEFAULT_BACKBONE, None)


def test_map_page_relabels_a_doubtful_photo_and_a_cluster_in_place(mapped_dataset, open_app_page):
    at = open_app_page("pages/7_map.py", dataset=str(mapped_dataset))
    assert at.get("plotly_chart")
    assert any("28 photos · 3 unlabelled · 0 wrong · 1 with a doubtful label" in c.value for c in at.caption)
    at.segmented_control(key="map_show").set_value("doubt").run()
    assert [c.value for c in at.caption if c.value.endswith(".png")] == ["filed\\_wrong.png"]
    assert at.selectbox(key="map_class").value == "red"  # preset to what its neighbours are
    at.button(key="map_move").click().run()
    assert not at.exception, at.exception
    assert (mapped_dataset / "red" / "filed_wrong.png").exists()
    assert labeling.can_undo(mapped_dataset) == 1  # journalled: undoable on the Label page
    # The unlabelled cluster, labelled at once.
    at.segmented_control(key="map_show").set_value("unlabelled").run()
    at.selectbox(key="map_class").set_value("red").run()
    at.button(key="map_move").click().run()
    assert not at.exception, at.exception
    assert not list(labeling.pool_folder(mapped_dataset).glob("*.png"))
    assert len(list((mapped_dataset / "red").glob("*.png"))) == 8 + 1 + 3
    assert any("0 unlabelled" in c.value and "0 with a doubtful label" in c.value for c in at.caption)
