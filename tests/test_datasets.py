"""Datasets and images: layouts, zips, bad files skipped and reported, stratified reproducible splits."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import images
from core.datasets import (
    DatasetError,
    dataset_warnings,
    safe_extract_zip,
    scan_dataset,
    split_share_note,
    validate_class_name,
)


def test_demo_dataset_scans_with_counts(demo_dataset):
    ds = scan_dataset(demo_dataset)
    assert ds.classes == ["fish", "monuments", "renewable_energy", "tools"]
    counts = ds.counts()
    assert counts["total"].to_dict() == {"fish": 28, "monuments": 27, "renewable_energy": 28, "tools": 39}
    assert not ds.skipped  # credits live at the dataset root, never inside a class folder


def test_split_is_reproducible_and_seeded(tiny_dataset):
    a = scan_dataset(tiny_dataset, val_split=0.25, test_split=0.25, seed=3)
    b = scan_dataset(tiny_dataset, val_split=0.25, test_split=0.25, seed=3)
    c = scan_dataset(tiny_dataset, val_split=0.25, test_split=0.25, seed=4)
    assert a.items == b.items
    assert [i.split for i in a.items] != [i.split for i in c.items]
    counts = a.counts()
    assert (counts["train"] > 0).all() and {"val", "test"} <= set(counts.columns)


def test_split_depends_on_the_image_alone(tmp_path, make_dataset, make_image):
    """Adding photos to a class, or relabelling one (moved to another class folder, renamed there because the name
    is taken), moves no other photo, and the relabelled one keeps its split."""
    root = make_dataset(tmp_path / "ds", per_class=12)
    before = {(i.label, i.path.name): i.split for i in scan_dataset(root, val_split=0.2, seed=0).items}
    for k in range(5):
        make_image(root / "red" / f"extra_{k}.png", (220, 30, 30), seed=90 + k)
    photo = next(root / label / name for (label, name), split in before.items() if label == "red" and split == "val")
    other = next(label for label, _ in before if label != "red")
    assert (root / other / photo.name).exists()  # make_dataset numbers every class alike: a rename is needed
    moved = root / other / f"{photo.stem} (1){photo.suffix}"
    photo.rename(moved)
    after = scan_dataset(root, val_split=0.2, seed=0).items
    assert {i.label for i in after if i.path == moved} == {other}
    for item in after:
        if item.path == moved:
            assert item.split == "val"
        elif not item.path.name.startswith("extra_"):
            assert item.split == before[(item.label, item.path.name)]


def test_every_class_keeps_a_training_photo_and_drift_is_reported(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", per_class=2)
    ds = scan_dataset(root, val_split=0.5, test_split=0.4, seed=0)
    assert (ds.counts()["train"] > 0).all()
    n, n_val = len(ds.items), sum(i.split == "val" for i in ds.items)
    note = split_share_note(ds.items, 0.5)
    assert (note is None) == (abs(n_val / n - 0.5) < 0.01)
    assert note is None or f"{n_val} of {n} photos" in note
    assert split_share_note(ds.items, n_val / n) is None


def test_bad_files_are_skipped_with_reasons(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", per_class=3)
    red = root / "red"
    (red / ".DS_Store").write_bytes(b"\x00\x01")
    (red / "._img_0.png").write_bytes(b"\x00\x05\x16\x07")
    (red / "notes.docx").write_bytes(b"PK\x03\x04 not really")
    (red / "empty.jpg").write_bytes(b"")
    (red / "fake.jpg").write_text("<html>not an image</html>")
    good = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good, "JPEG")
    (red / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (red / "README.txt").write_text("credits")  # documentation: ignored silently
    ds = scan_dataset(root)
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {".DS_Store", "._img_0.png", "notes.docx", "empty.jpg", "fake.jpg", "truncated.jpg"}
    assert "empty" in reasons["empty.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.docx"] and "Pillow" in reasons["fake.jpg"]
    assert ds.counts().loc["red", "total"] == 3
    assert any("skipped" in w for w in dataset_warnings(ds))


def test_image_modes_become_rgb(tmp_path, make_image):
    gray16 = tmp_path / "g16.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(gray16)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(cmyk)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(rgba)  # fully transparent → white
    palette = tmp_path / "p.gif"
    Image.new("P", (16, 16), 3).save(palette)
    webp = make_image(tmp_path / "x.webp", fmt="WEBP")
    tiff = make_image(tmp_path / "x.tiff", fmt="TIFF")
    bmp = make_image(tmp_path / "x.bmp", fmt="BMP")
    for path in (gray16, cmyk, rgba, palette, webp, tiff, bmp):
        arr = images.load_rgb(path)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, path
    assert images.load_rgb(rgba)[0, 0].tolist() == [255, 255, 255]
    assert images.load_rgb(gray16).max() > 200  # scaled from 16 bits, not clipped to white or black
    red = images.load_rgb(cmyk)[0, 0]
    assert red[0] > 200 and red[1] < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert images.load_rgb(path).shape[:2] == (40, 20)  # height 40, width 20 after rotation


def test_split_layout_and_zip(tmp_path, make_dataset):
    make_dataset(tmp_path / "src" / "train", per_class=4)
    make_dataset(tmp_path / "src" / "valid", per_class=2)
    ds = scan_dataset(tmp_path / "src")
    assert ds.layout == "split" and set(ds.counts().columns) == {"train", "val", "total"}
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in (tmp_path / "src").rglob("*.png"):
            zf.write(f, Path("wrapper") / f.relative_to(tmp_path / "src"))  # one top folder
    zds = scan_dataset(zpath)
    assert zds.layout == "split" and zds.classes == ds.classes
    assert zds.counts()["total"].sum() == 18


def test_errors_a_user_can_act_on(tmp_path, make_dataset):
    make_dataset(tmp_path / "one", {"cats": (1, 2, 3)})
    with pytest.raises(DatasetError, match="at least 2 class"):
        scan_dataset(tmp_path / "one")
    root = make_dataset(tmp_path / "empty", per_class=2)
    (root / "purple").mkdir()
    with pytest.raises(DatasetError, match="'purple' has no usable image"):
        scan_dataset(root)
    make_dataset(tmp_path / "split" / "train", per_class=2)
    make_dataset(tmp_path / "split" / "validation", {"red": (1, 1, 1), "green": (2, 2, 2)}, per_class=1)
    with pytest.raises(DatasetError, match="missing from 'val'.*blue"):
        scan_dataset(tmp_path / "split")
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def test_zip_slip_and_symlinks_are_left_out(tmp_path):
    zpath = tmp_path / "evil.zip"
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../escape.png", png.getvalue())
        zf.writestr("/abs.png", png.getvalue())
        zf.writestr("a/ok.png", png.getvalue())
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("a/inner.zip", b"PK")
    notes = safe_extract_zip(zpath, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "ok.png").exists()
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "out" / "a" / "link.png").exists()
    assert len(notes) == 4


def test_class_names_are_validated():
    assert validate_class_name("  golden retriever ") == "golden retriever"
    for bad in ("", "../x", ".hidden", "a/b", "unlabelled", "train"):
        with pytest.raises(DatasetError):
            validate_class_name(bad)


def _walker_fixture(tmp_path: Path, make_dataset, make_image) -> tuple[Path, Path]:
    """A class folder holding every kind of file the walk must judge, and an outside folder it must not reach."""
    outside = make_dataset(tmp_path / "outside", {"secret": (1, 2, 3)}, per_class=1)
    folder = tmp_path / "ds" / "red"
    for rel in ("b.png", "a10.png", "a2.png", "sub/c.png", "sub/deeper/d.jpg", ".hidden/x.png", "__MACOSX/._b.png",
                ".fewshot/y.png"):
        make_image(folder / rel)
    (folder / ".e.png").write_bytes((folder / "b.png").read_bytes())
    (folder / "fake.png").write_text("<html>decoded later, not by the walk</html>")
    (folder / "README.txt").write_text("credits")
    (folder / "notes.docx").write_bytes(b"PK")
    (folder / "link.png").symlink_to(outside / "secret" / "img_0.png")
    (folder / "linkdir").symlink_to(outside / "secret", target_is_directory=True)
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as fh:
        fh.write((folder / "b.png").read_bytes())
    return folder, outside


def test_one_image_file_walker_for_the_scan_the_cli_and_imports(tmp_path, make_dataset, make_image):
    from core.__main__ import _image_paths
    from core.datasets import iter_image_files, scan_class_folder

    folder, outside = _walker_fixture(tmp_path, make_dataset, make_image)
    found = list(iter_image_files(folder))
    assert [p.relative_to(folder).as_posix() for p in found] == [
        "a10.png", "a2.png", "b.png", "fake.png", "sub/c.png", "sub/deeper/d.jpg"]
    assert all(outside not in p.resolve().parents for p in found)
    # The scan builds on the same walk: without decoding it keeps exactly these, and says why it left out the rest.
    good, skipped = scan_class_folder(folder, check=False)
    assert good == found
    reasons = {s.path.name: s.reason for s in skipped}
    assert reasons["link.png"] == reasons["linkdir"] == "symbolic link (not followed)"
    assert reasons[".e.png"] == reasons["._b.png"] == "hidden or system file"  # ._b.png: in __MACOSX/
    assert "not an image" in reasons["notes.docx"] and "UTF-8" in reasons["caf\ufffd.png"]
    assert set(reasons) == {"link.png", "linkdir", ".e.png", "._b.png", "notes.docx", "caf\ufffd.png"}
    good, skipped = scan_class_folder(folder)  # decoding drops the fake image too
    assert good == [p for p in found if p.name != "fake.png"] and "fake.png" in {s.path.name for s in skipped}
    # The command line's `predict FOLDER` walks the same way.
    assert _image_paths([str(folder)]) == found


def test_file_checks_are_remembered_in_a_bounded_cache(tmp_path, monkeypatch, make_dataset, make_image):
    from core.datasets import scan

    assert scan._check_memo.cache_info().maxsize == scan.CHECK_CACHE_SIZE
    root = make_dataset(tmp_path / "ds", per_class=2)
    calls: list[str] = []
    real = images.check_image
    monkeypatch.setattr(images, "check_image", lambda path: calls.append(str(path)) or real(path))
    scan._check_memo.cache_clear()
    scan_dataset(root)
    assert len(calls) == 6
    scan_dataset(root)
    assert len(calls) == 6  # a rescan (every rerun of a page) decodes nothing
    make_image(root / "red" / "img_0.png", (250, 0, 0), size=(30, 30))
    scan_dataset(root)
    assert calls[6:] == [str((root / "red" / "img_0.png").resolve())]  # a rewritten file is checked again


def test_the_one_resize_rule_is_the_export_models_resizing_layer(tmp_path):
    from core.features import image_dataset
    from core.tfenv import keras

    rng = np.random.default_rng(0)
    for shape, size in (((37, 53), 32), ((300, 200), 64), ((10, 12), 48)):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        ours = images.resize_for_model(image, size)
        assert ours.dtype == np.float32 and ours.shape == (size, size, 3)
        layer = keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True)
        np.testing.assert_allclose(ours, np.asarray(layer(image[None].astype(np.float32)))[0], atol=1e-3)
        # Feature extraction's tf.data decode resizes with the same rule.
        path = tmp_path / f"{shape[0]}x{shape[1]}.png"
        Image.fromarray(image).save(path)
        [(batch, ok)] = list(image_dataset([path], size, 1))
        assert ok.numpy().all()
        np.testing.assert_array_equal(batch.numpy()[0], images.load_resized(path, size))
        np.testing.assert_array_equal(images.load_resized(path, size), ours)
