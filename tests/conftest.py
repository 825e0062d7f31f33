"""Shared fixtures: a private workspace per test, images made on the spot, one real finished run per session.

Tests take these helpers as fixtures (`make_image`, `open_app_page`, `project_root`...), never by importing this
file: pytest loads conftest.py itself, and `from conftest import ...` would only work with tests/ on sys.path.
The project root is on sys.path through pyproject.toml (`pythonpath`), so tests import core/ and ui/ directly.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO = PROJECT_ROOT / "data" / "demo"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Converted backbone weights are shared by every test (converting again would only cost time).
os.environ.setdefault("FEWSHOT_WEIGHTS_DIR", str(Path.home() / ".cache" / "fewshot" / "weights"))
# AppTests start no warm worker ahead of need (the browser test turns it back on for its server): a test that
# trains starts one by submitting, and `_stop_warm_workers` ends it.
os.environ.setdefault("FEWSHOT_EAGER_WORKER", "0")


@pytest.fixture(autouse=True)
def _stop_warm_workers(tmp_path):
    """A test stops what it started: the warm worker of any workspace under its temporary folder."""
    yield
    from core.engine.worker import stop_worker

    for info in tmp_path.rglob("engine/worker.json"):
        stop_worker(info.parent, timeout=60)


def _make_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 40),
               fmt: str | None = None, noise: int = 20, seed: int = 0) -> Path:
    """A small real image file: a colour with some noise and a darker square, so classes are learnable."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color, float) + rng.normal(0, noise, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    arr[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] //= 2
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _make_dataset(root: Path, classes: dict[str, tuple[int, int, int]] | None = None, per_class: int = 8,
                 size: tuple[int, int] = (48, 40)) -> Path:
    """ROOT/<class>/img_<i>.png with one colour per class."""
    classes = classes or {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
    for c_index, (name, color) in enumerate(classes.items()):
        for i in range(per_class):
            _make_image(root / name / f"img_{i}.png", color, size, seed=1000 * c_index + i)
    return root


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty workspace (datasets, runs, feature cache) for one test."""
    ws = tmp_path / "workspace"
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return _make_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A finished bottleneck run on the built-in demo dataset (real EfficientNet-Lite0), made once per session
    in its own workspace. Tests must not modify it."""
    ws = tmp_path_factory.mktemp("demo_ws")
    with pytest.MonkeyPatch.context() as env:  # a session fixture: undone when the block ends
        env.setenv("FEWSHOT_WORKSPACE", str(ws))
        from core.config import TrainConfig
        from core.engine import execute_run
        from core.runs import create_run

        run = create_run(TrainConfig(data=str(DEMO), mode="bottleneck", epochs=15), ws / "runs" / "demo-run")
        status = execute_run(run)
        assert status.state == "done", status
    return run.path


@pytest.fixture(scope="session")
def demo_story(tmp_path_factory) -> Path:
    """A finished recipe story on the demo dataset (scratch 2 epochs, bottleneck, finetune 1 epoch), queued in a
    row for a warm worker like the presenter page does, made once per session in its own workspace (returned).
    Tests must not modify it."""
    ws = tmp_path_factory.mktemp("story_ws")
    with pytest.MonkeyPatch.context() as env:  # a session fixture: undone when the block ends
        env.setenv("FEWSHOT_WORKSPACE", str(ws))
        from core.config import TrainConfig
        from core.engine.worker import stop_worker
        from core.story import StorySettings, start_story

        story = start_story(TrainConfig(data=str(DEMO)), StorySettings(scratch_epochs=2, bottleneck_epochs=15,
                                                                      finetune_epochs=1))
        try:
            _wait_for(lambda: not story.active, timeout=1200, interval=0.5)
        finally:
            # Stopped once the three runs are done: on its way out the worker writes what they still owe (the
            # bottleneck run's model.keras, the checks) at once, where an idle worker would first wait for its
            # queue to stay empty (10 s before an export check).
            stop_worker(ws / "engine", timeout=600)
        assert set(story.states().values()) == {"done"}, {s: r.status() for s, r in story.ordered()}
        assert all(run.model_file_state() == "ready" for _, run in story.ordered()), \
            {s: r.status() for s, r in story.ordered()}
    return ws


def _wait_for(predicate, timeout: float = 300, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def _open_app_page(page: str, timeout: float = 180, **state):
    """An AppTest of app.py switched to `page` ("pages/…py"), with `state` seeded into session_state."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def run_copy(demo_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the demo run in its own workspace: tests that change files never touch the shared one."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(demo_run, ws / "runs" / demo_run.name)
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(ws))
    return ws / "runs" / demo_run.name


# ------------------------------------------------------------------------------------------ a real browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, which the browser tests drive (Playwright's own browser download needs internet)."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is missing: scripts/test.sh installs it (apt-get install chromium chromium-driver).")
    return path


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # one per module: the sync API cannot run two at once in a thread
        yield p


@pytest.fixture(scope="module")
def chromium(playwright, chromium_path):
    """Headless Chromium under Playwright, one per test module (`chromium.new_context(...)` per use)."""
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def camera_chromium(playwright, chromium_path):
    """A second Chromium with its own test camera (a moving pattern) and an automatic yes to "allow the camera?"."""
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    yield browser
    browser.close()


# ------------------------------------------------------------------------------------- helpers as fixtures

@pytest.fixture(scope="session")
def project_root() -> Path:
    """The project folder (app.py, pages/, core/...): where subprocesses run and AppTests find app.py."""
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def demo_dataset() -> Path:
    """The built-in demo dataset (data/demo): read-only, never modified by a test."""
    return DEMO


@pytest.fixture(scope="session")
def make_image() -> Callable[..., Path]:
    """`make_image(path, color=..., size=..., fmt=..., noise=..., seed=...)`: a small real image file."""
    return _make_image


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., Path]:
    """`make_dataset(root, classes=None, per_class=8, size=...)`: ROOT/<class>/img_<i>.png, a colour per class."""
    return _make_dataset


@pytest.fixture(scope="session")
def wait_for() -> Callable:
    """`wait_for(predicate, timeout=300, interval=0.1)`: poll until truthy (returned), or fail."""
    return _wait_for


@pytest.fixture(scope="session")
def open_app_page() -> Callable:
    """`open_app_page("pages/...py", timeout=180, **session_state)`: an AppTest of app.py on that page."""
    return _open_app_page
