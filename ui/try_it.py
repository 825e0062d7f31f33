""""Try it": new photos (dropped or from the camera) through a run's model, with class bars and, on demand, the
heatmap of where the model looked. Used where a run finishes (Training) and on the Predictions page.

Nothing here is added to a dataset. TensorFlow loads only when a photo arrives (core.explain is lazy).
"""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from PIL import Image

from core import images
from core.errors import FewShotError
from core.runs import Run
from ui.common import md
from ui.dataset_views import IMAGE_TYPES

MAX_PHOTOS = 12  # a quick look, not a batch job (the Predictions page's upload table takes zips)


@st.cache_data(max_entries=64, show_spinner=False)
def _answer(model_path: str, model_mtime: int, data: bytes) -> tuple[np.ndarray, np.ndarray, int] | str:
    """(probabilities, heatmap, class explained) for one photo's bytes, or the reason it cannot
    be read. Cached by content: a rerun, a second look or the same shot again costs nothing."""
    from core.explain import explain_image  # TensorFlow only when a photo is actually tried

    try:
        photo = _decode(data)
    except images.ImageError as exc:
        return str(exc)
    found = explain_image(model_path, photo)
    return found.probabilities, found.heatmap, found.class_index


def _decode(data: bytes) -> np.ndarray:
    """The app's one decoder, on bytes (it reads files: a short-lived temporary one)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="fewshot-try-") as tmp:
        path = Path(tmp) / "photo"
        path.write_bytes(data)
        return images.load_rgb(path, max_side=1024)


def answer_card(data: bytes, name: str, run: Run, classes: list[str], heat: bool) -> None:
    """One photo: the photo (or its heatmap overlay), what the model says and the top class bars."""
    from core.explain import overlay

    try:
        result = _answer(str(run.model_path), run.model_path.stat().st_mtime_ns, data)
    except (FewShotError, OSError) as exc:
        st.error(f"The model of this run could not be used: {md(exc)}")
        return
    if isinstance(result, str):
        st.markdown(f":orange[:material/warning:] *unreadable*: {md(result)}")
        st.caption(md(name))
        return
    probs, heatmap, explained = result
    photo = Image.fromarray(_decode(data))
    photo.thumbnail((400, 400))
    if heat:
        st.image(overlay(photo, heatmap), width="stretch",
                 caption=f"Where it looked for “{classes[explained]}”")
    else:
        st.image(photo, width="stretch")
    order = np.argsort(probs)[::-1]
    st.markdown(f"**{md(classes[order[0]])}** · {probs[order[0]]:.0%}")
    for k in order[:3]:
        st.progress(float(probs[k]), text=f"{md(classes[k])} {probs[k]:.0%}")
    st.caption(md(name))


def try_it(run: Run, classes: list[str], key: str, camera: bool = True) -> None:
    """A drop zone and (optionally) the camera for new photos, each answered with class bars and a heatmap."""
    sources = ["upload", "camera"] if camera else ["upload"]
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    source = c1.segmented_control("Photo from", sources, default="upload", key=f"{key}_source", required=True,
                                  format_func={"upload": ":material/upload: Files",
                                               "camera": ":material/photo_camera: Camera"}.get) or "upload"
    heat = c2.toggle("Show where the model looked (heatmap)", key=f"{key}_heat", value=True,
                     help="Grad-CAM from this run's own model: bright where the evidence for its answer is. "
                          "Bright on the background means it learned the background.")
    photos: list[tuple[bytes, str]] = []
    if source == "camera":
        shot = st.camera_input("Point the camera at something", key=f"{key}_camera")
        if shot is not None:
            photos.append((shot.getvalue(), "camera shot"))
    else:
        files = st.file_uploader("New photos (never added to the dataset)", type=IMAGE_TYPES,
                                 accept_multiple_files=True, key=f"{key}_files")
        photos += [(f.getvalue(), f.name) for f in files or []]
    if not photos:
        return
    if len(photos) > MAX_PHOTOS:
        st.caption(f"The first {MAX_PHOTOS} of {len(photos)} photos are shown.")
        photos = photos[:MAX_PHOTOS]
    with st.spinner("Asking the model…"):
        per_row = 4
        for start in range(0, len(photos), per_row):
            for col, (data, name) in zip(st.columns(per_row), photos[start:start + per_row]):
                with col.container(border=True, key=f"{key}_card_{hashlib.sha1(data).hexdigest()[:10]}_{start}"):
                    answer_card(data, name, run, classes, heat)

