"""End to end in a real browser: `streamlit run app.py` + Debian's headless Chromium driven by Playwright.

Visits every page, trains a bottleneck model on the demo dataset from the Training page, waits for it, and checks
the Predictions grid shows images and labels. A screenshot of each page is saved under test-output/e2e/.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PAGES = {"dataset": "Dataset", "label": "Label", "map": "Photo map", "augmentation": "Augmentation preview",
         "training": "Training", "predictions": "Predictions", "runs": "Runs", "presenter": "Presenter"}

pytestmark = pytest.mark.e2e
SERVERS: dict[str, subprocess.Popen] = {}  # the `server` fixture's process by its URL (a test may pause it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, project_root, chromium_path):
    ws = tmp_path_factory.mktemp("e2e_ws")
    port = free_port()
    env = dict(os.environ, FEWSHOT_WORKSPACE=str(ws), TF_CPP_MIN_LOG_LEVEL="3", FEWSHOT_EAGER_WORKER="1")
    log = open(ws / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"],
                            cwd=project_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start:\n" + (ws / "server.log").read_text()[-3000:])
    SERVERS[url] = proc
    yield url, ws
    SERVERS.pop(url, None)
    from core.engine.worker import stop_worker

    stop_worker(ws / "engine", timeout=60)  # the server started it (the warm engine); the test stops it
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def output(project_root) -> Path:
    """Where the screenshots go: test-output/e2e (git ignores it)."""
    folder = project_root / "test-output" / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(server, chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_navigation_timeout(120_000)  # a loaded machine (a page loading TensorFlow) is slow
    new = context.new_page()
    new.console_lines = []  # what the page's scripts said: kept with a failing test's screenshot
    new.on("console", lambda msg: new.console_lines.append(f"{msg.type}: {msg.text}"))
    new.on("pageerror", lambda exc: new.console_lines.append(f"pageerror: {exc}"))
    yield new
    context.close()


def wait_idle(page, title: str | None = None, timeout: float = 120_000) -> None:
    """Wait until the page shows its title (inside the app frame: the sidebar says Few-Shot Studio) and Streamlit
    has finished running the script (its status widget is gone for a while), with no dialog over the page."""
    page.wait_for_selector("[data-testid='stSidebar'] >> text=Few-Shot Studio", timeout=timeout)
    if title:
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=timeout)
    for _ in range(2):  # twice: a page may rerun once right after its first run
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=timeout)
        page.wait_for_timeout(700)
    # The app opens no dialog: one Streamlit put up (a page not found, a lost connection) leaves the page under it
    # inert, and every click after it times out.
    dialogs = page.locator("[data-testid='stDialog']")
    assert dialogs.count() == 0, dialogs.all_inner_texts()


def wait_for_text(page, text: str, output: Path, name: str, title: str, timeout: float = 60_000) -> None:
    """Wait until the page shows `text`; if it does not, keep what the page showed (screenshot, text, console under
    test-output/e2e/NAME-*) and reload it, as a user would: after the reload it must show `text`.

    Seen rarely, each time after a chain of fragment reruns and full reruns: the Predictions page went blank after
    a run switch (once in ~6 runs under heavy load), and the Training page, after its run finished, showed its
    title and settings but no results (CI, 2026-12-04; not reproduced in 4 runs here). No console error, nothing
    in the server log; the results on disk were right. Kept for whoever finds out why."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shows = f"() => document.body.innerText.includes({json.dumps(text)})"
    try:
        page.wait_for_function(shows, timeout=timeout)
    except PlaywrightTimeout:
        page.screenshot(path=str(output / f"{name}-missing.png"), full_page=True)
        (output / f"{name}-missing.txt").write_text(page.inner_text("body") + "\n\n--- console\n"
                                                    + "\n".join(page.console_lines))
        page.reload()
        wait_idle(page, title)
        page.wait_for_function(shows, timeout=timeout)


def assert_no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:3000]


def test_every_page_renders(server, page, output):
    url, _ = server
    for name, title in PAGES.items():
        page.goto(f"{url}/{name}")
        wait_idle(page, title)
        assert_no_exception(page)
        page.screenshot(path=str(output / f"{name}.png"), full_page=True)
    # The Dataset page by its name in a later session than the server's first (which runs in the pages/ folder mode
    # and serves it): Streamlit serves the default page at / only, and said "Page not found" here (app.py).
    page.goto(f"{url}/dataset")
    wait_idle(page, "Dataset")
    body = page.inner_text("body")
    for cls in ("fish", "monuments", "renewable_energy", "tools"):
        assert cls in body


