"""Hostile inputs (issue 6, points 1–3): bad images, bad archives and names, degenerate datasets.

Every bad input is skipped or refused with a reason a person can read; nothing crashes, nothing is written
outside its folder, and memory stays bounded. (Basic cases live in test_datasets.py; these extend them.)
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import images
from core.datasets import (
    MAX_ZIP_MEMBERS,
    DatasetError,
    dataset_warnings,
    safe_extract_zip,
    safe_name,
    scan_dataset,
    validate_class_name,
)
from core.datasets.importing import add_uploads, create_class, create_dataset, import_zip

# ---------------------------------------------------------------------------------------------- helpers


def png_bytes(color=(200, 30, 30), size=(8, 8), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def write_raw_png(path: Path, width: int, height: int, bit_depth: int, color_type: int, rows) -> Path:
    """A PNG written byte by byte, so its header can say anything (Pillow would refuse to make some of these)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def tree(root: Path) -> set[str]:
    """Every path under root (files, folders, links), relative, for 'nothing was written elsewhere' checks."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------------- 1. bad images


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> Path:
    """A 20,000 × 20,000 one-colour PNG (400 MP, ~50 KB on disk): a classic decompression bomb."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    row = bytes(20_000 // 8)  # 1-bit grayscale
    return write_raw_png(path, 20_000, 20_000, 1, 0, (row for _ in range(20_000)))


def test_decompression_bomb_is_refused_with_a_reason_everywhere(bomb_png, tmp_path, make_dataset):
    reason = images.check_image(bomb_png)
    assert reason and ("too large" in reason or "decompression bomb" in reason), reason
    with pytest.raises(images.ImageError):
        images.load_rgb(bomb_png)
    with pytest.raises(images.ImageError):
        images.thumbnail(bomb_png)
    # In a dataset: skipped with that reason, the rest still usable.
    root = make_dataset(tmp_path / "ds", per_class=2)
    shutil.copy(bomb_png, root / "red" / "bomb.png")
    ds = scan_dataset(root)
    assert [(s.path.name, s.reason) for s in ds.skipped] == [("bomb.png", reason)]
    # Uploaded: refused, nothing saved.
    report = add_uploads(create_dataset("up"), "red", [("bomb.png", bomb_png.read_bytes())])
    assert report.saved == [] and report.skipped[0][0] == "bomb.png"


_PEAK_MEMORY_PROBE = r"""
import json, sys, time
from core import images

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

images.load_resized(sys.argv[2], 224)            # warm up TensorFlow's resize on a small image
open("/proc/self/clear_refs", "w").write("5")   # reset the peak (VmHWM) to the current RSS
before = rss_kb("VmRSS:")
start = time.perf_counter()
reduced = images.open_image(sys.argv[1], max_side=448).size
model_view = images.load_resized(sys.argv[1], 224)
thumb = images.thumbnail(sys.argv[1], 160).size
reason = images.check_image(sys.argv[1])
print(json.dumps({"growth_mb": (rss_kb("VmHWM:") - before) / 1024, "reduced": reduced, "thumb": thumb,
                  "shape": list(model_view.shape), "left": model_view[112, 20].tolist(),
                  "right": model_view[112, 200].tolist(), "reason": reason,
                  "seconds": time.perf_counter() - start}))
"""


def test_10000_pixel_jpeg_decodes_at_reduced_size_with_bounded_memory(tmp_path, project_root, make_image):
    big = tmp_path / "huge photo.jpg"
    image = Image.new("RGB", (10_000, 10_000), (220, 30, 30))
    image.paste((30, 30, 220), (5_000, 0, 10_000, 10_000))  # left red, right blue
    image.save(big, "JPEG", quality=80)
    del image
    small = make_image(tmp_path / "small.jpg")
    probe = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_PROBE, str(big), str(small)], cwd=project_root,
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"10,000×10,000 JPEG: peak memory growth {result['growth_mb']:.0f} MB, {result['seconds']:.2f} s")
    assert result["reduced"] == [1250, 1250]  # DCT scaling: decoded at 1/8, never at full size
    assert result["shape"] == [224, 224, 3] and result["thumb"] == [160, 160] and result["reason"] is None
    assert result["left"][0] > 180 > result["left"][2] and result["right"][2] > 180 > result["right"][0]
    # A full decode would take 300 MB (RGB) at least; the reduced one ~5 MB plus TensorFlow's resize buffers.
    assert result["growth_mb"] < 120, result


