"""VGG16, the Keras blog recipe's backbone: keras.applications' conv base behind its preprocessing, as one model.

Its ImageNet weights are Keras' own download. A copy the user put in `weights_dir()` wins (an offline machine
can be given one); without either, the error says where to get the file and where to put it.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from core.backbones import BackboneError, BackboneSpec, get_backbone, weights_dir
from core.tfenv import keras

VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                     + VGG16_WEIGHTS_FILE)
# Caffe-style ImageNet means of keras.applications.vgg16.preprocess_input, in RGB order.
_VGG16_MEAN_RGB = (123.68, 116.779, 103.939)
_DOWNLOAD_TIMEOUT_S = 30.0


def build_extractor(spec: BackboneSpec, weights: str | None) -> keras.Model:
    size = spec.input_size
    source = _weights_source() if weights == "imagenet" else None
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):  # an offline machine must fail, not hang
            base = keras.applications.VGG16(include_top=False, weights=source,
                                            input_shape=(size, size, 3))
    except Exception as exc:
        if source is None:
            raise
        raise BackboneError(_weights_message(source, exc)) from exc
    return extractor_from_base(base)


def _weights_source() -> str:
    """A user-supplied file in weights_dir() wins; else Keras' cache/download ("imagenet")."""
    local = weights_dir() / VGG16_WEIGHTS_FILE
    return str(local) if local.is_file() else "imagenet"


def _weights_message(source: str, exc: Exception) -> str:
    where = weights_dir() / VGG16_WEIGHTS_FILE
    if source != "imagenet":
        return (f"The VGG16 weights file {source} could not be loaded ({exc}). Replace it with a "
                f"fresh copy of {VGG16_WEIGHTS_FILE} from {VGG16_WEIGHTS_URL}.")
    keras_cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (f"The ImageNet weights for VGG16 could not be downloaded ({exc}). On a computer with "
            f"internet access, download {VGG16_WEIGHTS_FILE} from {VGG16_WEIGHTS_URL} and put it "
            f"at {where} (or in Keras' cache folder {keras_cache}). Or choose "
            f"{get_backbone('efficientnet_lite0').title}, whose weights work offline.")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib (used by Keras' get_file) has no timeout of its own.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def extractor_from_base(base: keras.Model) -> keras.Model:
    """Re-wire the VGG16 conv base behind its preprocessing, as one flat model.

    Keras' vgg16.preprocess_input flips RGB to BGR and subtracts BGR means. The same result
    with standard layers only: subtract the means in RGB order (Normalization with constant
    mean, variance 1) and flip the first conv's input-channel axis instead of the image.
    Exact, saves as plain config, and has no weights a careless `trainable = True` could train.
    """
    size = base.input_shape[1]
    first = base.get_layer("block1_conv1")
    kernel, bias = first.get_weights()
    first.set_weights([kernel[:, :, ::-1, :], bias])

    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = keras.layers.Normalization(mean=list(_VGG16_MEAN_RGB), variance=[1.0, 1.0, 1.0],
                                   name="preprocess")(inputs)
    for layer in base.layers[1:]:  # VGG16 is a plain chain after its InputLayer
        x = layer(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="vgg16")
