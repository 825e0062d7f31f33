"""The backbone registry: names, input sizes, feature sizes, what fine-tuning unfreezes, where weights live.

No TensorFlow here: the app's pages and the run settings need these facts at every page load, long before (and
often without) any model being built. The builders are in `core.backbones`.
"""
from __future__ import annotations

from core.errors import FewShotError
import os
from dataclasses import dataclass
from pathlib import Path


class BackboneError(FewShotError):
    """A backbone cannot be built; the message says what the user can do about it."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str                   # registry key, also the extractor model's name
    title: str                  # shown in the UI
    input_size: int             # square input side in pixels
    feature_dim: int            # length of the pooled feature vector
    description: str            # one line for the UI
    top_block: tuple[str, ...]  # layer-name prefixes unfrozen by fine-tuning


# EfficientNet-Lite MBConv stages: (repeats, kernel, stride, expand ratio, output channels).
# Lite2 read off its checkpoint's shapes (strides are not in a state dict: same as Lite0's).
LITE_STAGES: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {
    "efficientnet_lite0": ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    "efficientnet_lite2": ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                           (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
}


def _last_lite_block(name: str) -> int:
    return sum(stage[0] for stage in LITE_STAGES[name]) - 1


_SPECS: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        BackboneSpec("efficientnet_lite0", "EfficientNet-Lite0 (fast, default)", 224, 1280,
                     "Small and fast; its ImageNet weights come with the app and work offline.",
                     (f"block{_last_lite_block('efficientnet_lite0')}_", "head_")),
        BackboneSpec("efficientnet_lite2", "EfficientNet-Lite2 (more accurate, slower)", 260, 1280,
                     "Bigger Lite model at 260 px: often a bit more accurate, about 2-3x slower.",
                     (f"block{_last_lite_block('efficientnet_lite2')}_", "head_")),
        BackboneSpec("vgg16", "VGG16 (the Keras blog recipe)", 150, 512,
                     "The classic recipe's backbone at 150 px; large and slow; weights are downloaded.",
                     ("block5_",)),
    )
}


# ----------------------------------------------------------------------------- registry

def list_backbones() -> list[BackboneSpec]:
    """All backbones, the default first."""
    return list(_SPECS.values())


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise BackboneError(f"Unknown backbone {name!r}; choose one of: {', '.join(_SPECS)}.") from None


def weights_dir() -> Path:
    """Where converted weights are cached and user-supplied weight files are looked for."""
    env = os.environ.get("FEWSHOT_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fewshot" / "weights"
