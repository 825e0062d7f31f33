"""Why the model said that: class-activation maps (Grad-CAM) from a run's own model.keras.

Grad-CAM (Selvaraju et al. 2017): the gradient of a class's score with respect to the last convolutional feature
map says how much each channel matters for that class; the channels weighted by it and summed (negative parts
cut) show *where* in the photo the evidence for the class is. A heatmap on the background is how a user sees
that the model learned the wrong thing.

The model is the run's exported file, end to end: raw RGB → Resizing "resize" → body → probabilities. Its body is
one of the two shapes core.models builds: image classifier (the backbone, a nested model ending in "avg_pool",
then the head) or the scratch convnet (a chain of layers with Conv2D blocks). The model is cut in two at the
last feature map: `to_map` (photo at the model's size → feature map) and the layers after it, replayed one by
one up to the class logits (the score Grad-CAM differentiates: a probability saturates near 1 and its gradient
vanishes). The map is computed in the model's input space (size×size, the photo stretched as the model sees it)
and stretched back onto the photo, so it has the photo's shape.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from core import images
from core.errors import FewShotError

HEATMAP_MAX_SIDE = 320   # a heatmap is shown beside a thumbnail: finer detail than the 7×7 map adds nothing
MAX_CACHED_HEATMAPS = 256  # (model, photo, versions, class) entries of ≤ 320×320 float32: ≤ 100 MB


class ExplainError(FewShotError):
    """A model whose heatmaps cannot be computed (not one of the app's model shapes)."""


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray          # (H, W) float32 in [0, 1], the photo's aspect (max side HEATMAP_MAX_SIDE)
    class_index: int             # the class explained
    probabilities: np.ndarray    # (n_classes,) the model's answer for the photo


@dataclass(frozen=True)
class _Cut:
    size: int                                   # the model's input side (its Resizing layer)
    to_map: Callable                            # size×size batch → feature map (N, h, w, C)
    rest: list                                  # layers from the feature map to the classification Dense
    classifier: object                          # that Dense (softmax or sigmoid): its logits are the scores
    binary: bool


def _flatten(layers: list) -> list:
    """The model's layers in order, nested chains (classifier, head, scratch body) opened up; a backbone (a nested
    model with "avg_pool", which is not a chain: residual adds) is kept whole."""
    from core.tfenv import keras

    out = []
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and not _has_layer(layer, "avg_pool"):
            out += _flatten(layer.layers)
        else:
            out.append(layer)
    return out


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _cut(model) -> _Cut:
    from core.tfenv import keras

    try:
        size = int(model.get_layer("resize").height)
    except ValueError:
        raise ExplainError("this model has no 'resize' layer: it is not a model file of this app") from None
    chain = _flatten(model.layers)
    # The last feature map: a backbone's (before its pooling) or the last Conv2D of a plain chain.
    split = next((k for k in range(len(chain) - 1, -1, -1)
                  if isinstance(chain[k], keras.layers.Conv2D)
                  or (isinstance(chain[k], keras.Model) and _has_layer(chain[k], "avg_pool"))), None)
    if split is None:
        raise ExplainError("this model has no convolutional feature map to explain")
    before, unit = chain[:split], chain[split]
    if isinstance(unit, keras.Model):
        pool = unit.get_layer("avg_pool")
        feature_model = keras.Model(unit.inputs, pool.input, name="feature_map")
        rest = [pool] + chain[split + 1:]
    else:
        feature_model = unit
        rest = chain[split + 1:]
    dense = next((k for k, layer in enumerate(rest) if isinstance(layer, keras.layers.Dense)
                  and getattr(layer.activation, "__name__", "") in ("softmax", "sigmoid")), None)
    if dense is None:
        raise ExplainError("this model has no softmax/sigmoid output layer")
    # Layers after the classification Dense (the fixed binary widening to [1 - p, p]) are folded into `binary`.
    binary = rest[dense].activation.__name__ == "sigmoid"

    def to_map(x):
        for layer in before:
            x = layer(x, training=False)
        return feature_model(x, training=False)

    return _Cut(size, to_map, rest[:dense], rest[dense], binary)


class Explainer:
    """Grad-CAM for one loaded model (cut once; the gradient step compiled once per batch shape)."""

    def __init__(self, model) -> None:
        from core.tfenv import tf

        self.model = model
        self.cut = _cut(model)
        self._step = tf.function(self._gradients, reduce_retracing=True)

    def _gradients(self, batch, class_indices):
        from core.tfenv import tf

        cut = self.cut
        with tf.GradientTape() as tape:
            fmap = cut.to_map(batch)
            tape.watch(fmap)
            x = fmap
            for layer in cut.rest:
                x = layer(x, training=False)
            logits = tf.matmul(x, cut.classifier.kernel) + cut.classifier.bias
            if cut.binary:  # one sigmoid unit: class 1's score is z, class 0's is -z (the widened [1-p, p])
                logits = tf.concat([-logits, logits], axis=-1)
            # -1: the class the model says. Photos are independent (BatchNorm in inference mode), so the gradient
            # of the summed scores gives each photo its own gradient.
            chosen = tf.where(class_indices < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), class_indices)
            score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)          # one weight per channel
        cams = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))            # (N, h, w)
        probs = tf.sigmoid(logits) if cut.binary else tf.nn.softmax(logits)
        return cams, chosen, probs

    def explain_batch(self, photos: list[np.ndarray], class_index: int | None = None) -> list[Explanation]:
        """Heatmaps of photos (H×W×3, 0..255, any sizes) for `class_index` (default: the class the model says
        for each), in one forward and backward pass."""
        from core.tfenv import tf

        if not photos:
            return []
        size = self.cut.size
        batch = tf.constant(np.stack([images.resize_for_model(photo, size) for photo in photos]))
        wanted = tf.fill([len(photos)], -1 if class_index is None else int(class_index))
        cams, chosen, probs = self._step(batch, wanted)
        # Into the model's input space (size×size), then stretched onto each photo like the model's own resize.
        cams = tf.image.resize(cams[..., None], (size, size), method="bilinear")[..., 0].numpy()
        return [Explanation(_normalise(_resize_map(cam, _display_shape(photo.shape[:2]))), int(c),
                            p.astype(np.float32))
                for photo, cam, c, p in zip(photos, cams, chosen.numpy(), probs.numpy())]

    def explain(self, photo: np.ndarray, class_index: int | None = None) -> Explanation:
        return self.explain_batch([photo], class_index)[0]

    def probabilities(self, photo: np.ndarray) -> np.ndarray:
        """The model's own answer (the whole saved model, as predict_files runs it)."""
        batch = images.resize_for_model(photo, self.cut.size)[None]
        return np.asarray(self.model(batch, training=False))[0]


