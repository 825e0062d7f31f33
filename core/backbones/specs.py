"""What a backbone is, as data: its sizes, what fine-tuning unfreezes, and which function builds it.

No TensorFlow here: the app's pages and the run settings need these facts at every page load, long before (and
often without) any model being built. A spec names its builder by import path ("module:function") and the
builder's module, which does import TensorFlow, is only imported when a model is built.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import FewShotError

if TYPE_CHECKING:
    from core.tfenv import keras


class BackboneError(FewShotError):
    """A backbone cannot be built; the message says what the user can do about it."""


WEIGHTS = ("imagenet", None)


@dataclass(frozen=True)
class BackboneSpec:
    name: str                   # registry key, also the extractor model's name
    title: str                  # shown in the UI
    input_size: int             # square input side in pixels
    feature_dim: int            # length of the pooled feature vector
    description: str            # one line for the UI
    # Layer-name prefixes fine-tuning unfreezes (BatchNorm layers among them stay frozen, whatever the backbone).
    top_block: tuple[str, ...]
    # "module:function" called as function(spec, weights) -> extractor: float32 RGB 0..255 -> pooled features.
    builder: str
    # "module:function" called as function(spec) -> the ImageNet classifier (to check a weight conversion);
    # None where there is none.
    imagenet_classifier: str | None = None
    # Whether core.backbones.tflite may run it through TFLite/XNNPACK (a gain for depthwise-convolution
    # networks; VGG16's plain convolutions are already near the CPU's limit in TensorFlow).
    fast_extract: bool = False

    def build(self, weights: str | None = "imagenet") -> keras.Model:
        if weights not in WEIGHTS:
            raise BackboneError(f"weights must be 'imagenet' or None, not {weights!r}.")
        return _resolve(self.builder)(self, weights)

    def build_imagenet_classifier(self) -> keras.Model:
        if self.imagenet_classifier is None:
            raise BackboneError(f"Only EfficientNet-Lite has an ImageNet classifier here, not {self.name!r}.")
        return _resolve(self.imagenet_classifier)(self)


def _resolve(path: str) -> Callable[..., Any]:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)
