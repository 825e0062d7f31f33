"""A map of the photos: every photo of a dataset (labelled or not) as a dot in 2-D, placed by what the backbone
sees in it, so similar photos sit together.

The bottleneck features (the same cached ones training uses, keyed by content: a relabelled photo costs
nothing) are L2-normalised, reduced to at most 50 dimensions by PCA (numpy's SVD), then laid out by t-SNE
(scikit-learn). Dots are marked where a run got the photo wrong and where the label is *suspicious*: most of the
photo's nearest labelled neighbours (cosine, in feature space, not on the map) carry one other label. Rows are
ordered by content, so relabelling photos (which moves files, not content) keeps the layout.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import images
from core.errors import FewShotError

PCA_DIMS = 50
NEIGHBOURS = 5
MAX_PHOTOS = 5000  # t-SNE on more takes minutes on a laptop; the map is for looking, not for every photo


class MapError(FewShotError):
    """The photos cannot be mapped (too few readable ones)."""


def pca(features: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` principal components (numpy SVD of the centred features)."""
    centred = features - features.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    dims = min(dims, u.shape[1])
    return (u[:, :dims] * s[:dims]).astype(np.float32)


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) features → (N, 2) positions: PCA then t-SNE (PCA alone below 8 photos, where t-SNE means little)."""
    n = len(features)
    if n < 2:
        return np.zeros((n, 2), np.float32)
    normed = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    reduced = pca(normed, PCA_DIMS)
    if n < 8:
        out = reduced[:, :2]
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)
    from sklearn.manifold import TSNE  # only when a map is drawn

    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
    return tsne.fit_transform(reduced).astype(np.float32)


def label_doubts(features: np.ndarray, labels: Sequence[str | None], k: int = NEIGHBOURS
                 ) -> list[str | None]:
    """For each labelled photo, the other label most of its k nearest labelled neighbours carry (None when they
    agree with it or do not agree among themselves); None for unlabelled photos."""
    labelled = np.array([label is not None for label in labels])
    out: list[str | None] = [None] * len(labels)
    if labelled.sum() < k + 1:
        return out
    normed = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pool = np.flatnonzero(labelled)
    similarity = normed[pool] @ normed[pool].T
    np.fill_diagonal(similarity, -np.inf)  # a photo is not its own neighbour
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    for row, index in enumerate(pool):
        votes = Counter(labels[pool[j]] for j in nearest[row])
        top, count = votes.most_common(1)[0]
        if top != labels[index] and count > k / 2:
            out[index] = top
    return out


@dataclass
class PhotoMap:
    # One row per photo: path, label (None = unlabelled), x, y, predicted (a run's answer or None), wrong (bool),
    # doubt (the label its neighbours suggest, or None), confidence (the run's, or NaN).
    frame: pd.DataFrame
    n_extracted: int          # photos whose features had to be computed for this map
    failed: list[tuple[Path, str]]


def build_map(paths: Sequence[Path], labels: Sequence[str | None], features: np.ndarray,
              predictions: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """The map's rows from photos, their labels and features; `predictions` (a run's predictions.csv, by path)
    marks the photos the run got wrong."""
    xy = embed_2d(features, seed)
    doubts = label_doubts(features, labels)
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": list(labels), "x": xy[:, 0], "y": xy[:, 1],
                          "doubt": doubts})
    frame["predicted"], frame["confidence"], frame["wrong"] = None, np.nan, False
    if predictions is not None and not predictions.empty:
        by_path = predictions.drop_duplicates("path").set_index("path")
        known = frame["path"].isin(by_path.index)
        hits = by_path.loc[frame.loc[known, "path"]]
        frame.loc[known, "predicted"] = hits["predicted"].to_numpy()
        frame.loc[known, "confidence"] = hits["confidence"].to_numpy()
        # Wrong against the label the photo has now (it may have been fixed since the run).
        frame.loc[known, "wrong"] = (hits["predicted"].to_numpy() != frame.loc[known, "label"].to_numpy())
    return frame


def dataset_map(dataset: str | Path, backbone: str, cache_root: Path | None,
                predictions: pd.DataFrame | None = None, prediction_root: Path | None = None,
                progress: Callable[[int, int], None] | None = None, seed: int = 0) -> PhotoMap:
    """The map of a dataset's labelled photos and its unlabelled pool (core.labeling's view). Features come from
    the cache; missing ones (new, unlabelled photos) are extracted and cached. `predictions` of a run trained on
    `prediction_root` (this dataset, or the one it was copied from) mark what the run got wrong."""
    from core.features import extract_features  # TensorFlow only when features are missing
    from core.labeling import label_view

    view = label_view(dataset)
    items = [(item.path, item.label) for item in view.labelled] + [(path, None) for path in view.unlabelled]
    if len(items) > MAX_PHOTOS:
        raise MapError(f"{len(items)} photos: the map shows at most {MAX_PHOTOS}.")
    keyed = sorted(((images.content_hash(path), path, label) for path, label in items), key=lambda t: t[0])
    if len(keyed) < 2:
        raise MapError("the map needs at least two photos.")
    keys, paths, labels = zip(*keyed)
    result = extract_features(list(paths), backbone, cache_root, keys=list(keys), progress=progress)
    ok = result.ok
    if ok.sum() < 2:
        raise MapError("fewer than two of the photos can be read.")
    paths = [Path(p).resolve() for p, good in zip(paths, ok) if good]
    labels = [label for label, good in zip(labels, ok) if good]
    if predictions is not None:
        predictions = _rebase(predictions, Path(prediction_root or view.root), view.root)
    frame = build_map(paths, labels, result.features[ok], predictions, seed)
    return PhotoMap(frame, result.n_extracted, result.failed)


def _rebase(predictions: pd.DataFrame, trained_on: Path, dataset: Path) -> pd.DataFrame:
    """A run's predictions with resolved paths, those under `trained_on` moved under `dataset` (an editable copy
    has the same relative paths as its origin until photos are moved)."""
    trained_on, dataset = trained_on.resolve(), dataset.resolve()

    def move(path: str) -> str:
        resolved = Path(path).resolve()
        try:
            return str(dataset / resolved.relative_to(trained_on))
        except ValueError:
            return str(resolved)
    return predictions.assign(path=predictions["path"].map(move))
