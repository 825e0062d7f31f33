"""What a user waits for, from the click, in a real browser (issue 10): the warm engine against one process per
run, side by side on one machine.

For each executor (`worker`: the warm engine; `process`: a new OS process per run, the design before it), in
alternating rounds, on a fresh workspace and a freshly started server (for `worker`, started as scripts/start.sh
starts the app: the engine first, then the server):
  1. the shared tool ../shared/tools/loop_latency.py: click "Start training" (bottleneck, the built-in demo) →
     the new run's "Finished" header; three runs: the first right after the server start (cold cache, and the
     engine may still be warming), then two with the features cached;
  2. relabel 5 photos (in an editable copy of the demo, through core.labeling, as the Label page does), then click
     "Retrain with my fixes" on the Predictions page → "Retrained in" on the page (stamped by a MutationObserver
     when it enters the page; Playwright's own wait, which notices it later, is kept beside it); the page's own
     number (from the click, as it says) too.

    .venv/bin/python -m bench.loop [--rounds 2] [--executors worker process] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import DEMO, PROJECT_ROOT, machine_line, print_section, spread, table

LOOP_TOOL = Path(os.environ.get("FEWSHOT_LOOP_TOOL", PROJECT_ROOT.parent / "shared" / "tools" / "loop_latency.py"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(ws: Path, executor: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, FEWSHOT_WORKSPACE=str(ws), FEWSHOT_EXECUTOR=executor, FEWSHOT_EAGER_WORKER="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    if executor == "worker":  # as scripts/start.sh does: the engine starts first, then the server
        subprocess.run([sys.executable, "-c", "from core.engine import ensure_worker; ensure_worker()"],
                       cwd=PROJECT_ROOT, env=env, check=True)
    log = open(ws / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=PROJECT_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not start:\n" + (ws / "server.log").read_text()[-2000:])


def _stop_server(proc: subprocess.Popen, ws: Path) -> None:
    from core.engine.worker import stop_worker

    stop_worker(ws / "engine", timeout=60)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _relabel_five(ws: Path) -> Path:
    """An editable copy of the demo with 5 photos moved to another class (the Label page's journalled moves)."""
    os.environ["FEWSHOT_WORKSPACE"] = str(ws)
    from core import labeling

    copy = labeling.make_editable_copy(DEMO, "demo")
    fish = sorted((copy / "fish").glob("*.jpg"))[:5]
    labeling.move_to_class(copy, fish, "tools")
    return copy


# Stamps the moment "Retrained in" enters the page (the DOM changes; the paint follows within a frame). Playwright's
# own wait notices it later: it polls, and on 2 busy cores that added up to ~0.9 s in a probe.
_STAMP_RESULT = """() => { window.__retrained = null; new MutationObserver((_, obs) => {
    if (document.body.innerText.includes('Retrained in')) { window.__retrained = Date.now() / 1000; obs.disconnect(); }
  }).observe(document.body, {subtree: true, childList: true, characterData: true}); }"""


def _retrain_in_browser(url: str, ws: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/predictions", wait_until="networkidle")
        button = page.get_by_role("button", name="Retrain with my fixes")
        button.wait_for(timeout=120_000)
        time.sleep(1.0)
        page.evaluate(_STAMP_RESULT)
        clicked = time.time()  # the same clock as the page's Date.now(): one machine
        started = time.perf_counter()
        button.click()
        page.wait_for_selector("text=Retrained in", timeout=300_000)
        waited = time.perf_counter() - started
        shown = page.evaluate("window.__retrained")
        text = page.inner_text("body")
        browser.close()
    said = re.search(r"Retrained in ([\d.]+) s", text)
    newest = max((ws / "runs").glob("*/status.json"), key=lambda f: f.parent.name)  # run ids sort by time
    status = json.loads(newest.read_text())
    # Where the seconds went: the run folder's own clock (the click's script run creating it, the queue, training).
    steps = {k: round(status[k] - clicked, 2) for k in ("created_at", "started_at", "finished_at") if status.get(k)}
    return {"browser_s": round(shown - clicked, 2) if shown else round(waited, 2),
            "playwright_s": round(waited, 2), "page_says_s": float(said.group(1)) if said else None, "run": steps}


def one_round(executor: str, tmp: Path, index: int) -> dict:
    ws = tmp / f"ws-{executor}-{index}"
    ws.mkdir(parents=True)
    proc, url = _start_server(ws, executor)
    try:
        out = subprocess.run([sys.executable, str(LOOP_TOOL), url], capture_output=True, text=True, timeout=900,
                             env=dict(os.environ, LOOP_SHOTS=str(ws)))
        if out.returncode != 0:
            raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
        start = json.loads(out.stdout.strip().splitlines()[-1])
        _relabel_five(ws)
        retrain = _retrain_in_browser(url, ws)
    finally:
        _stop_server(proc, ws)
    print(f"  {executor} round {index}: start {start}, retrain {retrain}", file=sys.stderr, flush=True)
    return {"executor": executor, "first": start["first"], "warm": start["warm"], **retrain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--executors", nargs="+", default=["worker", "process"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not LOOP_TOOL.exists():
        sys.exit(f"{LOOP_TOOL} not found (set FEWSHOT_LOOP_TOOL)")
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-loop-"))
    rows: list[dict] = []
    try:
        for index in range(args.rounds):
            order = args.executors if index % 2 == 0 else list(reversed(args.executors))
            rows += [one_round(executor, tmp, index) for executor in order]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    out = []
    for executor in args.executors:
        mine = [r for r in rows if r["executor"] == executor]
        out.append([executor, spread([r["first"] for r in mine], 2), spread([w for r in mine for w in r["warm"]], 2),
                    spread([r["browser_s"] for r in mine], 2),
                    spread([r.get("playwright_s", r["browser_s"]) for r in mine], 2),
                    spread([r["page_says_s"] for r in mine], 2)])
    if len(args.executors) == 2:
        a, b = ([r for r in rows if r["executor"] == e] for e in args.executors)
        ratio = [pb["browser_s"] / pa["browser_s"] for pa, pb in zip(a, b)]
        warm = [sum(pb["warm"]) / sum(pa["warm"]) for pa, pb in zip(a, b)]
        out.append([f"{args.executors[1]} / {args.executors[0]}", "", spread(warm, 2, "×"), spread(ratio, 2, "×"), "",
                    ""])
    print_section("From the click, in a real browser", machine_line() + (
        f"\n\nBuilt-in demo (122 photos), bottleneck, EfficientNet-Lite0; {args.rounds} rounds, executors "
        "alternating, each on a fresh server and workspace. Seconds from the click to the result on the page "
        "(median, min–max). A retrain's result is stamped when it enters the page (a MutationObserver); "
        "Playwright's wait for the same text, which notices it later, is beside it.\n\n") + table(
            ["executor", "first run after server start (cold cache)", "Start → results (warm cache)",
             "relabel 5 → Retrain → results", "…Playwright's wait", "…as the page reports it"], out))


if __name__ == "__main__":
    main()
