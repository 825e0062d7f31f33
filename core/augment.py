"""Data augmentation: the recipe's `ImageDataGenerator` options rebuilt from Keras 3 preprocessing layers.

The blog recipe ("Building powerful image classification models using very little data") augments with
`ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
zoom_range=0.2, horizontal_flip=True, fill_mode='nearest')`. `ImageDataGenerator` is gone from Keras 3, so the
same options become a `keras.Sequential` of built-in `Random*` layers that sits inside the model. Only built-in
layers are used so a saved `.keras` model loads with plain `keras.saving.load_model`, with no import of this
module.

Inference: Keras `Random*` layers are a no-op when called with `training=False`, which `fit` / `predict` /
`evaluate` arrange automatically. Beware: calling a model directly as `model(x)` with no `training` argument
DOES augment (the layers default to training=True); pass `training=False` there.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import FewShotError
from core.images import resize_tensor_for_model

if TYPE_CHECKING:  # TensorFlow loads on first use: the config alone (every page's settings) must import fast
    from core.tfenv import keras, tf

# Shear is limited to 45 degrees: RandomShear's factor (tan of the angle, see build_augmenter) must be <= 1.
MAX_SHEAR_RADIANS = 0.785
# RandomZoom refuses a zoom-in factor of -1 (it would zoom into a single point), so stop a little short.
MAX_ZOOM = 0.9
FILL_MODES = ("nearest", "reflect", "wrap", "constant")


class AugmentError(FewShotError):
    """A bad augmentation setting; the message names the field, what is allowed and what was given."""


# field -> (plain-English help for the UI, slider min, slider max); min/max are None for non-numeric fields.
FIELD_HELP: dict[str, tuple[str, float | None, float | None]] = {
    "rotation_range": ("Turn each picture by a random angle, up to this many degrees either way.", 0.0, 180.0),
    "width_shift_range": ("Slide each picture left or right by up to this fraction of its width.", 0.0, 1.0),
    "height_shift_range": ("Slide each picture up or down by up to this fraction of its height.", 0.0, 1.0),
    "shear_range": ("Slant each picture sideways, like pushing the top of a stack of cards "
                    "(angle in radians; 0.2 is about 11 degrees).", 0.0, MAX_SHEAR_RADIANS),
    "zoom_range": ("Zoom in or out at random by up to this fraction (0.2 = between 80% and 120%).", 0.0, MAX_ZOOM),
    "horizontal_flip": ("Sometimes show the mirror image (left and right swapped). Good for most photos; "
                        "bad for text or anything where left/right matters.", None, None),
    "vertical_flip": ("Sometimes turn the picture upside down. Only for things with no 'up', "
                      "like microscope or satellite images.", None, None),
    "brightness_range": ("Make pictures randomly lighter or darker by up to this fraction.", 0.0, 1.0),
    "contrast_range": ("Make pictures randomly more or less contrasty by up to this fraction.", 0.0, 1.0),
    "fill_mode": ("How to fill the empty corners left after turning or sliding: copy the nearest edge "
                  "pixels, mirror the picture, repeat it like tiles, or paint them black.", None, None),
    "enabled": ("Switch all of the above on or off. Off means training sees the pictures exactly as they are.",
                None, None),
}

_NUMERIC_FIELDS = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
                   "brightness_range", "contrast_range")
_BOOL_FIELDS = ("horizontal_flip", "vertical_flip", "enabled")


@dataclass
class AugmentConfig:
    """The recipe's ImageDataGenerator options, as Keras preprocessing layers."""
    rotation_range: float = 40.0      # degrees, 0..180
    width_shift_range: float = 0.2    # fraction of width, 0..1
    height_shift_range: float = 0.2   # fraction of height, 0..1
    shear_range: float = 0.2          # radians, as in the 2016 recipe's ImageDataGenerator; 0..0.785 (45 degrees)
    zoom_range: float = 0.2           # zoom in/out by up to this fraction, 0..0.9
    horizontal_flip: bool = True
    vertical_flip: bool = False
    brightness_range: float = 0.0     # +/- fraction of the 0..255 range, 0..1
    contrast_range: float = 0.0       # +/- fraction, 0..1
    fill_mode: str = "nearest"        # "nearest" | "reflect" | "wrap" | "constant" (black)
    enabled: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise AugmentError for the first bad field. Also normalises numbers to float (so JSON 40 == 40.0)."""
        for name in _NUMERIC_FIELDS:
            value = getattr(self, name)
            lo, hi = FIELD_HELP[name][1], FIELD_HELP[name][2]
            # bool is an int subclass: `True` for a range is almost certainly a mix-up, so refuse it.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise AugmentError(f"{name} must be a number between {lo} and {hi}, got {value!r}")
            if not lo <= value <= hi:
                raise AugmentError(f"{name} must be between {lo} and {hi}, got {value!r}")
            setattr(self, name, float(value))
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise AugmentError(f"{name} must be true or false, got {value!r}")
            setattr(self, name, bool(value))
        if self.fill_mode not in FILL_MODES:
            raise AugmentError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {self.fill_mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Return the settings as JSON text; if `path` is given, also write them there."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """Build from a dict; missing keys take their defaults, unknown keys are an error (likely a typo)."""
        if not isinstance(d, dict):
            raise AugmentError(f"augmentation settings must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise AugmentError(f"unknown augmentation setting(s): {', '.join(map(str, unknown))}; "
                               f"allowed: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str | os.PathLike) -> AugmentConfig:
        """Parse JSON text; a Path object (not a str, which is always treated as text) is read first."""
        if isinstance(text, os.PathLike):
            text = Path(text).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AugmentError(f"augmentation settings are not valid JSON: {e}") from e
        return cls.from_dict(data)

    def is_identity(self) -> bool:
        """True when augmentation would leave every image unchanged."""
        if not self.enabled:
            return True
        return (all(getattr(self, name) == 0 for name in _NUMERIC_FIELDS)
                and not self.horizontal_flip and not self.vertical_flip)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    settings: dict  # AugmentConfig fields that differ from "no change at all"

    def config(self) -> AugmentConfig:
        base = dict(rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, shear_range=0.0,
                    zoom_range=0.0, horizontal_flip=False)
        return AugmentConfig(**(base | self.settings))


# A few named starting points; "which suits my photos?" (core.augment_check) measures them on the dataset. The
# recipe's own setting (rotation 40°, shifts, shear, zoom) distorts more than most photos ever vary, and its
# heads and fine-tunes did worse than with no augmentation on the datasets measured (BENCHMARKS.md).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("natural", "Natural photos", "Small turns, shifts and zoom, mirror images; no shear.",
           dict(rotation_range=10.0, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1,
                horizontal_flip=True)),
    Preset("from_above", "Seen from above / under a microscope",
           "Any turn and both flips (no 'up' in these pictures), mirrored edges; no shear.",
           dict(rotation_range=180.0, horizontal_flip=True, vertical_flip=True, zoom_range=0.1,
                fill_mode="reflect")),
    Preset("documents", "Documents and screens", "Small shifts only: no mirror images, turns or zoom.",
           dict(width_shift_range=0.05, height_shift_range=0.05)),
    Preset("recipe", "The recipe's (strong)", "The 2016 recipe: rotation 40°, shifts and zoom 0.2, shear, mirror.",
           AugmentConfig().to_dict()),
    Preset("off", "Off", "Training sees the photos exactly as they are.", dict(enabled=False)),
)}


# What training uses unless the user picks otherwise. Not the recipe's own (AugmentConfig's field defaults): with
# it, fine-tuning lost to its starting head on a held-out development set, and with "natural" and a 10x larger
# peak step it gained (BENCHMARKS.md, "Issue 11 item 3, third pass").
DEFAULT_PRESET = "natural"


def default_augment() -> AugmentConfig:
    """A fresh copy of the default augmentation (the DEFAULT_PRESET's settings)."""
    return PRESETS[DEFAULT_PRESET].config()


def matching_preset(config: AugmentConfig) -> str | None:
    """The name of the preset `config` is, if any."""
    return next((name for name, p in PRESETS.items() if p.config() == config), None)


def _layer_seed(seed: int | None, index: int) -> int | None:
    """A distinct, reproducible seed per layer: the same seed in every layer would correlate their draws."""
    if seed is None:
        return None
    return (int(seed) * 7919 + index * 104729 + 1) % (2**31 - 1)


def _random_layers(c: AugmentConfig, seed: int | None) -> list[keras.layers.Layer]:
    """One built-in Random* layer per non-zero setting, in ImageDataGenerator's order (flip is last there,
    but flips commute with nothing else we care about, so doing it first is equivalent in distribution)."""
    from core.tfenv import keras
    layers: list[keras.layers.Layer] = []
    fill = dict(fill_mode=c.fill_mode, fill_value=0.0)  # constant = black, like ImageDataGenerator's cval=0

    def add(make, **kwargs) -> None:
        layers.append(make(seed=_layer_seed(seed, len(layers)), **kwargs))

    if c.horizontal_flip or c.vertical_flip:
        mode = ("horizontal_and_vertical" if c.horizontal_flip and c.vertical_flip
                else "horizontal" if c.horizontal_flip else "vertical")
        add(keras.layers.RandomFlip, mode=mode, name="flip")
    if c.rotation_range:
        # RandomRotation's factor is a fraction of a full turn: 40 degrees -> 40/360.
        add(keras.layers.RandomRotation, factor=c.rotation_range / 360.0, name="rotate", **fill)
    if c.shear_range:
        # ImageDataGenerator (the 2016 recipe) sheared by an angle in radians, tilting vertical lines by that
        # angle. RandomShear's x_factor is the horizontal displacement per unit of height, i.e. tan(angle):
        # 0.2 rad -> 0.203. Shear is horizontal only, as in ImageDataGenerator. Unlike ImageDataGenerator,
        # RandomShear shears about the top-left corner, not the centre, so it also slides the picture
        # sideways by up to f * height / 2 at the middle.
        # The factor is given as (0, f), not f: a float f is stored in get_config as (-f, f), which the
        # constructor then refuses on load (Keras 3.15: tuple values must be >= 0), so the .keras file would
        # not load. The layer flips the sign at random anyway, so (0, f) draws uniformly from (-f, f) too.
        f = min(math.tan(c.shear_range), 1.0)
        add(keras.layers.RandomShear, x_factor=(0.0, f), y_factor=(0.0, 0.0), name="shear", **fill)
    if c.width_shift_range or c.height_shift_range:
        add(keras.layers.RandomTranslation, height_factor=c.height_shift_range,
            width_factor=c.width_shift_range, name="shift", **fill)
    if c.zoom_range:
        # ImageDataGenerator drew the width and height zoom independently (so it also stretched); we do the
        # same. Negative factors zoom in, positive zoom out: (-z, z) == ImageDataGenerator's [1-z, 1+z].
        add(keras.layers.RandomZoom, height_factor=(-c.zoom_range, c.zoom_range),
            width_factor=(-c.zoom_range, c.zoom_range), name="zoom", **fill)
    if c.brightness_range:
        # value_range makes the shift a fraction of 0..255 and clips the result back into 0..255.
        add(keras.layers.RandomBrightness, factor=c.brightness_range, value_range=(0, 255), name="brightness")
    if c.contrast_range:
        add(keras.layers.RandomContrast, factor=c.contrast_range, value_range=(0, 255), name="contrast")
    return layers


def build_augmenter(config: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """A Sequential named "augmentation" mapping float32 0..255 images to the same shape and range.

    Active only in training (fit, or a call with training=True); identity under predict/evaluate or
    training=False. An identity config gives a single `Identity` layer, because an empty Sequential cannot
    be called or built.
    """
    from core.tfenv import keras

    config.validate()  # the dataclass is mutable: re-check in case a field was set after construction
    layers = [] if config.is_identity() else _random_layers(config, seed)
    if not layers:
        layers = [keras.layers.Identity(name="no_augmentation")]
    return keras.Sequential(layers, name="augmentation")


def _as_float_image(image: np.ndarray, size: int | None) -> tf.Tensor:
    from core.tfenv import tf

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise AugmentError(f"preview needs an RGB image of shape (height, width, 3), got shape {arr.shape}")
    x = tf.convert_to_tensor(arr, dtype=tf.float32)
    if size is not None:
        if int(size) < 1:
            raise AugmentError(f"size must be a positive number of pixels, got {size!r}")
        x = resize_tensor_for_model(x, int(size))  # the model's own resize: the preview shows what training sees
    return x


def preview(image: np.ndarray, config: AugmentConfig, n: int = 8, seed: int = 0,
            size: int | None = None) -> np.ndarray:
    """`n` augmented versions of one HxWx3 uint8 image, as (n, H, W, 3) uint8 (H = W = size if given).

    Uses exactly the training pipeline (build_augmenter, training=True). A fresh augmenter seeded with `seed`
    is built on every call, so the same arguments always give the same pictures, even within one process
    (a reused augmenter would advance its random state and give new ones).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise AugmentError(f"n must be a positive whole number, got {n!r}")
    from core.tfenv import tf

    x = _as_float_image(image, size)
    batch = tf.repeat(x[None], int(n), axis=0)
    out = build_augmenter(config, seed=seed)(batch, training=True)
    return np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)
