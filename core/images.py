"""One place for all image input: safe decoding to RGB, whatever the file.

Every image the app touches goes through `load_rgb`, so a file that trains also predicts, previews and exports
the same way. Bad files raise `ImageError` with a reason a person can read; callers skip and report them.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import FewShotError

# Extensions we try to read. Anything else in a class folder is reported as "not an image".
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
try:  # HEIC/HEIF, what phones save: pillow-heif (requirements.txt) teaches Pillow to open them
    from pillow_heif import register_heif_opener

    register_heif_opener()
    IMAGE_EXTENSIONS |= {".heic", ".heif"}
except ImportError:  # an install without it reads everything else
    pass
# Documentation that travels with datasets (credits, licences): ignored silently, never reported.
SIDECAR_SUFFIXES = {".md", ".txt", ".credits", ".csv", ".json"}
SIDECAR_PREFIXES = ("readme", "license", "licence", "credits", "copying")

# Pillow's decompression-bomb guard: more pixels than this is refused (a 10,000×10,000 photo is 1e8 and is
# allowed, decoded at reduced size where the format permits).
MAX_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


class ImageError(FewShotError):
    """An image that cannot be used; the message is the reason shown to the user."""


def is_hidden(name: str) -> bool:
    """macOS/Windows litter (`.DS_Store`, `._photo.jpg`, `Thumbs.db`) and dot-files."""
    return name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"}


def is_sidecar(name: str) -> bool:
    lower = name.lower()
    return lower.startswith(SIDECAR_PREFIXES) or Path(lower).suffix in SIDECAR_SUFFIXES


def has_image_extension(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode → 8-bit RGB; transparency is composited on white (what people expect to see)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, F …
    return img


def open_image(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Decode `path` to an RGB PIL image with EXIF orientation applied.

    `max_side` lets JPEG decode at a reduced scale (DCT scaling): a 10,000-pixel photo then costs a fraction of
    the memory and time. The result is at least `max_side` on its shorter side whenever the original was.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"image too large ({img.width}×{img.height} pixels)")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # animated GIF/WebP/TIFF: the first frame
                if max_side and img.format == "JPEG":
                    img.draft("RGB", (max_side, max_side))
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return _to_rgb(oriented if oriented is not None else img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"refused as a decompression bomb ({exc})") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise ImageError("truncated or damaged image") from None
        raise ImageError(f"unreadable image ({text})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"damaged image ({type(exc).__name__}: {exc})") from None


def load_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """`open_image` as an HxWx3 uint8 array."""
    return np.asarray(open_image(path, max_side=max_side), dtype=np.uint8)


def load_resized(path: str | Path, size: int) -> np.ndarray:
    """The model's view of a file: decode (reduced where cheap), then the one resize the model uses."""
    return resize_for_model(load_rgb(path, max_side=2 * size), size)


def resize_tensor_for_model(image, size: int) -> tf.Tensor:  # noqa: F821
    """The model's one resize: an image (HxWx3) or batch, any dtype in 0..255 → size×size float32 in 0..255.

    Every path to the model goes through here: prediction (`resize_for_model`), feature extraction (the tf.data
    decode in core.features, where it runs inside a graph) and the augmentation preview. Keeping it identical to
    the exported model's `keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True)` is what
    makes the exported model predict exactly what the app predicts (the most common complaint about tools like
    this one); tests/test_datasets.py checks the two agree. The clip only removes float rounding: bilinear
    weights are never negative, so the result stays within the input's range.
    """
    from core.tfenv import tf  # lazily: pages import this module and must render without TensorFlow

    resized = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """`resize_tensor_for_model` as a numpy array: size×size float32 in 0..255."""
    return resize_tensor_for_model(image, size).numpy()


def check_image(path: str | Path) -> str | None:
    """None if the file decodes fully, else the reason. Cheap: JPEGs decode at 1/8 scale."""
    try:
        open_image(path, max_side=32)
    except ImageError as exc:
        return str(exc)
    return None


def thumbnail(path: str | Path, side: int = 160) -> Image.Image:
    img = open_image(path, max_side=side)
    img.thumbnail((side, side))
    return img


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes: the feature cache's key, so renames and relabels cost nothing."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
