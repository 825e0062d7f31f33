"""Near-duplicates and small images, on pictures made in the test."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core import duplicates
from core.datasets import Item, scan_dataset


def scene(path: Path, seed: int, size: tuple[int, int] = (160, 120), fmt: str | None = None) -> Path:
    """A photo-like picture: a gradient sky and a few random shapes (structure a perceptual hash can see)."""
    rng = np.random.default_rng(seed)
    w, h = size
    grad = np.linspace(0, 1, h)[:, None, None] * rng.integers(60, 255, 3) + rng.integers(0, 80, 3)
    img = Image.fromarray(np.broadcast_to(grad, (h, w, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        box = [int(x0), int(y0), int(x0 + rng.integers(15, w // 2)), int(y0 + rng.integers(15, h // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def recompressed_copy(src: Path, dst: Path, scale: float = 0.5, quality: int = 60) -> Path:
    with Image.open(src) as img:
        small = img.convert("RGB").resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BILINEAR)
    dst.parent.mkdir(parents=True, exist_ok=True)
    small.save(dst, format="JPEG", quality=quality)
    return dst


def test_hash_survives_resize_and_jpeg_but_tells_pictures_apart(tmp_path):
    original = scene(tmp_path / "a.png", seed=1)
    copy = recompressed_copy(original, tmp_path / "a_small.jpg")
    brighter = tmp_path / "a_bright.png"
    with Image.open(original) as img:
        Image.fromarray(np.clip(np.asarray(img, float) * 1.15, 0, 255).astype(np.uint8)).save(brighter)
    others = [scene(tmp_path / f"other_{i}.png", seed=100 + i) for i in range(8)]
    h = duplicates.phash_file
    assert duplicates.hamming(h(original), h(copy)) <= 4
    assert duplicates.hamming(h(original), h(brighter)) <= 4
    for other in others:
        assert duplicates.hamming(h(original), h(other)) > duplicates.DEFAULT_MAX_DISTANCE
    assert h(tmp_path / "missing.png") is None
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert h(tmp_path / "broken.png") is None


def test_pairs_are_classified_within_across_classes_and_splits(tmp_path):
    a = scene(tmp_path / "cats" / "a.png", seed=1)
    b = scene(tmp_path / "cats" / "b.png", seed=2)
    c = scene(tmp_path / "cats" / "c.png", seed=3)
    items = [
        Item(a, "cats", "train"),
        Item(recompressed_copy(a, tmp_path / "cats" / "a_copy.jpg"), "cats", "train"),   # same class
        Item(b, "cats", "train"),
        Item(recompressed_copy(b, tmp_path / "dogs" / "b_copy.jpg", 0.7), "dogs", "train"),  # label conflict
        Item(c, "cats", "train"),
        Item(recompressed_copy(c, tmp_path / "cats" / "c_val.jpg", 0.8), "cats", "val"),  # leak into validation
        Item(scene(tmp_path / "dogs" / "d.png", seed=4), "dogs", "val"),
        Item(recompressed_copy(tmp_path / "dogs" / "d.png", tmp_path / "pool" / "d_again.jpg"),
             duplicates.UNLABELLED, "pool"),  # an unlabelled photo that is already in the dataset
    ]
    pairs = duplicates.find_near_duplicates(items)
    found = {(p.a.path.name, p.b.path.name): p.kind for p in pairs}
    assert found == {("b.png", "b_copy.jpg"): "across classes", ("c.png", "c_val.jpg"): "across splits",
                     ("d.png", "d_again.jpg"): "unlabelled copy", ("a.png", "a_copy.jpg"): "same class"}
    assert [p.kind for p in pairs] == list(duplicates.KINDS)  # the most serious first
    assert duplicates.summary(pairs) == {kind: 1 for kind in duplicates.KINDS}
    assert all(p.help for p in pairs)
    assert duplicates.find_near_duplicates(items, max_distance=-1) == []
    assert duplicates.find_near_duplicates(items[:1]) == []


def test_same_layout_in_another_colour_is_not_a_duplicate(tmp_path, make_image):
    """A red and a blue shirt photographed the same way share their grey structure, not their colours."""
    red = make_image(tmp_path / "red.png", (210, 40, 40), (96, 80), seed=1)
    blue = make_image(tmp_path / "blue.png", (40, 60, 210), (96, 80), seed=1)
    red_again = recompressed_copy(red, tmp_path / "red_again.jpg", 0.7)
    assert duplicates.hamming(duplicates.phash_file(red), duplicates.phash_file(blue)) <= 4  # the hash alone: alike
    items = [Item(red, "red", "train"), Item(blue, "blue", "train"), Item(red_again, "red", "val")]
    pairs = duplicates.find_near_duplicates(items)
    assert [(p.a.path.name, p.b.path.name, p.kind) for p in pairs] == [("red.png", "red_again.jpg", "across splits")]


def test_on_a_scanned_dataset_with_a_cached_hash(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        scene(root / "sky" / f"s{i}.png", seed=10 + i)
        scene(root / "sea" / f"w{i}.png", seed=20 + i)
    recompressed_copy(root / "sky" / "s0.png", root / "sea" / "s0_again.jpg")
    ds = scan_dataset(root, val_split=0.25)
    [pair] = duplicates.find_near_duplicates(ds.items)
    assert {pair.a.path.name, pair.b.path.name} == {"s0.png", "s0_again.jpg"} and pair.kind == "across classes"
    # Cached by (path, size, mtime): a rewritten file is hashed again, an unchanged one is not.
    target = root / "sea" / "s0_again.jpg"
    key_count = len(duplicates._hash_cache)
    duplicates.find_near_duplicates(ds.items)
    assert len(duplicates._hash_cache) == key_count
    scene(target, seed=99, fmt="JPEG")
    os.utime(target, ns=(1, 1))
    assert duplicates.find_near_duplicates(ds.items) == []


def test_small_images_are_flagged_smallest_first(tmp_path):
    items = [Item(scene(tmp_path / "big.png", 1, (300, 240)), "x", "train"),
             Item(scene(tmp_path / "thin.png", 2, (400, 60)), "x", "train"),
             Item(scene(tmp_path / "tiny.png", 3, (40, 32)), "x", "val")]
    # EXIF orientation 6 (rotated 90°): the header says 200×90, the picture is 90×200; shorter side 90 either way.
    rotated = Image.new("RGB", (200, 90), (10, 20, 30))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    items.append(Item(tmp_path / "rot.jpg", "x", "train"))
    small = duplicates.small_images(items, min_side=112)
    assert [(s.item.path.name, s.width, s.height) for s in small] == [
        ("tiny.png", 40, 32), ("thin.png", 400, 60), ("rot.jpg", 90, 200)]
    assert duplicates.small_images(items, min_side=10) == []
