"""Getting photos in: HEIC photos from phones, a flat zip of unsorted photos straight into `unlabelled/`; and the
TFLite converter's console output kept out of the server's terminal."""
from __future__ import annotations

import io
import os
import zipfile

from PIL import Image

from core import images
from core.datasets import scan_dataset
from core.labeling import add_unlabelled_uploads
from core.quiet import captured_output


def test_heic_photos_are_read(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", classes={"a": (200, 20, 20), "b": (20, 20, 200)}, per_class=4)
    Image.new("RGB", (80, 60), (10, 200, 30)).save(root / "a" / "phone.heic")
    assert ".heic" in images.IMAGE_EXTENSIONS
    assert images.load_rgb(root / "a" / "phone.heic").shape == (60, 80, 3)
    dataset = scan_dataset(root, 0.25, 0.0, 0)
    assert any(item.path.name == "phone.heic" for item in dataset.items)


def test_a_flat_zip_of_unsorted_photos_goes_into_unlabelled(workspace, make_image, tmp_path):
    dataset = workspace / "datasets" / "mine"
    (dataset / "cats").mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.write(make_image(tmp_path / f"p{i}.png", seed=i), f"p{i}.png")  # flat: no folders
        archive.write(make_image(tmp_path / "deep.png", seed=9), "holiday/deep.png")
        archive.writestr("notes.txt", "not a photo")
    photo = make_image(tmp_path / "loose.png", seed=5)
    report = add_unlabelled_uploads(dataset, [("photos.zip", buffer.getvalue()), ("loose.png", photo.read_bytes())])
    names = sorted(p.name for p in (dataset / "unlabelled").iterdir())
    assert names == ["deep.png", "loose.png", "p0.png", "p1.png", "p2.png"]
    assert len(report.saved) == 5
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "nothing")
    report = add_unlabelled_uploads(dataset, [("empty.zip", empty.getvalue())])
    assert report.skipped == [("empty.zip", "the zip holds no photos")]


def test_native_output_is_captured_not_printed(capfd):
    with captured_output() as captured:
        os.write(1, b"C++ says hello on fd 1\n")
        os.write(2, b"absl log on fd 2\n")
        print("a Python print")
    out, err = capfd.readouterr()
    assert "hello" not in out and "absl" not in err and "print" not in out
    assert "hello" in captured[0] and "absl" in captured[0]