def _display_shape(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    scale = min(1.0, HEATMAP_MAX_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(cam.astype(np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _normalise(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0.0)
    top = float(cam.max())
    return (cam / top).astype(np.float32) if top > 0 else np.zeros_like(cam, np.float32)


# ------------------------------------------------------------------------------------------- cached, by file
_lock = threading.Lock()


@lru_cache(maxsize=2)
def _explainer(model_path: str, mtime_ns: int) -> Explainer:
    from core.model_cache import load_cached_model

    return Explainer(load_cached_model(model_path))


def explainer_for(model_path: str | Path) -> Explainer:
    """The Explainer of a model file, built once per file version (the model itself comes from core.model_cache).
    ExportError if the file is missing or damaged; ExplainError if it is not one of the app's model shapes."""
    path = Path(model_path)
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    if not mtime:
        from core.export import load_model

        load_model(path)  # raises ExportError with the reason
    with _lock:
        return _explainer(str(path), mtime)


_heatmaps: OrderedDict[tuple, Explanation] = OrderedDict()  # LRU of MAX_CACHED_HEATMAPS


def explain_files(model_path: str | Path, photos: Sequence[str | Path], class_index: int | None = None,
                  batch_size: int = 16) -> list[Explanation | None]:
    """Heatmaps of photo files (None for a photo that is gone or unreadable), cached per (model file version,
    photo file version, class): a retrained model or a changed photo is a new entry; the cache is bounded.
    The ones not cached are computed in batches."""
    model_path = Path(model_path)
    explainer = explainer_for(model_path)
    model_mtime = model_path.stat().st_mtime_ns
    out: list[Explanation | None] = [None] * len(photos)
    todo: list[tuple[int, tuple, np.ndarray]] = []
    for i, photo in enumerate(photos):
        try:
            key = (str(model_path), model_mtime, str(photo), Path(photo).stat().st_mtime_ns, class_index)
        except OSError:
            continue
        with _lock:
            hit = _heatmaps.get(key)
            if hit is not None:
                _heatmaps.move_to_end(key)
        if hit is not None:
            out[i] = hit
            continue
        try:
            todo.append((i, key, images.load_rgb(photo, max_side=2 * explainer.cut.size)))
        except images.ImageError:
            continue
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for (i, key, _), explanation in zip(chunk, explainer.explain_batch([t[2] for t in chunk], class_index)):
            out[i] = explanation
            with _lock:
                _heatmaps[key] = explanation
                while len(_heatmaps) > MAX_CACHED_HEATMAPS:
                    _heatmaps.popitem(last=False)
    return out


def explain_file(model_path: str | Path, photo: str | Path, class_index: int | None = None) -> Explanation:
    """`explain_files` for one photo; ImageError when it is gone or unreadable."""
    explanation = explain_files(model_path, [photo], class_index)[0]
    if explanation is None:
        raise images.ImageError(f"{Path(photo).name} is gone or unreadable")
    return explanation


def explain_image(model_path: str | Path, image: np.ndarray, class_index: int | None = None) -> Explanation:
    """The heatmap of a decoded photo (an upload, a camera shot): not cached."""
    return explainer_for(model_path).explain(image, class_index)


# ------------------------------------------------------------------------------------------- drawing
# A perceptual "inferno"-like ramp (dark → purple → orange → yellow), so low evidence stays quiet on the photo.
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 255, 164]], np.float32)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) uint8 colours."""
    pos = np.clip(heatmap, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (pos - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[high] * frac).astype(np.uint8)


def overlay(photo: Image.Image | np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """The heatmap over the photo: weak evidence lets the photo show through, strong evidence covers it."""
    base = photo if isinstance(photo, Image.Image) else Image.fromarray(np.asarray(photo, np.uint8))
    base = base.convert("RGB")
    heat = Image.fromarray(colorize(heatmap)).resize(base.size, Image.Resampling.BILINEAR)
    weight = Image.fromarray((np.clip(heatmap, 0, 1) * 255 * alpha).astype(np.uint8), mode="L")
    weight = weight.resize(base.size, Image.Resampling.BILINEAR)
    base_dim = Image.blend(base, Image.new("RGB", base.size, (0, 0, 0)), 0.25 * alpha)
    return Image.composite(heat, base_dim, weight)