def test_train_from_the_browser_and_see_predictions(server, page, output):
    url, ws = server
    page.goto(f"{url}/training")
    wait_idle(page, "Training")
    page.get_by_role("button", name="Start training").click()
    # The run is its own process; the page polls it every second until it finishes.
    page.wait_for_selector("text=Finished", timeout=300_000)
    wait_idle(page)
    wait_for_text(page, "Validation accuracy", output, "training-done", "Training")
    assert_no_exception(page)
    page.screenshot(path=str(output / "training-done.png"), full_page=True)

    page.goto(f"{url}/predictions")
    wait_idle(page, "Predictions")
    assert_no_exception(page)
    grid_images = page.locator("[data-testid='stImage'] img, [data-testid='stFullScreenFrame'] img")
    assert grid_images.count() >= 10
    body = page.inner_text("body")
    assert any(cls in body for cls in ("fish", "monuments", "renewable_energy", "tools"))
    assert "%" in body  # confidences
    page.screenshot(path=str(output / "predictions-grid.png"), full_page=True)

    page.goto(f"{url}/runs")
    wait_idle(page, "Runs")
    assert_no_exception(page)
    page.screenshot(path=str(output / "runs-after.png"), full_page=True)
    runs = list((ws / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.keras").exists()


def grid_columns(page) -> int:
    """Cards in the first row of the Predictions grid (same top edge as the first card)."""
    return page.evaluate("""() => {
        const cards = [...document.querySelectorAll('[class*="st-key-fsgrid-pred"] > div')];
        if (!cards.length) return 0;
        const top = Math.round(cards[0].getBoundingClientRect().top);
        return cards.filter(c => Math.round(c.getBoundingClientRect().top) === top).length;
    }""")


def names_broken_mid_word(page) -> list[str]:
    """Grid names that wrap onto a second line or are cut without their tooltip."""
    return page.evaluate("""() => [...document.querySelectorAll('[class*="st-key-fsgrid-pred"] .fs-name')]
        .filter(e => e.getClientRects().length && (e.scrollHeight > 1.8 * parseFloat(getComputedStyle(e).lineHeight)
                                                   || !e.title))
        .map(e => e.innerText)""")


def confusion_room(page) -> dict:
    """The confusion matrix's width and the per-class table's overflow on the Predictions page, against the main
    column's content width (whatever element draws the table: st.dataframe's scroller or an HTML table)."""
    return page.evaluate("""() => {
        const main = document.querySelector('.stMainBlockContainer');
        const style = getComputedStyle(main);
        const room = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        const chart = document.querySelector("[data-testid='stPlotlyChart']").getBoundingClientRect();
        const table = document.querySelector(".fs-table, [data-testid='stDataFrame'] .dvn-scroller");
        const names = [...document.querySelectorAll('.fs-table .fs-name')];
        return {room, chart: chart.width, chart_top: chart.top, table_top: table.getBoundingClientRect().top,
                table_overflow: table.scrollWidth - table.clientWidth,
                names_cut: names.filter(e => e.scrollWidth > e.clientWidth).map(e => e.innerText)};
    }""")


def show_confusion(page) -> None:
    """Scroll the main column so the confusion matrix's panel starts at the top of the window (a screenshot of
    the page shows the window only: the main column is Streamlit's own scrolling box)."""
    page.evaluate("""() => {
        const chart = document.querySelector("[data-testid='stPlotlyChart']");
        const panel = chart.closest("[class*='st-key-fspanels-'], [data-testid='stHorizontalBlock']");
        panel.scrollIntoView({block: 'start'});
        document.querySelector("[data-testid='stMain']").scrollBy(0, -80);  // clear of Streamlit's header
    }""")
    page.wait_for_timeout(300)


def test_layout_fits_800_and_1400_px_and_choices_survive_a_reload(server, page, output, project_root, demo_run):
    """Issue 12 in the browser: the dataset and the training choices (mode, epochs) survive a reload and open in a
    second tab; the grid has fewer columns at 800 px than at 1400 px and keeps names whole; the confusion matrix
    and the per-class table sit side by side at 1400 px and stack, each as wide as the page, at 800 px; no
    request leaves the machine (the page icon is served locally)."""
    url, ws = server
    if not any((ws / "runs").glob("*/predictions.csv")):  # run alone (-k layout): a finished run to look at
        shutil.copytree(demo_run, ws / "runs" / demo_run.name)
    mine = ws / "datasets" / "my photos"
    for cls in ("fish", "tools"):
        shutil.copytree(project_root / "data" / "demo" / cls, mine / cls)
    outside, errors = [], []

    def on_request(request) -> None:
        if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            outside.append(request.url)

    def on_console(message) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    try:
        page.goto(f"{url}/training?dataset=my+photos")
        wait_idle(page, "Training")
        assert "my photos" in page.locator("[data-testid='stSidebar']").inner_text()
        page.reload()
        wait_idle(page, "Training")
        assert "my photos" in page.locator("[data-testid='stSidebar']").inner_text()  # not back on the demo
        assert "dataset=my" in page.url
        # The training choices: from scratch, 12 epochs. A reload keeps them (not back on "Pretrained features").
        page.get_by_text("From scratch (baseline)").click()
        wait_idle(page, "Training")
        page.get_by_text("Settings (the defaults").click()
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("12")
        epochs.press("Enter")
        wait_idle(page, "Training")
        page.reload()
        wait_idle(page, "Training")
        assert page.get_by_role("radio", name="From scratch (baseline)").is_checked()
        page.get_by_text("Settings (the defaults").click()
        assert page.get_by_label("Epochs", exact=True).input_value() == "12"
        assert "mode=scratch" in page.url and "epochs=12" in page.url, page.url  # a bookmark keeps them too
        # A second tab opening the app's bare address shows the same choices (the workspace remembers them).
        second = page.context.new_page()
        try:
            second.goto(f"{url}/training")
            wait_idle(second, "Training")
            assert second.get_by_role("radio", name="From scratch (baseline)").is_checked()
            assert "my photos" in second.locator("[data-testid='stSidebar']").inner_text()
        finally:
            second.close()
        # Another page keeps it too (the navigation drops the query; the app writes it back).
        page.goto(f"{url}/dataset")
        wait_idle(page, "Dataset")
        assert "my photos" in page.locator("[data-testid='stSidebar']").inner_text()

        page.goto(f"{url}/predictions?dataset=*demo")
        wait_idle(page, "Predictions")
        wide = grid_columns(page)
        assert not names_broken_mid_word(page)
        room = confusion_room(page)  # side by side: the table level with the chart, half the room each
        assert abs(room["table_top"] - room["chart_top"]) < 200 and room["chart"] < 0.6 * room["room"], room
        page.screenshot(path=str(output / "predictions-1400.png"), full_page=True)
        show_confusion(page)
        page.screenshot(path=str(output / "predictions-confusion-1400.png"))
        page.set_viewport_size({"width": 800, "height": 1000})
        page.wait_for_timeout(800)
        narrow = grid_columns(page)
        assert 1 <= narrow < wide, (narrow, wide)
        assert not names_broken_mid_word(page)
        # Stacked at 800 px: the matrix takes (nearly) the whole main column, the table under it fits its width
        # and shows every demo class name whole.
        room = confusion_room(page)
        assert room["chart"] >= 0.9 * room["room"] and room["table_top"] > room["chart_top"], room
        assert room["table_overflow"] <= 1 and not room["names_cut"], room
        page.screenshot(path=str(output / "predictions-800.png"), full_page=True)
        show_confusion(page)
        page.screenshot(path=str(output / "predictions-confusion-800.png"))
        page.goto(f"{url}/runs")
        wait_idle(page, "Runs")
        page.screenshot(path=str(output / "runs-800.png"), full_page=True)
        assert_no_exception(page)
        assert not outside, outside  # the page icon came from the server, not a font CDN
        assert not [e for e in errors if "fonts.g" in e or "material" in e.lower()], errors
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.remove_listener("request", on_request)
        page.remove_listener("console", on_console)
        shutil.rmtree(mine, ignore_errors=True)
        page.goto(f"{url}/dataset?dataset=*demo")  # the next tests start on the demo
        wait_idle(page, "Dataset")


def test_label_new_photos_with_suggestions_and_retrain(server, page, tmp_path, project_root, output):
    """Issue 4 in the browser: copy the demo, upload unlabelled photos, accept the model's suggestions, retrain."""
    from PIL import Image, ImageOps

    url, ws = server
    page.goto(f"{url}/label")
    wait_idle(page, "Label")
    page.locator(".st-key-lbl_make_copy button").click()
    wait_idle(page, "Label")
    assert_no_exception(page)
    # Three new photos (mirrored demo tools: new content, so the retrain extracts exactly these three).
    new = []
    for i, src in enumerate(sorted((project_root / "data" / "demo" / "tools").glob("*.jpg"))[:3]):
        path = tmp_path / f"new photo {i}.jpg"
        ImageOps.mirror(Image.open(src).convert("RGB")).save(path, quality=92)
        new.append(str(path))
    page.locator(".st-key-lbl_upload_0 input[type=file]").set_input_files(new)
    page.wait_for_selector("text=Added 3 photos", timeout=60_000)
    wait_idle(page, "Label")
    page.screenshot(path=str(output / "label-suggestions.png"), full_page=True)
    page.locator(".st-key-lbl_accept button").click()
    page.wait_for_function("() => document.body.innerText.includes('tools: 42')", timeout=60_000)
    wait_idle(page, "Label")
    assert_no_exception(page)
    copy = next(p for p in (ws / "datasets").iterdir() if p.is_dir())
    left = list((copy / "unlabelled").glob("*.jpg")) if (copy / "unlabelled").exists() else []
    assert not left, (left, list(copy.iterdir()))
    assert len(list((copy / "tools").glob("new photo*.jpg"))) == 3  # the model said "tools" for all three
    page.screenshot(path=str(output / "label-after-accept.png"), full_page=True)

    page.get_by_role("button", name="Retrain with my fixes").click()
    # The Label page follows the retraining live, then says what it gave and opens its predictions.
    page.wait_for_selector("text=Retrained in", timeout=300_000)
    assert_no_exception(page)
    page.screenshot(path=str(output / "label-retrained.png"), full_page=True)
    runs = sorted((ws / "runs").iterdir())
    assert len(runs) == 2
    page.get_by_role("button", name="Show the new results").click()
    wait_idle(page, "Predictions")
    assert_no_exception(page)
    n_train = json.loads((runs[-1] / "metrics.json").read_text())["n_train"]
    # The new run's summary (the first run had 3 fewer): the page may still be drawing it after the switch.
    wait_for_text(page, f"{n_train} training images", output, "predictions-after-retrain", "Predictions",
                  timeout=90_000)
    page.screenshot(path=str(output / "predictions-after-retrain.png"), full_page=True)
    page.goto(f"{url}/training")
    wait_idle(page, "Training")
    page.wait_for_selector("text=Finished", timeout=300_000)
    metrics = json.loads((runs[-1] / "metrics.json").read_text())
    assert metrics["n_extracted"] == 3 and metrics["n_train"] + metrics["n_val"] == 125
    page.goto(f"{url}/runs")
    wait_idle(page, "Runs")
    assert_no_exception(page)


def test_predictions_wait_for_the_model_file_then_show_what_needs_it(server, page, demo_run, output):
    """A bottleneck run is done before its model.keras exists: the page shows the results at once and polls until
    the file lands (here: put back by the test while a live process stands in for the run's)."""
    from core.runs import get_run, process_start_time

    url, ws = server
    run_dir = ws / "runs" / f"zz-{demo_run.name}"
    shutil.copytree(demo_run, run_dir)
    saved = run_dir.parent / "model.keras.saved"
    (run_dir / "model.keras").rename(saved)
    stand_in = subprocess.Popen(["sleep", "300"])
    try:
        get_run(run_dir).update_status(model_file="writing", pid=stand_in.pid,
                                       pid_start=process_start_time(stand_in.pid))
        page.goto(f"{url}/predictions?run={run_dir.name}")  # else the page reopens the run last looked at
        page.wait_for_selector("text=Writing the model file", timeout=120_000)
        page.wait_for_selector("text=Confusion matrix", timeout=60_000)
        assert page.get_by_text("Photos or a .zip").count() == 0
        assert_no_exception(page)
        page.screenshot(path=str(output / "predictions-model-writing.png"), full_page=True)

        saved.rename(run_dir / "model.keras")
        get_run(run_dir).update_status(model_file="ready")
        page.wait_for_selector("text=Photos or a .zip", timeout=30_000)  # the fragment reran the whole page
        assert page.get_by_text("Writing the model file").count() == 0
        assert_no_exception(page)
    finally:
        stand_in.kill()
        stand_in.wait()


def test_presenter_view_reads_on_a_projector(server, page, demo_story, output):
    """Issue 17 at 1280×720: a finished recipe story (the demo_story fixture's three runs, copied in) told in large
    type with nothing to configure, then the learning curve drawn from the cached features with one click."""
    url, ws = server
    for run_dir in (demo_story / "runs").iterdir():
        shutil.copytree(run_dir, ws / "runs" / run_dir.name)
    page.set_viewport_size({"width": 1280, "height": 720})
    try:
        page.goto(f"{url}/presenter")
        wait_idle(page, "Presenter")
        assert_no_exception(page)
        body = page.inner_text("body")
        for title in ("From scratch", "Pretrained features", "Fine-tuned"):
            assert title in body
        assert page.locator("[data-testid='stMetricValue']").count() == 3
        # Readable from the back of a room: big numbers, body text above the usual 16 px, nothing cut off sideways.
        value_px = page.evaluate("() => { let el = document.querySelector(\"[data-testid='stMetricValue']\"); "
                                 "while (el.firstElementChild) el = el.firstElementChild; "  # what draws the digits
                                 "return parseFloat(getComputedStyle(el).fontSize); }")
        text_px = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector("
                                "\".stMainBlockContainer [data-testid='stMarkdownContainer'] p\")).fontSize)")
        assert value_px >= 48 and text_px >= 20, (value_px, text_px)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(output / "presenter-story.png"))  # what the projector shows: the first screen
        page.screenshot(path=str(output / "presenter-story-full.png"), full_page=True)

        page.get_by_role("tab", name="How many photos do I need?").click()
        page.get_by_role("button", name="Draw the learning curve").click()
        page.wait_for_selector("text=photos per class are enough", timeout=300_000)
        wait_idle(page)
        page.mouse.move(0, 700)  # no button tooltip in the screenshot
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.wait_for_timeout(500)
        assert_no_exception(page)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(output / "presenter-curve.png"))
        page.screenshot(path=str(output / "presenter-curve-full.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def download_section_box(page) -> dict:
    """The Predictions page's Download section on screen, from its title to the last conversion's row, scrolled to
    the top of the window (the main column is Streamlit's own scrolling box)."""
    return page.evaluate("""() => {
        const title = [...document.querySelectorAll('h3')].find(h => h.innerText.trim() === 'Download');
        title.scrollIntoView({block: 'start'});
        document.querySelector("[data-testid='stMain']").scrollBy(0, -70);  // clear of Streamlit's header
        const last = document.querySelector('.st-key-pred_dl_web, .st-key-pred_make_web')
            .closest("[data-testid='stHorizontalBlock']");
        const top = title.getBoundingClientRect().top, bottom = last.getBoundingClientRect().bottom;
        const main = document.querySelector('.stMainBlockContainer').getBoundingClientRect();
        return {x: main.left, y: top - 12, width: main.width, height: bottom - top + 24};
    }""")


def test_make_each_conversion_and_download_it_with_its_check(server, chromium, demo_run, output):
    """The exports from the Predictions page: each format's Make button converts model.keras and re-runs the file
    on the validation photos; its download then sits beside that check (the same answer as the app, the largest
    difference, the accuracy)."""
    from urllib.parse import parse_qs, urlparse

    from core.export.formats import FORMATS

    url, ws = server
    copied = None
    if not any((ws / "runs").glob("*/predictions.csv")):  # run alone: a finished run to convert
        copied = ws / "runs" / demo_run.name
        shutil.copytree(demo_run, copied)
    context = chromium.new_context(viewport={"width": 1400, "height": 1400})  # the whole section in the window
    context.set_default_navigation_timeout(120_000)
    page = context.new_page()
    run_dir = None
    try:
        page.goto(f"{url}/predictions")
        wait_idle(page, "Predictions")
        # The run the page shows (the app writes it into the URL), converted from model.keras alone.
        run_dir = ws / "runs" / parse_qs(urlparse(page.url).query)["run"][0]
        assert not any((run_dir / fmt.file).exists() for fmt in FORMATS.values()), run_dir
        for fmt in FORMATS.values():
            key = fmt.name.replace("-", "_")
            page.locator(f".st-key-pred_make_{key} button:visible").click(timeout=60_000)  # not its hidden twin
            page.wait_for_selector(f".st-key-pred_dl_{key} button:visible", timeout=300_000)  # converted and checked
            wait_idle(page, "Predictions")
            assert (run_dir / fmt.file).stat().st_size > 100_000
        assert_no_exception(page)
        checks = json.loads((run_dir / "exports.json").read_text())
        assert set(checks) == set(FORMATS)
        body = page.inner_text("body")
        for fmt in FORMATS.values():  # each download beside its check, in the words the page uses
            assert checks[fmt.name]["n_images"] > 0 and checks[fmt.name]["same_top1"] >= 0.9, checks[fmt.name]
        assert body.count("validation photos") >= len(FORMATS) and body.count("the same answer as the app") \
            == len(FORMATS), body[-3000:]
        assert "ONNX Runtime" in body  # the web page's check: its ONNX model inside, run by ONNX Runtime
        page.mouse.move(0, 0)  # no tooltip in the screenshot
        page.wait_for_timeout(800)
        box = download_section_box(page)
        assert 400 < box["height"] < 1400, box
        page.wait_for_timeout(400)
        page.screenshot(path=str(output / "exports.png"), clip=download_section_box(page))
    finally:
        context.close()
        for fmt in FORMATS.values():  # the run as it was: later tests look at its downloads
            if run_dir is not None:
                (run_dir / fmt.file).unlink(missing_ok=True)
        if run_dir is not None:
            (run_dir / "exports.json").unlink(missing_ok=True)
        if copied is not None:
            shutil.rmtree(copied, ignore_errors=True)  # later tests count the runs


def test_dots_boxed_on_the_photo_map_show_their_photos(server, page, output):
    """Issue 13's photo map: a box dragged over the whole map (Plotly's box select, with the mouse) selects every
    photo of the demo, shown under the map; the demo is read-only, so the page offers its copy, not a move."""
    url, _ = server
    page.goto(f"{url}/map?dataset=*demo")
    wait_idle(page, "Photo map")
    plot = page.locator("[data-testid='stPlotlyChart'] .nsewdrag").first
    plot.wait_for(timeout=300_000)  # placed from the cached features (t-SNE): a while on a loaded machine
    wait_idle(page, "Photo map")
    assert "Select dots on the map" in page.inner_text("body")  # nothing selected yet, no photo shown
    assert page.locator("[data-testid='stImage']").count() == 0
    page.locator("[data-testid='stPlotlyChart'] [data-title='Box Select']").first.click()
    box = plot.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=20)
    page.mouse.up()
    page.wait_for_selector("text=The first 48 of 122 photos are shown", timeout=120_000)  # all of the demo
    wait_idle(page, "Photo map")
    assert_no_exception(page)
    assert page.locator("[data-testid='stImage']").count() == 48
    assert "read-only" in page.inner_text("body") and page.get_by_role("button", name="Move").count() == 0
    page.mouse.move(0, 0)
    page.evaluate("""() => {
        document.querySelector("[data-testid='stPlotlyChart']").scrollIntoView({block: 'start'});
        document.querySelector("[data-testid='stMain']").scrollBy(0, -80);  // clear of Streamlit's header
    }""")
    page.wait_for_timeout(500)
    page.screenshot(path=str(output / "photo-map.png"))


STOP_CONTROLS_JS = """() => [...document.querySelectorAll('button, a, [role=button], [role=menuitem]')]
    .filter(e => /stop/i.test(e.innerText || e.getAttribute('aria-label') || '') && e.checkVisibility())
    .map(e => {
        const keyed = e.closest('[class*="st-key-"]');
        const key = keyed ? [...keyed.classList].find(c => c.startsWith('st-key-')) : e.closest('[data-testid]')
            ?.dataset.testid;
        return `${(e.innerText || e.getAttribute('aria-label')).replace(/\\s+/g, ' ').trim()} (${key})`;
    })"""


def visible_stop_controls(page) -> list[str]:
    """Every control on screen that says Stop (a button, a link, a menu item), with the key or test id of what
    holds it: Streamlit's own status-widget Stop would stop the page's script, not the training."""
    return page.evaluate(STOP_CONTROLS_JS)


def watch_stop_controls(page) -> None:
    """From now on, note the visible Stop controls at every change of the page (`watched_stop_controls` tells):
    Streamlit's status widget, with its own Stop, shows only while a rerun lasts (after half a second)."""
    page.evaluate(f"""() => {{
        const controls = {STOP_CONTROLS_JS};
        const watch = window.__stopWatch = {{seen: new Set(), changes: 0, with_status: 0}};
        const look = () => {{
            watch.changes++;
            if (document.querySelector("[data-testid='stStatusWidgetRunningIcon']")) watch.with_status++;
            watch.seen.add(JSON.stringify(controls()));
        }};
        watch.observer = new MutationObserver(look);
        watch.observer.observe(document.body, {{subtree: true, childList: true, attributes: true}});
        look();
    }}""")


def watched_stop_controls(page) -> dict:
    """Each different set of visible Stop controls seen since `watch_stop_controls`, how many changes of the page
    were looked at, and in how many of them Streamlit's status widget said it was running."""
    return page.evaluate("""() => { const w = window.__stopWatch; w.observer.disconnect();
        return {seen: [...w.seen].map(JSON.parse), changes: w.changes, with_status: w.with_status}; }""")


def state_of(run_dir: Path) -> str | None:
    """A run's state as its status.json on disk says."""
    try:
        return json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError):
        return None