def test_animated_gif_reads_its_first_frame(tmp_path):
    colours = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]
    frames = [Image.new("RGB", (24, 24), c).convert("P", palette=Image.Palette.ADAPTIVE) for c in colours]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    pixel = images.load_rgb(path)[12, 12]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
    assert images.check_image(path) is None


def test_sixteen_bit_rgb_png_is_scaled_not_clipped(tmp_path):
    # 48-bit RGB (16 bits per channel): R full, G half, B zero.
    row = struct.pack(">HHH", 0xFFFF, 0x8000, 0x0000) * 8
    path = write_raw_png(tmp_path / "rgb48.png", 8, 8, 16, 2, [row] * 8)
    pixel = images.load_rgb(path)[4, 4].tolist()
    assert pixel[0] > 250 and 120 < pixel[1] < 136 and pixel[2] < 5, pixel


def test_palette_png_with_transparency_becomes_white_where_transparent(tmp_path):
    # A single transparent palette index (tRNS with one entry)…
    img = Image.new("P", (16, 16), 0)
    img.putpalette([10, 200, 10] + [200, 10, 10] * 255)
    img.paste(1, (8, 0, 16, 16))
    one = tmp_path / "one_transparent.png"
    img.save(one, transparency=0)
    arr = images.load_rgb(one)
    assert arr[8, 2].tolist() == [255, 255, 255] and arr[8, 12].tolist() == [200, 10, 10]
    # …and per-entry alpha (index 1 half transparent: red blended with white).
    partial = tmp_path / "alpha_table.png"
    img.save(partial, transparency=bytes([255, 128]))
    arr = images.load_rgb(partial)
    assert arr[8, 2].tolist() == [10, 200, 10]
    assert arr[8, 12][0] > 200 and 110 < arr[8, 12][1] < 150
    # Grey + alpha too.
    la = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(la)
    assert images.load_rgb(la)[0, 0].tolist() == [255, 255, 255]


