"""Tests for core.augment: settings validation/JSON, the preview, and the augmenter inside a saved model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.augment import FIELD_HELP, AugmentConfig, AugmentError, build_augmenter, preview
from core.tfenv import keras, tf

# Everything off: the base for "only this one setting" configs.
ALL_OFF = dict(rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, shear_range=0.0,
               zoom_range=0.0, horizontal_flip=False, vertical_flip=False, brightness_range=0.0,
               contrast_range=0.0)


def only(**settings) -> AugmentConfig:
    return AugmentConfig(**{**ALL_OFF, **settings})


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 40x56 RGB picture with no symmetry: a gradient plus an off-centre block, so flips and turns show."""
    h, w = 40, 56
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], axis=-1).astype(np.uint8)
    img[5:15, 8:20] = (250, 20, 20)
    return img


def resized(img: np.ndarray, size: int) -> np.ndarray:
    x = tf.image.resize(img.astype(np.float32), (size, size), method="bilinear", antialias=True)
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)


# ---- settings ----------------------------------------------------------------------------------------------

def test_defaults_are_the_recipe():
    c = AugmentConfig()
    assert (c.rotation_range, c.width_shift_range, c.height_shift_range, c.shear_range, c.zoom_range) == (
        40.0, 0.2, 0.2, 0.2, 0.2)
    assert c.horizontal_flip and not c.vertical_flip and c.fill_mode == "nearest" and c.enabled
    assert not c.is_identity()


def test_json_round_trip(tmp_path):
    c = AugmentConfig(rotation_range=15, shear_range=0.1, vertical_flip=True, brightness_range=0.3,
                      contrast_range=0.25, fill_mode="reflect", enabled=False)
    assert AugmentConfig.from_json(c.to_json()) == c
    path = tmp_path / "aug.json"
    c.to_json(path)
    assert AugmentConfig.from_json(path) == c
    assert AugmentConfig.from_dict(c.to_dict()) == c
    assert isinstance(c.rotation_range, float)  # ints are normalised, so JSON 15 and 15.0 agree


def test_missing_keys_take_defaults():
    c = AugmentConfig.from_dict({"rotation_range": 10})
    assert c == dataclasses.replace(AugmentConfig(), rotation_range=10.0)
    assert AugmentConfig.from_json("{}") == AugmentConfig()


