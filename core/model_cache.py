"""The one in-process cache of loaded models, shared by everything that predicts in the app's server.

Loading a model.keras takes a second or more, so the Label page's suggestions and the Predictions page's uploads
reuse loaded models. Keyed by path and modification time: a retrained or rewritten model file is a new entry.
Bounded: each model holds its whole network (tens of MB), and a long-running server must not keep every run's.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

MAX_MODELS = 2  # the run being looked at and the one it was retrained from
_lock = threading.Lock()  # the app's sessions are threads: two asking for one model load it once


@lru_cache(maxsize=MAX_MODELS)
def _load(path: str, mtime_ns: int):
    from core.export import load_model  # TensorFlow only when a model is actually needed

    return load_model(path)


def load_cached_model(model_path: str | Path):
    """The Keras model in `model_path`, loaded once per file version. ExportError if missing or damaged (a failed
    load is not cached: the next call tries again)."""
    path = Path(model_path)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        from core.export import load_model

        return load_model(path)  # raises ExportError: "does not exist: the run has not saved a model"
    with _lock:
        return _load(str(path), mtime_ns)


def clear() -> None:
    """Forget every loaded model (tests; a server freeing memory)."""
    with _lock:
        _load.cache_clear()