def test_exif_rotation_applies_to_the_model_view_and_thumbnails_and_bad_exif_is_harmless(tmp_path):
    img = Image.new("RGB", (40, 20), (220, 20, 20))
    img.paste((20, 20, 220), (20, 0, 40, 20))  # stored: left red, right blue
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: top red, bottom blue
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    view = images.load_resized(path, 32)
    assert view[2, 16][0] > 180 > view[2, 16][2] and view[29, 16][2] > 180 > view[29, 16][0]
    assert images.thumbnail(path, 16).size == (8, 16)
    # Nonsense orientation values and a damaged EXIF block: read as stored, never an error.
    for i, blob in enumerate([None, b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff garbage"]):
        odd = tmp_path / f"odd{i}.jpg"
        if blob is None:
            exif = img.getexif()
            exif[0x0112] = 42
            img.save(odd, exif=exif)
        else:
            img.save(odd, exif=blob)
        assert images.check_image(odd) is None, odd
        assert images.load_rgb(odd).shape[2] == 3


def test_text_and_html_in_image_clothing_and_wrong_extensions(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", per_class=2)
    red = root / "red"
    (red / "page.png").write_text("<!doctype html><html><body>hi</body></html>")
    (red / "notes.gif").write_text("just text\n" * 100)
    (red / "script.jpeg").write_bytes(b"#!/bin/sh\nrm -rf /\n")
    (red / "png_named.jpg").write_bytes(png_bytes())            # a PNG called .jpg: fine, it is an image
    (red / "half.png").write_bytes(png_bytes(size=(64, 64))[:60])  # truncated PNG
    ds = scan_dataset(root)
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"page.png", "notes.gif", "script.jpeg", "half.png"}
    assert all(reasons.values())
    assert ds.counts().loc["red", "total"] == 3


SHELLISH_NAMES = ["my cat (1).jpg", "café ☕.png", "$(touch pwned); `id`.png", "a'b\"c.png", "-rf .png",
                  "日本語.jpeg", "tab\there.png", "new\nline.png", "100% sure & <b>bold.png", "#hash?.png"]


def test_names_with_spaces_unicode_and_shell_characters_are_just_names(tmp_path, project_root, make_dataset,
                                                                        make_image):
    from core.features import image_dataset

    root = tmp_path / "ds"
    for name in SHELLISH_NAMES:
        make_image(root / "chats été" / name, (200, 40, 40), fmt="PNG" if not name.endswith(("jpg", "jpeg"))
                   else "JPEG")
    make_dataset(root, {"dogs & $HOME": (40, 40, 200)}, per_class=3)
    ds = scan_dataset(root, val_split=0.0)
    assert ds.classes == ["chats été", "dogs & $HOME"] and not ds.skipped
    assert sorted(it.path.name for it in ds.items if it.label == "chats été") == sorted(SHELLISH_NAMES)
    # The training input pipeline (tf.data, paths as tensors) reads every one of them.
    flags = np.concatenate([ok.numpy() for _, ok in image_dataset([it.path for it in ds.items], 32, 8)])
    assert flags.all()
    assert not list(tmp_path.rglob("pwned")) and not (project_root / "pwned").exists()


def test_file_names_that_are_not_utf8_are_skipped_not_fatal(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", per_class=2)
    raw = os.fsencode(root / "red") + b"/caf\xe9-latin1.png"
    with open(raw, "wb") as fh:
        fh.write(png_bytes())
    os.mkdir(os.fsencode(root) + b"/\xff\xfeclass")  # a class folder whose name is not text either
    with open(os.fsencode(root) + b"/\xff\xfeclass/x.png", "wb") as fh:
        fh.write(png_bytes())
    ds = scan_dataset(root)
    assert ds.classes == ["blue", "green", "red"] and len(ds.items) == 6
    assert len(ds.skipped) == 2 and all("UTF-8" in s.reason for s in ds.skipped)
    # Whatever shows or stores the skipped list can encode it.
    json.dumps(ds.summary(), ensure_ascii=False).encode("utf-8")


def test_uploaded_file_names_are_sanitised_and_stay_in_their_class_folder(workspace, make_image):
    dataset = create_dataset("uploads")
    png = png_bytes()
    hostile = ["../../escape.png", "/etc/passwd.png", "..\\..\\win.png", "C:\\Windows\\evil.png", "nul\x00byte.png",
               "..png", ".hidden.png", "a" * 300 + ".png", "日本" * 100 + ".png", "  spaces  .png",
               "x:y*z?.png", "ok.png", "ok.png"]
    before = tree(workspace)
    report = add_uploads(dataset, "cats", [(name, png) for name in hostile])
    assert report.skipped == [] and len(report.saved) == len(hostile)
    folder = dataset / "cats"
    for path in report.saved:
        assert path.parent == folder and path.exists()
        assert not path.name.startswith(".") and "/" not in path.name and "\\" not in path.name
        assert "\x00" not in path.name and len(path.name) <= 150
        assert images.has_image_extension(path.name), path.name  # still an image the scan will see
    assert len({p.name for p in report.saved}) == len(hostile)  # same name twice: the second gets -2
    created = tree(workspace) - before
    assert all(p.startswith("datasets/uploads") for p in created), created
    make_image(dataset / "dogs" / "d.png", (10, 10, 200))
    assert scan_dataset(dataset).counts().loc["cats", "total"] == len(hostile)
    # Not images, whatever their names say: refused with a reason, nothing written.
    bad = add_uploads(dataset, "cats", [("page.png", b"<html></html>"), ("empty.jpg", b""), ("evil.sh", png),
                                        ("big.png", b"\x89PNG" + bytes(51 * 1024**2))])
    assert bad.saved == [] and [n for n, _ in bad.skipped] == ["page.png", "empty.jpg", "evil.sh", "big.png"]
    assert "MB" in bad.skipped[3][1]
    assert len(list(folder.iterdir())) == len(hostile)


def test_long_names_keep_their_extension():
    assert safe_name("a" * 300 + ".jpeg").endswith(".jpeg") and len(safe_name("a" * 300 + ".jpeg")) <= 150
    assert safe_name("..png") != "png"


def test_class_names_that_are_not_folder_names_are_refused_with_a_message(workspace):
    dataset = create_dataset("names")
    before = tree(workspace)
    for bad in ["..", "../outside", "a/b", "a\\b", "/abs", "\x00", "cat\nnewline", "x" * 65, " ", "_trash",
                "validation", ".git"]:
        with pytest.raises(DatasetError, match="not a usable class name"):
            create_class(dataset, bad)
    assert tree(workspace) == before
    for good in ["chats été", "Golden Retriever", "type-2 (old)", "東京"]:
        assert create_class(dataset, good).name == validate_class_name(good)


def test_symlinks_in_a_picked_folder_are_not_followed(tmp_path, make_dataset):
    outside = make_dataset(tmp_path / "outside", {"secret": (1, 2, 3)}, per_class=2)
    root = make_dataset(tmp_path / "ds", per_class=2)
    (root / "red" / "passwd.png").symlink_to("/etc/passwd")
    (root / "red" / "photo.png").symlink_to(outside / "secret" / "img_0.png")
    (root / "linked_class").symlink_to(outside / "secret", target_is_directory=True)
    (root / "blue" / "sub").symlink_to(outside / "secret", target_is_directory=True)
    ds = scan_dataset(root)
    assert ds.classes == ["blue", "green", "red"]
    assert all(outside not in it.path.resolve().parents for it in ds.items)
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert reasons.get("passwd.png") == reasons.get("photo.png") == "symbolic link (not followed)"


# ---------------------------------------------------------------------------------------------- 2. archives


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_variants_never_write_outside(tmp_path):
    png = png_bytes()
    zpath = make_zip(tmp_path / "evil.zip", {
        "../escape.png": png, "a/../../escape2.png": png, "/abs.png": png, "..\\..\\win.png": png,
        "C:\\Windows\\evil.png": png, "C:/evil2.png": png, "a/./ok.png": png, "a/b//ok2.png": png,
        "a/.hidden/x.png": png, "__MACOSX/a/._ok.png": png, "a/ünï cödé $(x).png": png})
    before = tree(tmp_path)
    notes = safe_extract_zip(zpath, tmp_path / "out")
    assert len(notes) == 6 and all("unsafe path" in n for n in notes)
    assert tree(tmp_path) - before == {"out", "out/a", "out/a/ok.png", "out/a/b", "out/a/b/ok2.png",
                                       "out/a/ünï cödé $(x).png"}


def test_zip_entries_with_one_name_are_all_kept_and_a_file_folder_clash_is_noted(tmp_path):
    import warnings

    first, second, third = png_bytes(), png_bytes(color=(0, 255, 0)), png_bytes(color=(0, 0, 255))
    zpath = tmp_path / "clash.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(zpath, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
        zf.writestr("cats/a?.png", first)   # safe_name turns "?" into "_": the same name as the next one
        zf.writestr("cats/a_.png", second)
        zf.writestr("cats/a_.png", third)   # a repeated entry
        zf.writestr("dogs", b"not a folder")
        zf.writestr("dogs/d.png", first)
    notes = safe_extract_zip(zpath, tmp_path / "out")
    cats = tmp_path / "out" / "cats"
    assert sorted(p.name for p in cats.iterdir()) == ["a_ (2).png", "a_ (3).png", "a_.png"]
    assert [(cats / n).read_bytes() for n in ("a_.png", "a_ (2).png", "a_ (3).png")] == [first, second, third]
    assert sorted(notes) == ["cats/a_.png: another entry has the same name; kept as a_ (2).png",
                             "cats/a_.png: another entry has the same name; kept as a_ (3).png",
                             "dogs/d.png: its folder has the name of a file in the zip, left out"]


def _forge_central_size(zpath: Path, member: str, size: int) -> None:
    """Make the central directory claim `member` unpacks to `size` bytes (headers are attacker-controlled)."""
    data = bytearray(zpath.read_bytes())
    at = data.find(b"PK\x01\x02")  # first central directory entry
    while at != -1:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, at + 24, size)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    zpath.write_bytes(bytes(data))


def test_zip_bombs_are_refused_by_size_count_and_ratio(tmp_path):
    png = png_bytes()
    # Too many members (default limit).
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(MAX_ZIP_MEMBERS + 1):
            zf.writestr(f"a/{i}.png", b"")
    with pytest.raises(DatasetError, match="entries"):
        safe_extract_zip(many, tmp_path / "out_many")
    # Claims to unpack to 3 GB (default limit 2 GB): refused before a byte is written.
    huge = make_zip(tmp_path / "huge.zip", {"a/x.png": png, "b/y.png": png})
    _forge_central_size(huge, "a/x.png", 3 * 1024**3)
    with pytest.raises(DatasetError, match="GB"):
        safe_extract_zip(huge, tmp_path / "out_huge")
    # One member of 50 MB of zeros (ratio ~1000): left out, the rest unpacked.
    ratio = make_zip(tmp_path / "ratio.zip", {"a/bomb.png": bytes(50 * 1024**2), "a/ok.png": png},
                     zipfile.ZIP_DEFLATED)
    notes = safe_extract_zip(ratio, tmp_path / "out_ratio")
    assert notes == ["a/bomb.png: compression ratio too high (zip bomb?), left out"]
    out = tmp_path / "out_ratio" / "a"
    assert (out / "ok.png").exists() and not (out / "bomb.png").exists()
    # A header that under-states a member's size: never more than it says is written.
    liar = make_zip(tmp_path / "liar.zip", {"a/big.png": bytes(5 * 1024**2), "a/ok.png": png},
                    zipfile.ZIP_DEFLATED)
    _forge_central_size(liar, "a/big.png", 100)
    try:
        notes = safe_extract_zip(liar, tmp_path / "out_liar")
        assert any("big.png" in n for n in notes)
        assert not (tmp_path / "out_liar" / "a" / "big.png").exists()
    except DatasetError:
        assert not (tmp_path / "out_liar").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_damaged_or_encrypted_members_are_left_out_with_a_note(tmp_path):
    png = png_bytes()
    zpath = make_zip(tmp_path / "damaged.zip", {"a/ok.png": png, "a/bad.png": png_bytes(size=(64, 64)) * 20},
                     zipfile.ZIP_DEFLATED)
    data = bytearray(zpath.read_bytes())
    at = data.find(b"a/bad.png") + len("a/bad.png") + 20  # inside the compressed data of a/bad.png
    data[at: at + 8] = b"\xff" * 8
    zpath.write_bytes(bytes(data))
    notes = safe_extract_zip(zpath, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "ok.png").exists() and not (tmp_path / "out" / "a" / "bad.png").exists()
    assert len(notes) == 1 and "a/bad.png" in notes[0] and "damaged" in notes[0]
    # Encrypted member (flag bit 0 set): no password to give, so it is left out.
    enc = make_zip(tmp_path / "enc.zip", {"a/secret.png": png, "a/ok.png": png})
    data = bytearray(enc.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        struct.pack_into("<H", data, data.find(signature) + flag_offset, 1)
    enc.write_bytes(bytes(data))
    notes = safe_extract_zip(enc, tmp_path / "out_enc")
    assert notes == ["a/secret.png: encrypted, left out"] and (tmp_path / "out_enc" / "a" / "ok.png").exists()
    # Not a zip at all.
    fake = tmp_path / "fake.zip"
    fake.write_text("<html>404</html>")
    with pytest.raises(DatasetError, match="not a readable zip"):
        safe_extract_zip(fake, tmp_path / "out_fake")


def test_zip_imports_without_images_are_refused_and_leave_nothing(workspace, tmp_path):
    png = png_bytes()
    cases = {
        "empty": {},
        "docs_only": {"README.md": b"# hi", "notes.txt": b"x"},
        "folders_without_images": {"cats/readme.txt": b"x", "dogs/list.csv": b"a,b", "dogs/page.html": b"<p>"},
        "only_nested_zip": {"cats/inner.zip": make_zip(tmp_path / "inner.zip", {"a/x.png": png}).read_bytes()},
    }
    for name, members in cases.items():
        zpath = make_zip(tmp_path / f"{name}.zip", members)
        with pytest.raises(DatasetError) as info:
            import_zip(zpath, name)
        assert "zip" in str(info.value) and "image" in str(info.value), (name, info.value)
    assert [p.name for p in (workspace / "datasets").iterdir()] == []  # no dataset, no staging folder left
    # A hostile dataset name stays a plain folder under datasets/.
    good = make_zip(tmp_path / "good.zip", {"cats/a.png": png, "dogs/b.png": png_bytes((10, 10, 200))})
    root, notes = import_zip(good, "../../../tmp/escaped")
    assert root.parent == workspace / "datasets" and root.name == "escaped" and notes == []
    with pytest.raises(DatasetError, match="already exists"):
        import_zip(good, "escaped")


# ---------------------------------------------------------------------------------------------- 3. degenerate


def test_one_class_and_mismatched_splits_are_explained(tmp_path, make_dataset):
    make_dataset(tmp_path / "split1" / "train", {"cats": (1, 2, 3)}, per_class=2)
    make_dataset(tmp_path / "split1" / "validation", {"cats": (1, 2, 3)}, per_class=1)
    with pytest.raises(DatasetError, match="at least 2 class"):
        scan_dataset(tmp_path / "split1")
    make_dataset(tmp_path / "extra" / "train", per_class=2)
    make_dataset(tmp_path / "extra" / "val", {"red": (1, 1, 1), "green": (2, 2, 2), "blue": (3, 3, 3),
                                               "purple": (4, 4, 4)}, per_class=1)
    with pytest.raises(DatasetError, match="only in 'val'.*purple"):
        scan_dataset(tmp_path / "extra")
    make_dataset(tmp_path / "t" / "train", per_class=2)
    make_dataset(tmp_path / "t" / "val", per_class=1)
    make_dataset(tmp_path / "t" / "test", {"red": (1, 1, 1)}, per_class=1)
    with pytest.raises(DatasetError, match="missing from 'test'"):
        scan_dataset(tmp_path / "t")


def test_a_class_with_one_image_trains_on_it_and_says_it_cannot_be_validated(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "ds", per_class=5)
    for extra in list((root / "blue").iterdir())[1:]:
        extra.unlink()
    ds = scan_dataset(root, val_split=0.2, test_split=0.2)
    counts = ds.counts()
    assert counts.loc["blue"].to_dict() == {"train": 1, "val": 0, "test": 0, "total": 1}
    notes = " ".join(dataset_warnings(ds))
    assert "No validation image for blue" in notes and "Few images in" in notes and "Unbalanced" in notes


def test_five_thousand_tiny_images_scan_and_split(tmp_path):
    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for c in range(10):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(500):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    made = time.perf_counter() - start
    start = time.perf_counter()
    ds = scan_dataset(root, val_split=0.2, test_split=0.1, seed=1)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = scan_dataset(root, val_split=0.2, test_split=0.1, seed=1)
    warm = time.perf_counter() - start
    print(f"5,000 images: made in {made:.1f} s, scanned in {cold:.2f} s (cold), {warm:.2f} s (memoised checks)")
    assert len(ds.items) == 5000 and not ds.skipped and ds.items == again.items
    counts = ds.counts()
    # Each photo's split is a hash of its content and the seed (stable under edits), so a class's shares drift a
    # little from those asked (binomial: ±9 validation photos of 500 is one standard deviation).
    assert ((counts["val"] - 100).abs() <= 30).all() and ((counts["test"] - 50).abs() <= 25).all()
    assert (counts[["train", "val", "test"]].sum(axis=1) == 500).all()
    assert abs(counts["val"].sum() / 5000 - 0.2) < 0.02 and abs(counts["test"].sum() / 5000 - 0.1) < 0.02
    assert len({it.path for it in ds.items}) == 5000


def test_one_hundred_classes_train_a_bottleneck_run(workspace, tmp_path, make_image):
    from core.config import TrainConfig
    from core.engine import execute_run
    from core.runs import create_run

    root = tmp_path / "hundred"
    rng = np.random.default_rng(7)
    for c in range(100):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        for i in range(2 if c else 1):  # class_000 has a single image: trained on, never validated
            make_image(root / f"class_{c:03d}" / f"img_{i}.png", colour, (32, 32), noise=8, seed=c * 10 + i)
    start = time.perf_counter()
    ds = scan_dataset(root)
    print(f"100 classes: scanned in {time.perf_counter() - start:.2f} s")
    n_val = int(ds.counts()["val"].sum())  # the content-hash split: about 20% of 200, every class keeps a train photo
    assert len(ds.classes) == 100 and 10 <= n_val <= 80 and (ds.counts()["train"] >= 1).all()
    assert any("No validation image for class_000" in w for w in dataset_warnings(ds))

    run = create_run(TrainConfig(data=str(root), mode="bottleneck", epochs=60, batch_size=32, lr=3e-3))
    start = time.perf_counter()
    status = execute_run(run)
    print(f"100 classes: trained in {time.perf_counter() - start:.1f} s")
    assert status.state == "done", status
    metrics = run.metrics()
    assert metrics["classes"] == ds.classes and metrics["n_val"] == n_val
    assert metrics["n_train"] == len(ds.split("train"))
    assert np.array(metrics["confusion"]).shape == (100, 100)
    assert run.labels() == ds.classes
    predictions = run.predictions()
    assert len(predictions) == n_val and len([c for c in predictions.columns if c.startswith("p_")]) == 100
    # One photo per class, each class one colour: the frozen features separate most of them.
    print(f"100 classes: validation accuracy {metrics['val_accuracy']:.2f}")
    assert metrics["val_accuracy"] > 0.5
    check = metrics.get("export_check") or {}
    assert check.get("same_top1") == 1.0, check