def test_one_stop_while_training_and_it_stops_the_run(server, page, output):
    """Issue 12: while a training runs, the page shows one Stop (the training's, not Streamlit's own beside it),
    and clicking it stops the run: its status on disk becomes "stopped"."""
    url, ws = server
    before = set((ws / "runs").iterdir()) if (ws / "runs").exists() else set()
    # From scratch, long enough to be caught running (the mode and epochs come from the URL, as a bookmark would).
    page.goto(f"{url}/training?dataset=*demo&mode=scratch&epochs=300")
    wait_idle(page, "Training")
    page.get_by_text("Settings (the defaults").click()
    patience = page.get_by_label("Patience", exact=True)
    patience.fill("100")  # no early stop either
    patience.press("Enter")
    wait_idle(page, "Training")
    page.get_by_role("button", name="Start training").click()
    run_dir = None
    try:
        page.wait_for_selector("[class*='st-key-stop_'] button", timeout=120_000)
        run_dir = next(iter(set((ws / "runs").iterdir()) - before))
        assert json.loads((run_dir / "config.json").read_text())["train"]["mode"] == "scratch"
        page.wait_for_selector("h3:has-text('Training:')", timeout=120_000)  # running, not only queued
        # Watched at every change of the page while the live view reruns twice a second and the settings below it
        # rerun the whole page (a mode changed and changed back). Streamlit shows its status widget, with its own
        # Stop, once a rerun has lasted half a second, as on a laptop busy training: the server is paused for two
        # seconds during the first rerun so that this happens here on any machine.
        watch_stop_controls(page)
        page.get_by_text("Start another training").click()
        page.get_by_text("Pretrained + fine-tune (slower, best)").click()
        server_process = SERVERS[url]
        server_process.send_signal(signal.SIGSTOP)
        try:
            page.wait_for_timeout(2000)
        finally:
            server_process.send_signal(signal.SIGCONT)
        page.wait_for_timeout(1500)
        page.get_by_text("From scratch (baseline)").click()
        page.wait_for_timeout(1500)
        watched = watched_stop_controls(page)
        print("stop controls while training:", watched)
        assert watched["with_status"] > 0, watched  # the status widget did show: the check covered it
        assert all(len(controls) == 1 and "st-key-stop_" in controls[0] for controls in watched["seen"]), watched
        page.screenshot(path=str(output / "training-running.png"))
        # Streamlit keeps a hidden copy of a button with a tooltip next to the shown one: click the shown one.
        page.locator("[class*='st-key-stop_'] button:visible").click()
        deadline = time.time() + 120
        while state_of(run_dir) != "stopped" and time.time() < deadline:
            time.sleep(0.5)
        assert state_of(run_dir) == "stopped", (run_dir / "status.json").read_text()
        page.wait_for_selector("h3:has-text('Stopped')", timeout=60_000)
        wait_idle(page, "Training")
        assert_no_exception(page)
        assert not visible_stop_controls(page)  # nothing left to stop
        page.screenshot(path=str(output / "training-stopped.png"))
    finally:
        if run_dir is not None and run_dir.exists() and state_of(run_dir) != "running":
            shutil.rmtree(run_dir, ignore_errors=True)  # later tests count the runs
        page.goto(f"{url}/dataset?dataset=*demo")  # the defaults again (the URL names no training choice)
        wait_idle(page, "Dataset")


