"""What every export shares: its error, and the fixed-size network the converters take.

TFLite and ONNX have no antialiased resize op (TF's `antialias=True` bilinear, which `model.keras` and the app
use): converted with the resize inside, they would either fail or predict something slightly different from the app
on every photo that is not already the model's size. So the converted files take images already resized to
size×size (RGB, float 0..255) and are built from the layers after `model.keras`'s Resizing layer.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core import images
from core.errors import FewShotError
from core.tfenv import keras


class ExportError(FewShotError):
    """A model that cannot be saved, loaded or converted."""


def input_size(model: keras.Model) -> int:
    """The side of the square images the network sees (its Resizing layer's)."""
    return int(model.get_layer("resize").height)


def after_resize(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """`model` from its Resizing layer on: input size×size×3 float32 0..255 (`batch_size` None: any batch)."""
    size = input_size(model)
    fixed_in = keras.Input((size, size, 3), batch_size=batch_size, name="image")
    x = fixed_in
    for layer in model.layers[model.layers.index(model.get_layer("resize")) + 1:]:
        x = layer(x)
    return keras.Model(fixed_in, x)


def resized_images(paths: Sequence[str | Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N×size×size×3 float32 of the readable files, boolean mask of which files those are): the app's decoder and
    its one resize, i.e. what the converted files expect to be given."""
    batch, ok = [], np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        try:
            batch.append(images.load_resized(path, size))
            ok[i] = True
        except images.ImageError:
            pass
    return (np.stack(batch) if batch else np.zeros((0, size, size, 3), np.float32)), ok
