"""Grad-CAM heatmaps from a run's own model.keras: shapes, values, and that they point at what the model uses."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from core import explain, images
from core.runs import Run


@pytest.fixture(scope="module")
def demo_val(demo_run):
    run = Run(demo_run)
    frame = run.predictions()
    return run, frame[frame["split"] == "val"].reset_index(drop=True)


def test_heatmap_has_the_photos_shape_and_the_models_answer(demo_val):
    run, val = demo_val
    labels = run.labels()
    photos = list(val["path"][:6])
    explanations = explain.explain_files(run.model_path, photos)
    for path, row, found in zip(photos, val.itertuples(), explanations):
        assert found is not None
        h, w = images.load_rgb(path, max_side=448).shape[:2]
        hh, hw = found.heatmap.shape
        assert max(hh, hw) <= explain.HEATMAP_MAX_SIDE
        assert abs(hh / hw - h / w) < 0.02, (path, (hh, hw), (h, w))  # the photo's aspect
        assert found.heatmap.dtype == np.float32
        assert found.heatmap.min() >= 0.0 and found.heatmap.max() == pytest.approx(1.0)
        assert found.heatmap.std() > 0.05  # not uniform: it points somewhere
        # The cut model replays the saved one exactly: same probabilities as the run recorded.
        recorded = np.array([getattr(row, f"p_{c}") for c in labels])
        np.testing.assert_allclose(found.probabilities, recorded, atol=1e-4)
        assert found.class_index == int(np.argmax(recorded))


def _masked_probability(explainer, photo: np.ndarray, mask: np.ndarray, class_index: int) -> float:
    covered = photo.copy()
    covered[mask] = photo.reshape(-1, 3).mean(axis=0).astype(np.uint8)  # the photo's mean colour, no new edges
    return float(explainer.probabilities(covered)[class_index])


def test_covering_the_hot_region_costs_the_class_more_than_covering_the_cold_one(demo_val):
    """The heatmap explains something: hiding the quarter of the photo it marks hottest lowers the class's
    probability more than hiding the quarter it marks coldest."""
    run, val = demo_val
    explainer = explain.explainer_for(run.model_path)
    hot_drops, cold_drops = [], []
    for path in val["path"][:12]:
        photo = images.load_rgb(path, max_side=448)
        found = explainer.explain(photo)
        heat = np.asarray(Image.fromarray(found.heatmap, "F").resize((photo.shape[1], photo.shape[0])))
        p = float(found.probabilities[found.class_index])
        hot = heat >= np.quantile(heat, 0.75)
        cold = heat <= np.quantile(heat, 0.25)
        hot_drops.append(p - _masked_probability(explainer, photo, hot, found.class_index))
        cold_drops.append(p - _masked_probability(explainer, photo, cold, found.class_index))
    hot_drops, cold_drops = np.array(hot_drops), np.array(cold_drops)
    assert hot_drops.mean() > cold_drops.mean() + 0.05, (hot_drops, cold_drops)
    assert (hot_drops >= cold_drops - 1e-3).mean() >= 0.75, (hot_drops, cold_drops)


def test_heatmaps_are_cached_per_photo_version(demo_val, tmp_path):
    run, val = demo_val
    photo = tmp_path / "copy.jpg"
    photo.write_bytes(open(val["path"][0], "rb").read())
    first = explain.explain_file(run.model_path, photo)
    assert explain.explain_file(run.model_path, photo) is first  # from the cache
    stat = photo.stat()
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed photo is a new entry
    again = explain.explain_file(run.model_path, photo)
    assert again is not first
    np.testing.assert_allclose(again.heatmap, first.heatmap, atol=1e-4)
    # Another class: its own heatmap.
    other = explain.explain_file(run.model_path, photo, class_index=(first.class_index + 1) % len(run.labels()))
    assert other.class_index != first.class_index
    # Gone or unreadable photos: None, never an exception in a grid.
    (tmp_path / "bad.jpg").write_text("not an image")
    assert explain.explain_files(run.model_path, [tmp_path / "missing.jpg", tmp_path / "bad.jpg"]) == [None, None]


def test_scratch_and_binary_models_are_explained_too(tmp_path, make_image):
    """The other model shape (the scratch convnet: a chain of Conv2D blocks) and the widened binary output."""
    from core.export import save_model
    from core.models import build_export_model, build_scratch_body
    from core.tfenv import keras

    keras.utils.set_random_seed(0)
    path = tmp_path / "model.keras"
    save_model(build_export_model(build_scratch_body(48, 2), 48, 2), path)
    photo = make_image(tmp_path / "p.png", size=(64, 40))
    found = explain.explain_file(path, photo)
    assert found.heatmap.shape == (40, 64)
    assert 0.0 <= found.heatmap.min() and found.heatmap.max() <= 1.0
    explainer = explain.explainer_for(path)
    np.testing.assert_allclose(found.probabilities, explainer.probabilities(images.load_rgb(photo)), atol=1e-5)
    assert found.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_overlay_keeps_the_photo_and_colours_the_hot_part():
    photo = np.full((30, 60, 3), 128, np.uint8)
    heat = np.zeros((15, 30), np.float32)
    heat[:, 20:] = 1.0
    drawn = np.asarray(explain.overlay(photo, heat))
    assert drawn.shape == (30, 60, 3)
    assert np.abs(drawn[:, :20].astype(int) - 128).max() < 40      # cold: the photo shows through
    hot = drawn[:, 45:].astype(int)
    assert (hot[..., 0] - hot[..., 2]).min() > 40                     # hot: tinted yellow (grey has R = B)
