"""Read a legacy (pre-1.6, non-zip) PyTorch checkpoint as numpy arrays, without torch and without running code.

A `.pth` file is a pickle, and unpickling can run any code the file names. This reader's unpickler resolves
only the few globals a flat state dict needs (OrderedDict, the tensor-rebuild function and storage-type tags)
and refuses every other one; tensor data is read as raw little-endian bytes after the pickles and checked to
lie inside its storage.
"""
from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from core.backbones import BackboneError

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