@pytest.mark.parametrize("field, value", [
    ("rotation_range", -5), ("rotation_range", 181), ("width_shift_range", 1.5), ("shear_range", 2.0),
    ("zoom_range", -0.1), ("brightness_range", float("nan")), ("contrast_range", "0.2"),
    ("fill_mode", "foo"), ("horizontal_flip", "yes"), ("enabled", 1), ("rotation_range", True),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(AugmentError, match=field) as info:
        AugmentConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_bad_value_from_dict_and_message_has_range():
    with pytest.raises(AugmentError) as info:
        AugmentConfig.from_dict({"rotation_range": -1})
    msg = str(info.value)
    assert "rotation_range" in msg and "180" in msg and "-1" in msg


def test_unknown_key_is_named():
    with pytest.raises(AugmentError, match="rotaton_range"):
        AugmentConfig.from_dict({"rotaton_range": 10})
    with pytest.raises(AugmentError, match="bogus"):
        AugmentConfig.from_json('{"bogus": 1, "zoom_range": 0.1}')


def test_bad_json_text():
    with pytest.raises(AugmentError):
        AugmentConfig.from_json("{not json")
    with pytest.raises(AugmentError):
        AugmentConfig.from_json("[1, 2]")


def test_field_help_covers_every_field_and_matches_validation():
    names = {f.name for f in dataclasses.fields(AugmentConfig)}
    assert set(FIELD_HELP) == names
    for name, (text, lo, hi) in FIELD_HELP.items():
        assert text.strip()
        if lo is None:
            continue
        AugmentConfig(**{name: lo})
        AugmentConfig(**{name: hi})  # the slider's ends are accepted...
        with pytest.raises(AugmentError, match=name):
            AugmentConfig(**{name: hi + 0.01})  # ...and just past them is not


def test_is_identity():
    assert AugmentConfig(enabled=False).is_identity()
    assert only().is_identity()
    assert only(fill_mode="wrap").is_identity()
    assert not only(horizontal_flip=True).is_identity()
    assert not only(contrast_range=0.1).is_identity()


# ---- preview -----------------------------------------------------------------------------------------------

def test_preview_shape_dtype(image):
    out = preview(image, AugmentConfig(), n=5, seed=1, size=32)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    out = preview(image, AugmentConfig(), n=3, seed=1)  # no size: the image's own size
    assert out.shape == (3, 40, 56, 3) and out.dtype == np.uint8


def test_preview_same_seed_same_output_different_seed_differs(image):
    cfg = AugmentConfig(brightness_range=0.2, contrast_range=0.2, vertical_flip=True)
    a = preview(image, cfg, n=6, seed=7, size=48)
    b = preview(image, cfg, n=6, seed=7, size=48)  # a second call in the same process
    c = preview(image, cfg, n=6, seed=8, size=48)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({v.tobytes() for v in a}) > 1  # the n versions differ from each other too


@pytest.mark.parametrize("cfg", [AugmentConfig(enabled=False), only(), only(fill_mode="constant")],
                         ids=["disabled", "all-zero", "all-zero-constant"])
def test_identity_config_returns_resized_input(image, cfg):
    out = preview(image, cfg, n=3, seed=0, size=32)
    want = resized(image, 32)
    for v in out:
        assert np.abs(v.astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(preview(image, cfg, n=2, seed=0)[0], image)


def test_horizontal_flip_only_gives_input_or_mirror(image):
    out = preview(image, only(horizontal_flip=True), n=16, seed=3)
    mirror = image[:, ::-1]
    is_same = [np.array_equal(v, image) for v in out]
    is_mirror = [np.array_equal(v, mirror) for v in out]
    assert all(s or m for s, m in zip(is_same, is_mirror))
    assert any(is_same) and any(is_mirror)


def test_vertical_flip_only_gives_input_or_upside_down(image):
    out = preview(image, only(vertical_flip=True), n=16, seed=3)
    assert all(np.array_equal(v, image) or np.array_equal(v, image[::-1]) for v in out)


def test_rotation_changes_pixels(image):
    out = preview(image, only(rotation_range=45), n=4, seed=0, size=40)
    base = resized(image, 40)
    assert all(np.abs(v.astype(int) - base.astype(int)).mean() > 1 for v in out)


@pytest.mark.parametrize("change", [
    dict(rotation_range=90), dict(zoom_range=0.5), dict(shear_range=0.5), dict(width_shift_range=0.5),
    dict(fill_mode="constant"), dict(brightness_range=0.5), dict(horizontal_flip=False),
])
def test_changing_a_setting_changes_the_preview(image, change):
    base = AugmentConfig()
    a = preview(image, base, n=4, seed=2, size=40)
    b = preview(image, dataclasses.replace(base, **change), n=4, seed=2, size=40)
    assert not np.array_equal(a, b)


def test_brightness_and_contrast_stay_in_range():
    bright = np.full((16, 16, 3), 250, np.uint8)
    cfg = only(brightness_range=1.0, contrast_range=1.0)
    x = tf.constant(np.repeat(bright[None].astype(np.float32), 8, axis=0))
    y = build_augmenter(cfg, seed=0)(x, training=True).numpy()
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 255.0


def test_preview_rejects_non_rgb():
    with pytest.raises(AugmentError):
        preview(np.zeros((8, 8), np.uint8), AugmentConfig())
    with pytest.raises(AugmentError):
        preview(np.zeros((8, 8, 3), np.uint8), AugmentConfig(), n=0)


# ---- the augmenter inside a model --------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    AugmentConfig(brightness_range=0.2, contrast_range=0.2, vertical_flip=True, fill_mode="reflect"),
    AugmentConfig(enabled=False),
], ids=["full", "identity"])
def test_saved_model_loads_with_plain_keras_and_is_identity_at_inference(tmp_path, cfg):
    aug = build_augmenter(cfg, seed=1)
    assert aug.name == "augmentation"
    inputs = keras.Input((24, 24, 3))
    x = aug(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: only built-in layers are used

    data = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-5,
                               atol=1e-4)
    loaded_aug = loaded.get_layer("augmentation")
    np.testing.assert_array_equal(loaded_aug(data, training=False).numpy(), data)
    if not cfg.is_identity():
        assert not np.array_equal(loaded_aug(data, training=True).numpy(), data)


def test_presets_are_valid_and_distinct():
    from core.augment import PRESETS, matching_preset

    configs = {name: p.config() for name, p in PRESETS.items()}
    assert len({tuple(sorted(c.to_dict().items())) for c in configs.values()}) == len(configs)
    assert configs["off"].is_identity() and not configs["natural"].is_identity()
    assert configs["natural"].shear_range == 0 and configs["from_above"].vertical_flip
    assert not configs["documents"].horizontal_flip and configs["documents"].rotation_range == 0
    assert all(matching_preset(c) == name for name, c in configs.items())
    assert matching_preset(AugmentConfig(rotation_range=3.0)) is None


def test_which_preset_suits_the_photos_scores_each_on_validation(workspace, tiny_dataset):
    from core.augment_check import check_presets

    scores = check_presets(tiny_dataset, val_split=0.25, presets=["natural", "off"], copies=1)
    assert {s.preset for s in scores} == {"natural", "off"}
    assert all(s.n_val == 4 and 0 <= s.val_accuracy <= 1 for s in scores)
    assert scores == sorted(scores, key=lambda s: (-s.val_accuracy, s.val_loss))
    assert len(list((workspace / "cache" / "features").rglob("*.npy"))) == 24 + 20  # the natural copies cached
