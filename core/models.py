"""Model factories: the dense head, the recipe's small convnet, the fine-tuning stack, the exported model."""
from __future__ import annotations

import numpy as np

from core.tfenv import keras


def is_binary(n_classes: int) -> bool:
    return n_classes == 2


def output_layer(n_classes: int, name: str = "predictions") -> keras.layers.Dense:
    # Two classes: one sigmoid unit (the recipe's choice); more: softmax over the classes.
    if is_binary(n_classes):
        return keras.layers.Dense(1, activation="sigmoid", name=name)
    return keras.layers.Dense(n_classes, activation="softmax", name=name)


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if is_binary(n_classes) else "sparse_categorical_crossentropy"


def build_head(feature_dim: int, n_classes: int, units: int = 256, dropout: float = 0.5) -> keras.Model:
    """The recipe's classifier on bottleneck features: Dense(relu) → Dropout → sigmoid/softmax."""
    inputs = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dense(units, activation="relu", name="head_dense")(inputs)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.Model(inputs, output_layer(n_classes, "head_predictions")(x), name="head")


def build_scratch_body(size: int, n_classes: int, dropout: float = 0.5) -> keras.Model:
    """The recipe's baseline: three conv/pool blocks (32, 32, 64), Dense(64), Dropout, output. Pixels 0..255 in."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    for i, filters in enumerate((32, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, output_layer(n_classes)(x), name="scratch_convnet")


def build_image_classifier(extractor: keras.Model, head: keras.Model) -> keras.Model:
    """Backbone + head on size×size images. `training=False` keeps BatchNorm in inference mode even once the top
    block is unfrozen: updating its statistics on a few images is what makes naive fine-tuning hurt accuracy."""
    size = extractor.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    features = extractor(inputs, training=False)
    return keras.Model(inputs, head(features), name="classifier")


def with_augmentation(body: keras.Model, augmenter: keras.Model) -> keras.Model:
    """The training model: augmentation layers (active only while training) in front of `body`."""
    inputs = keras.Input(body.input_shape[1:], name="image")
    return keras.Model(inputs, body(augmenter(inputs)), name="train_model")


def build_export_model(body: keras.Model, size: int, n_classes: int) -> keras.Model:
    """End to end: raw RGB (any size, 0..255) → the same resize the app uses → body → class probabilities.

    Only standard Keras layers, so plain `keras.saving.load_model` reads it with no code of this project.
    A binary model's single sigmoid is widened to two columns [1 - p, p] by a fixed Dense layer, so every
    exported model returns one probability per class, in the order of labels.json.
    """
    inputs = keras.Input((None, None, 3), name="image")
    # The app's resize rule is core.images.resize_tensor_for_model: this layer must stay the same op (checked by
    # tests/test_datasets.py), or the exported model stops predicting what the app predicted.
    x = keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True, name="resize")(inputs)
    # Called for inference: without training=False, a plain `model(x)` by a user runs the head's Dropout (Keras 3
    # does not infer it for nested models), and every call answers differently; `model.predict` was unaffected.
    probs = body(x, training=False)
    if is_binary(n_classes):
        widen = keras.layers.Dense(2, trainable=False, name="two_class_probabilities")
        probs = widen(probs)
        widen.set_weights([np.array([[-1.0, 1.0]], np.float32), np.array([1.0, 0.0], np.float32)])
    return keras.Model(inputs, probs, name="image_classifier")
