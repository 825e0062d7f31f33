"""Reliability, round two (issue 15): races on one zip, a full disk, kills right after a run is made, damaged
run files, bad command lines, hostile Host headers, and the smaller cases. Each test reproduced its failure first.
"""
from __future__ import annotations

import base64
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.datasets import scan_dataset, unpack_zip_cached
from core.datasets.importing import import_zip
from core.runs import create_run, delete_run, get_run, runs_table


def png_bytes(color=(200, 30, 30), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def class_zip(path: Path, per_class: int, classes=("red", "blue")) -> Path:
    """A zip of class folders with `per_class` tiny PNGs each."""
    data = {"red": png_bytes((210, 40, 40)), "blue": png_bytes((40, 60, 210)), "green": png_bytes((40, 190, 60))}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name in classes:
            for i in range(per_class):
                archive.writestr(f"{name}/img_{i}.png", data[name])
    return path


def run_together(n: int, job) -> list[object]:
    """Run `job(i)` in n threads started at one barrier; returns each result or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = job(i)
        except Exception as exc:  # collected: the test says which failed and how
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ------------------------------------------------------------------------------- 1. two unpacks of one zip


def test_two_unpacks_of_one_zip_at_once_both_get_every_image(tmp_path):
    archive = class_zip(tmp_path / "photos.zip", per_class=600)
    parent = tmp_path / "imports"
    results = run_together(3, lambda i: unpack_zip_cached(archive, parent))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({str(r) for r in results}) == 1
    dest = results[0]
    assert len(list(dest.rglob("*.png"))) == 1200
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        [dest.name, dest.name + ".complete", dest.name + ".lock"])  # no partial folder left over


def test_an_incomplete_unpack_is_never_reused(tmp_path):
    archive = class_zip(tmp_path / "photos.zip", per_class=5)
    parent = tmp_path / "imports"
    dest = unpack_zip_cached(archive, parent)
    # What an earlier version left when two unpacks raced or a process was killed: a folder missing photos, and
    # a half-written partial folder beside it.
    for path in list(dest.rglob("*.png"))[3:]:
        path.unlink()
    (parent / (dest.name + ".complete")).unlink()
    (parent / (dest.name + ".partial")).mkdir()
    again = unpack_zip_cached(archive, parent)
    assert again == dest and len(list(again.rglob("*.png"))) == 10
    assert len(scan_dataset(archive, val_split=0.2, check_images=False).items) == 10


def test_two_sessions_importing_one_zip_under_one_name_lose_no_photo(workspace, tmp_path):
    archive = class_zip(tmp_path / "photos.zip", per_class=600)
    results = run_together(2, lambda i: import_zip(archive, "shared"))
    imported = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert imported, results
    # The other is told the name is taken, in words (a DatasetError), never a raw OSError.
    assert all(type(r).__name__ == "DatasetError" and "already exists" in str(r) for r in refused), refused
    target = imported[0][0]
    assert len(list(target.rglob("*.png"))) == 1200
    assert sorted(p.name for p in target.iterdir()) == ["blue", "red"]
    assert not [p for p in (workspace / "datasets").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------- 3. kill -9 right after creation


def test_a_process_killed_right_after_creating_its_run_leaves_it_failed(workspace, tiny_dataset, project_root):
    """What the command line does: create the run with its own pid, then (seconds later) execute it. A kill in
    between must not leave the run 'queued' forever (shown as training, refused by Delete)."""
    out = workspace / "runs" / "killed-early"
    script = ("import os, sys, time\n"
              "from core.config import TrainConfig\n"
              "from core.runs import create_run\n"
              f"create_run(TrainConfig(data={str(tiny_dataset)!r}), {str(out)!r}, pid=os.getpid())\n"
              "print('made', flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=project_root, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "FEWSHOT_WORKSPACE": str(workspace)})
    try:
        assert proc.stdout.readline().strip() == "made"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    run = get_run(out)
    assert run.status().state == "failed"
    assert "ended unexpectedly" in run.status().error
    delete_run(run)  # and Delete takes it
    assert not out.exists()


def test_the_command_line_records_its_pid_in_the_first_status(workspace, tiny_dataset, project_root, wait_for):
    out = workspace / "runs" / "cli-early"
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", str(tiny_dataset), "--epochs", "1", "--out",
                             str(out)], cwd=project_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "FEWSHOT_WORKSPACE": str(workspace)})
    try:
        wait_for(lambda: (out / "status.json").exists(), timeout=120, interval=0.005)
        first = get_run(out).read_status()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert first.pid == proc.pid
    assert get_run(out).status().state == "failed"


# ------------------------------------------------------------------------------- 2. a full disk


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A workspace on a real 8 MB tmpfs (needs mount rights, else skipped), and `fill()` to fill it up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    ws = mount / "workspace"
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))

    def fill() -> None:
        with open(mount / "filler", "ab") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        for size in (4096, 512, 1):  # the last few bytes too
            try:
                with open(mount / "filler", "ab") as fh:
                    while True:
                        fh.write(b"\0" * size)
                        fh.flush()
            except OSError:
                pass

    try:
        yield ws, fill
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("page", ["pages/1_dataset.py", "pages/2_label.py", "pages/4_training.py",
                                  "pages/5_predictions.py", "pages/6_runs.py"])
def test_pages_work_on_a_full_disk_say_so_and_runs_can_be_deleted(full_disk, tiny_dataset, project_root, page):
    ws, fill = full_disk
    run = create_run(TrainConfig(data=str(tiny_dataset)), ws / "runs" / "20260101-000000-bottleneck-dead")
    run.update_status(state="running", phase="training", pid=dead_pid())  # its process died without a word
    fill()
    at = AppTest.from_file(str(project_root / "app.py"), default_timeout=180)
    at.run()  # the frame's first run draws the sidebar (every page has it), then the default page
    assert not at.exception, at.exception
    assert "disk" in " ".join(e.value for e in at.sidebar.error).lower()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    if page in ("pages/4_training.py", "pages/6_runs.py"):  # where trainings start and runs are deleted
        assert any("disk" in e.value and "full" in e.value for e in at.error), [e.value for e in at.error]
    assert run.status().state == "failed"
    delete_run(run)  # what frees the space
    assert not run.path.exists()


def test_a_run_that_hits_a_full_disk_is_recorded_failed_not_left_running(full_disk, tiny_dataset):
    """The warm worker outlives its run, so a run whose failure cannot be written would stay 'running' for good:
    the status is small enough to be rewritten in place when nothing new can be allocated."""
    ws, fill = full_disk
    run = create_run(TrainConfig(data=str(tiny_dataset)), ws / "runs" / "full")
    run.update_status(state="running", phase="training", pid=os.getpid())  # alive: the liveness check won't help
    fill()
    status = run.update_status(state="failed", phase="failed", error="The disk is full: free some space.")
    assert status.state == "failed"
    assert run.read_status().state == "failed" and "disk is full" in run.read_status().error


# ------------------------------------------------------------------------------- 6. class names pandas would parse

ODD_NAMES = {"01": (210, 40, 40), "None": (40, 190, 60), "NA": (40, 60, 210), "1e3": (220, 220, 40)}


@pytest.fixture
def odd_names_run(workspace, make_dataset) -> Path:
    from core.engine import execute_run

    data = make_dataset(workspace / "datasets" / "odd", ODD_NAMES, per_class=8)
    run = create_run(TrainConfig(data=str(data), mode="scratch", epochs=2, seed=1), workspace / "runs" / "odd")
    assert execute_run(run).state == "done"
    return run.path


def confusion_counts(at: AppTest) -> list[list[int]]:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    z = next(t for t in spec["data"] if t["type"] == "heatmap")["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        n = int(z["shape"].split(",")[0])
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(n, -1).tolist()
    return z


def test_class_names_like_na_none_01_1e3_stay_text_on_the_predictions_page(odd_names_run, open_app_page):
    run = get_run(odd_names_run)
    frame = run.predictions()
    val = frame[frame["split"] == "val"]
    assert set(val["label"]) <= set(ODD_NAMES) and set(val["predicted"]) <= set(ODD_NAMES)
    assert sorted(run.labels()) == sorted(ODD_NAMES)
    at = open_app_page("pages/5_predictions.py")
    assert not at.exception, at.exception
    counts = confusion_counts(at)
    assert sum(map(sum, counts)) == len(val) > 0  # every validation photo is in the matrix
    right = sum(counts[i][i] for i in range(len(counts)))
    assert right == int((val["label"] == val["predicted"]).sum())
    options = at.selectbox(key="pred_true").options
    assert set(ODD_NAMES) <= set(options)
    for name in ODD_NAMES:
        at.selectbox(key="pred_true").set_value(name).run()
        assert not at.exception
        assert len(at.get("image")) == min(24, int((val["label"] == name).sum()))


def test_charts_keep_number_like_class_names_as_categories():
    from core.charts import class_counts_figure, confusion_figure

    classes = ["01", "1", "1e3"]  # all would parse as numbers: plotly would put them on a numeric axis
    fig = confusion_figure([[1, 0, 0], [0, 1, 0], [0, 0, 1]], classes)
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"
    import pandas as pd

    counts = pd.DataFrame({"train": [3, 4, 5], "val": [1, 1, 1]}, index=pd.Index(classes, name="class"))
    assert class_counts_figure(counts).layout.xaxis.type == "category"


# ------------------------------------------------------------------------------- 7. damaged run files


@pytest.fixture(scope="module")
def trained_scratch_run(tmp_path_factory) -> Path:
    """One finished scratch run (tiny images, 2 epochs), made once for this module; tests damage copies of it."""
    from core.engine import execute_run

    ws = tmp_path_factory.mktemp("scratch_ws")
    data = ws / "datasets" / "tiny"
    for name, color in {"red": (210, 40, 40), "blue": (40, 60, 210)}.items():
        for i in range(8):
            (data / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), tuple(min(255, v + 3 * i) for v in color)).save(data / name / f"{i}.png")
    with pytest.MonkeyPatch.context() as env:  # a session fixture: undone when the block ends
        env.setenv("FEWSHOT_WORKSPACE", str(ws))
        run = create_run(TrainConfig(data=str(data), mode="scratch", epochs=2, seed=1), ws / "runs" / "scratch")
        assert execute_run(run).state == "done"
    return run.path


DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "wrong type": lambda text: "[1]",
    "not utf-8": lambda text: "\udcff",  # written as the byte 0xff below
    "empty": lambda text: "",
}


def damage(path: Path, kind: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if kind == "not utf-8":
        path.write_bytes(b"\xff\xfe\x00garbage\x80\x81" + text.encode()[:10])
    else:
        path.write_text(DAMAGE[kind](text), encoding="utf-8")


@pytest.mark.parametrize("name", ["config.json", "status.json", "metrics.json", "labels.json", "split.json",
                                  "history.csv", "predictions.csv"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_run_files_are_read_as_damaged_never_raise(trained_scratch_run, tmp_path, monkeypatch, name, kind):
    ws = tmp_path / "ws"
    shutil.copytree(trained_scratch_run, ws / "runs" / "scratch")
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))
    run = get_run(ws / "runs" / "scratch")
    damage(run.file(name), kind)
    assert isinstance(run.config_dict(), dict) and isinstance(run.config_dict().get("train", {}), dict)
    assert isinstance(run.metrics() or {}, dict)
    assert all(isinstance(c, str) for c in run.labels())
    assert isinstance(run.split() or {}, dict)
    assert set(run.history().columns) >= {"epoch", "val_accuracy"}
    run.status()
    table = runs_table(ws / "runs")
    assert len(table) == 1
    # A truncated or empty history is still a history (whole lines are appended); other damage is named.
    if name != "predictions.csv" and not (name == "history.csv" and kind in ("empty", "truncated")):
        assert name in table["damaged"].iloc[0]
    delete_run(run)
    assert not run.path.exists()


@pytest.mark.parametrize("name,kind", [("config.json", "truncated"), ("config.json", "wrong type"),
                                       ("history.csv", "not utf-8"), ("metrics.json", "wrong type"),
                                       ("labels.json", "wrong type"), ("status.json", "wrong type"),
                                       ("split.json", "wrong type")])
@pytest.mark.parametrize("page", ["pages/4_training.py", "pages/5_predictions.py", "pages/6_runs.py"])
def test_pages_show_a_damaged_run_without_crashing(trained_scratch_run, tmp_path, monkeypatch, open_app_page,
                                                   name, kind, page):
    ws = tmp_path / "ws"
    shutil.copytree(trained_scratch_run, ws / "runs" / "scratch")
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))
    damage(ws / "runs" / "scratch" / name, kind)
    at = open_app_page(page, watch_run="scratch", run_id="scratch")
    assert not at.exception, at.exception


# ------------------------------------------------------------------------------- 8. bad command lines: one line


def cli(project_root: Path, workspace: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=project_root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "FEWSHOT_WORKSPACE": str(workspace)})


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "File \"" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    for word in words:
        assert word in errors[0], errors[0]


def fake_run(root: Path, name: str, mode: str, state: str, labels: list[str], head: bool) -> Path:
    run = create_run(TrainConfig(data=str(root), mode=mode), root / name)
    run.update_status(state=state, phase=state)
    run.write_labels(labels)
    if head:
        run.head_path.write_bytes(b"not really weights")
    return run.path


def test_bad_train_command_lines_say_one_line_and_leave_no_run_folder(workspace, tiny_dataset, project_root,
                                                                     trained_scratch_run, tmp_path):
    runs = tmp_path / "sources"
    failed = fake_run(runs, "failed", "bottleneck", "failed", [], head=False)
    other = fake_run(runs, "other", "bottleneck", "done", ["cat", "dog"], head=True)
    cases = {
        "seed": (["--seed", "-1"], "seed"),
        "missing": (["--mode", "finetune", "--from", str(tmp_path / "nope")], "not a run folder"),
        "scratch": (["--mode", "finetune", "--from", str(trained_scratch_run)], "scratch"),
        "failed": (["--mode", "finetune", "--from", str(failed)], "head"),
        "classes": (["--mode", "finetune", "--from", str(other)], "classes"),
    }
    for case, (args, word) in cases.items():
        out = tmp_path / "runs" / case
        result = cli(project_root, workspace, "train", str(tiny_dataset), "--out", str(out), *args)
        assert_one_line_error(result, word)
        assert not out.exists(), case


def test_export_model_file_of_a_scratch_run_says_one_line(workspace, project_root, trained_scratch_run):
    assert_one_line_error(cli(project_root, workspace, "export", str(trained_scratch_run), "--model-file"),
                          "scratch")


def test_out_pointing_at_a_file_is_refused_in_words(workspace, tiny_dataset, project_root, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    result = cli(project_root, workspace, "train", str(tiny_dataset), "--out", str(target / "run"))
    assert_one_line_error(result, "not a folder")
    assert "NotADirectoryError" not in result.stderr


def test_export_prints_only_the_path_on_stdout(workspace, project_root, trained_scratch_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_scratch_run, run)
    result = cli(project_root, workspace, "export", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [str(run / "model.tflite")]


def test_technical_log_on_the_training_page_shows_no_traceback(workspace, tiny_dataset, open_app_page):
    run = create_run(TrainConfig(data=str(tiny_dataset)), workspace / "runs" / "20260101-000000-bottleneck-x")
    run.log_path.write_text(
        "extracting features\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/app/core/training/train.py", line 12, in train\n'
        "    raise ValueError('boom')\n"
        "ValueError: boom in /srv/app/secret\n"
        "the run failed\n")
    run.update_status(state="failed", phase="failed", error="Training failed: ValueError: boom")
    at = open_app_page("pages/4_training.py", watch_run=run.id)
    shown = "\n".join(c.value for c in at.code)
    assert "extracting features" in shown and "the run failed" in shown
    assert "Traceback" not in shown and "/srv/app" not in shown


# ------------------------------------------------------------------------------- 5. many-page TIFFs


def test_a_many_page_tiff_is_read_from_its_first_page_without_walking_the_others(tmp_path, monkeypatch):
    from PIL import TiffImagePlugin

    from core import images

    path = tmp_path / "pages.tif"
    first = Image.new("RGB", (16, 12), (200, 30, 30))
    first.save(path, save_all=True, append_images=[Image.new("RGB", (16, 12), (0, 0, 200))] * 2000)
    seeks: list[int] = []
    real_seek = TiffImagePlugin.TiffImageFile._seek

    def counting_seek(self, frame):
        seeks.append(frame)
        return real_seek(self, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", counting_seek)
    rgb = images.load_rgb(path)
    assert rgb.shape == (12, 16, 3) and tuple(rgb[0, 0]) == (200, 30, 30)
    assert images.check_image(path) is None
    images.thumbnail(path, 8)
    assert max(seeks, default=0) == 0  # no page past the first was visited (counting pages visits them all)


# ------------------------------------------------------------------------------- 10. smaller


def test_a_zip_entry_whose_path_is_too_long_is_left_out_not_the_zip(tmp_path):
    from core.datasets import safe_extract_zip

    deep = "/".join(["d" * 200] * 40)  # each part is a legal name; the whole path is over PATH_MAX (4096)
    path = tmp_path / "long.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("red/ok.png", png_bytes())
        archive.writestr(f"red/{deep}/far.png", png_bytes())
        archive.writestr(f"red/{'n' * 300}.png", png_bytes())  # one name over NAME_MAX (255)
    notes = safe_extract_zip(path, tmp_path / "out")
    assert (tmp_path / "out" / "red" / "ok.png").exists()
    assert any("too long" in note for note in notes), notes


# ------------------------------------------------------------------------------- 4. large PNG/TIFF memory

_PNG_PEAK_PROBE = """
import json, resource, sys
from core import images
from core.tfenv import tf
images.load_resized(sys.argv[2], 224)  # TensorFlow's own buffers are not the image's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = images.load_resized(sys.argv[1], 224)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "shape": list(out.shape),
                  "left": out[112, 20].tolist(), "right": out[112, 200].tolist()}))
"""


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_100_megapixel_png_or_tiff_is_resized_in_bounded_memory(tmp_path, project_root, fmt):
    big = tmp_path / f"huge.{fmt.lower()}"
    image = Image.new("RGB", (10_000, 10_000), (220, 30, 30))
    image.paste((30, 30, 220), (5_000, 0, 10_000, 10_000))
    image.save(big, fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
    del image
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 300), (1, 2, 3)).save(small)
    probe = subprocess.run([sys.executable, "-c", _PNG_PEAK_PROBE, str(big), str(small)], cwd=project_root,
                           capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"10,000×10,000 {fmt}: peak memory growth {result['growth_mb']:.0f} MB")
    assert result["shape"] == [224, 224, 3]
    assert result["left"][0] > 180 > result["left"][2] and result["right"][2] > 180 > result["right"][0]
    # The decoded RGB image is 300 MB; before, a float32 copy of it (1.2 GB) and the resize's buffers came on top.
    assert result["growth_mb"] < 450, result
