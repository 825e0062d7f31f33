"""The data check before training: near-duplicate images and images far too small for the model.

Near-duplicates are found with a perceptual hash (pHash): the image is shrunk to 32×32 grey, its 2-D DCT taken,
and the 8×8 lowest frequencies compared with their median, giving 64 bits that survive resizing, JPEG
recompression and small colour changes. Two images whose hashes differ in few bits look alike.

The hash sees only grey structure, so a red and a blue shirt photographed the same way would match; a second,
tiny fingerprint (the 4×4 colour layout) must match too.

Why it matters: the same photo in training and validation makes the validation score a lie (the model has seen
the answer); the same photo under two classes is a labelling mistake; many copies inside one class only weigh
that photo more.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core import images
from core.datasets import Item

HASH_SIDE = 32      # the grey image the DCT is taken of
LOW_FREQ = 8        # 8×8 low frequencies → 64 bits
DEFAULT_MAX_DISTANCE = 8  # of 64 bits: resized/recompressed copies land at 0–4, different photos at 20+
COLOUR_SIDE = 4
COLOUR_TOLERANCE = 32.0   # mean difference (0–255) of the 4×4 colour layouts; copies differ by a few units
UNLABELLED = ""  # the label of a pool photo (`Item(path, UNLABELLED, "pool")`)
KINDS = ("across classes", "across splits", "unlabelled copy", "same class")
KIND_HELP = {
    "unlabelled copy": "An unlabelled photo that is already in the dataset: labelling it would count it twice.",
    "across classes": "The same picture under two different classes: one of the labels is wrong.",
    "across splits": "The same picture in training and in validation/test: the model is tested on a photo it "
                     "learned from, so the validation score looks better than it is.",
    "same class": "Copies inside one class: harmless, but they add nothing and weigh that photo more.",
}


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `D @ x` is the DCT of a column vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(HASH_SIDE)


def phash_image(img: Image.Image) -> int:
    """The 64-bit perceptual hash of a PIL image, as a Python int."""
    grey = np.asarray(img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:LOW_FREQ, :LOW_FREQ].ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) would skew the median
    return int(np.packbits(bits).view(">u8")[0])


@dataclass(frozen=True)
class Fingerprint:
    phash: int            # grey structure, 64 bits
    colour: np.ndarray    # 4×4×3 colour layout, float32, flattened


def fingerprint_image(img: Image.Image) -> Fingerprint:
    colour = np.asarray(img.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX), np.float32)
    return Fingerprint(phash_image(img), colour.ravel())


# (path, size, mtime_ns) → fingerprint; a file is never decoded again while it is unchanged.
_hash_cache: dict[tuple[str, int, int], Fingerprint | None] = {}


def fingerprint_file(path: str | Path) -> Fingerprint | None:
    """The file's fingerprint, or None when it cannot be decoded. Cached by (path, size, mtime)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        try:
            # JPEGs decode at reduced scale: plenty for a 32×32 hash and ~10× faster.
            _hash_cache[key] = fingerprint_image(images.open_image(path, max_side=4 * HASH_SIDE))
        except images.ImageError:
            _hash_cache[key] = None
    return _hash_cache[key]


def phash_file(path: str | Path) -> int | None:
    """The file's 64-bit perceptual hash, or None when it cannot be decoded."""
    found = fingerprint_file(path)
    return None if found is None else found.phash


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class DuplicatePair:
    a: Item
    b: Item
    distance: int   # differing hash bits (0 = the same picture as far as the hash can tell)
    kind: str       # one of KINDS

    @property
    def help(self) -> str:
        return KIND_HELP[self.kind]


def pair_kind(a: Item, b: Item) -> str:
    if (a.label == UNLABELLED) != (b.label == UNLABELLED):
        return "unlabelled copy"
    if a.label != b.label:
        return "across classes"
    if a.split != b.split:
        return "across splits"
    return "same class"


def find_near_duplicates(items: Sequence[Item], max_distance: int = DEFAULT_MAX_DISTANCE,
                         max_pairs: int = 2000) -> list[DuplicatePair]:
    """Pairs of items whose pictures look alike, the most serious first (across classes, across splits, an
    unlabelled photo already labelled, same class), closest first within a kind. Pool photos take part with the
    label `UNLABELLED`. Unreadable images are left out (the dataset scan reports them)."""
    hashed = [(item, f) for item in items if (f := fingerprint_file(item.path)) is not None]
    if len(hashed) < 2:
        return []
    codes = np.array([f.phash for _, f in hashed], dtype=np.uint64)
    colours = np.stack([f.colour for _, f in hashed])
    pairs: list[DuplicatePair] = []
    # Row blocks keep memory flat: 1,000 images are one block, 20,000 are 40 small ones.
    block = 512
    for start in range(0, len(codes), block):
        rows = codes[start:start + block]
        dist = np.bitwise_count(rows[:, None] ^ codes[None, :])
        i_idx, j_idx = np.nonzero(dist <= max_distance)
        for i, j in zip(i_idx + start, j_idx):
            if j > i and np.abs(colours[i] - colours[j]).mean() <= COLOUR_TOLERANCE:
                a, b = hashed[i][0], hashed[j][0]
                pairs.append(DuplicatePair(a, b, int(dist[i - start, j]), pair_kind(a, b)))
    pairs.sort(key=lambda p: (KINDS.index(p.kind), p.distance, str(p.a.path), str(p.b.path)))
    return pairs[:max_pairs]


@dataclass(frozen=True)
class SmallImage:
    item: Item
    width: int
    height: int


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file header, without decoding the pixels; None if unreadable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse means "unknown size"
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def small_images(items: Iterable[Item], min_side: int) -> list[SmallImage]:
    """Items whose shorter side is below `min_side` pixels, smallest first.

    The model scales every image up to its input size; an image far smaller than that is mostly blur to it.
    A sensible `min_side` is half the model's input (e.g. 112 for a 224-pixel network).
    """
    found = []
    for item in items:
        size = image_size(item.path)
        if size and min(size) < min_side:
            found.append(SmallImage(item, *size))
    return sorted(found, key=lambda s: (min(s.width, s.height), str(s.item.path)))


def summary(pairs: Sequence[DuplicatePair]) -> dict[str, int]:
    """How many pairs of each kind (every kind present, zero when none)."""
    return {kind: sum(p.kind == kind for p in pairs) for kind in KINDS}