def shoot(page, key: str, saved_text: str, attempts: int = 4) -> None:
    """Press the camera's shutter until the page says `saved_text`. The first frame must be playing (a click before
    it captures nothing), and on a loaded machine a click can land while Streamlit redraws the widget: then the
    shot never reaches the script, and pressing again is what a user does."""
    for attempt in range(attempts):
        page.wait_for_function(f"() => (document.querySelector('.st-key-{key} video') || {{}}).readyState >= 2",
                               timeout=120_000)
        page.wait_for_timeout(800)
        page.locator(f".st-key-{key} button:has-text('Take photo')").click(timeout=60_000)
        try:
            page.wait_for_selector(f"text={saved_text}", timeout=45_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def test_camera_shots_go_into_a_class_and_try_it_answers_a_shot(server, camera_chromium, demo_run, output):
    """Issue 13 in the browser, with Chromium's fake camera: two shots in a row into a class of a new dataset (each
    a file of its own), then, where a run finished, a dropped photo and a camera shot tried, each answered with
    class bars (the photo with its heatmap too)."""
    url, ws = server
    context = camera_chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    context.set_default_navigation_timeout(120_000)
    page = context.new_page()
    run_dir = ws / "runs" / f"zz-cam-{demo_run.name}"
    shutil.copytree(demo_run, run_dir)
    try:
        page.goto(f"{url}/dataset")
        wait_idle(page, "Dataset")
        page.get_by_text("Bring your own photos").click(timeout=120_000)  # closed while the demo is the dataset
        page.locator(".st-key-ds_new_name input").fill("camshots")
        page.locator(".st-key-ds_new_name input").press("Enter")
        wait_idle(page, "Dataset")
        page.get_by_role("button", name="Create dataset").click()
        wait_idle(page, "Dataset")
        page.locator(".st-key-ds_new_class input").fill("mugs")
        page.locator(".st-key-ds_new_class input").press("Enter")
        wait_idle(page, "Dataset")
        page.get_by_role("button", name="Add class").click()
        page.wait_for_selector("text=Added the class", timeout=60_000)
        wait_idle(page, "Dataset")
        page.get_by_text("Take photos with the camera").click(timeout=120_000)
        for n in (1, 2):  # each saved shot brings a fresh camera widget (its key counts the shots)
            shoot(page, f"ds_camera_{n - 1}", f"Saved shot {n} into")
            wait_idle(page, "Dataset")
        assert_no_exception(page)
        page.get_by_text("Take photos with the camera").scroll_into_view_if_needed()
        page.screenshot(path=str(output / "camera-shots.png"))
        shots = sorted((ws / "datasets" / "camshots" / "mugs").glob("camera-*.jpg"))
        assert len(shots) == 2 and shots[0].read_bytes() != shots[1].read_bytes()  # two shots, two files

        # Where a run finished (a new session, back on the demo: one class of two shots is not trainable), a
        # camera shot, answered with its class bars.
        context.close()
        context = camera_chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
        context.set_default_navigation_timeout(120_000)
        page = context.new_page()
        page.goto(f"{url}/training?dataset=*demo")
        wait_idle(page, "Training")
        page.wait_for_selector("text=Try it now", timeout=120_000)
        # First a dropped photo of the demo's tools, answered with its heatmap (on by default) and class bars.
        photo = sorted((Path(__file__).parent.parent / "data" / "demo" / "tools").glob("*.jpg"))[0]
        page.locator(".st-key-train_try_files input[type=file]").set_input_files(str(photo))
        page.wait_for_selector("text=Where it looked for", timeout=180_000)
        wait_idle(page, "Training")
        assert_no_exception(page)
        dropped = page.locator("[class*='st-key-train_try_card_']").first
        assert "%" in dropped.inner_text() and dropped.locator("img").count() >= 1  # the heatmap and the bars
        page.get_by_text("Where it looked for").scroll_into_view_if_needed()
        page.screenshot(path=str(output / "try-it-heatmap.png"))
        page.locator(".st-key-train_try_source button:has-text('Camera')").click()
        shoot(page, "train_try_camera", "camera shot")
        wait_idle(page, "Training")
        card = page.locator("[class*='st-key-train_try_card_']").first
        assert "%" in card.inner_text()  # the shot's answer and its class bars
        assert_no_exception(page)
        card.scroll_into_view_if_needed()
        page.screenshot(path=str(output / "try-it-camera.png"))
    finally:
        context.close()
        shutil.rmtree(run_dir, ignore_errors=True)  # other tests count the runs
        shutil.rmtree(ws / "datasets" / "camshots", ignore_errors=True)
