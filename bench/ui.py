"""The UI under training (issue item 6): how long the Training page's refresh and the other pages take while a
run trains in its own process, against the same measurements with nothing training.

  refresh reads     `Run.status()` + `Run.history()` on the live run folder (what the page's 1-second fragment
                    reads), many times
  refresh + charts  the same plus the two Plotly figures the fragment draws (figure building, no browser)
  page run          a whole page script through Streamlit's AppTest (Training, Dataset, Runs): the server-side
                    work of one rerun, without the browser's rendering
  /_stcore/health   an HTTP GET to a real `streamlit run app.py` server: is its event loop responsive?

    .venv/bin/python -m bench.ui [DATASET] [--seconds 40] [--tiny]
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import (
    DEMO,
    PROJECT_ROOT,
    TUXPAINT,
    Timer,
    bench_parser,
    machine_line,
    make_tiny_dataset,
    percentile,
    print_section,
    table,
)

PAGES = {"Training": "pages/4_training.py", "Dataset": "pages/1_dataset.py", "Runs": "pages/6_runs.py"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if health(port) is not None:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the Streamlit server did not answer within 120 s")


def health(port: int) -> float | None:
    with Timer() as t, urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as resp:
        resp.read()
    return t.seconds if resp.status == 200 else None


class Probe:
    """Collects latencies per measurement name for one condition (idle or training)."""

    def __init__(self, run, port: int | None):
        from core.charts import history_figure

        self.run, self.port, self.figure = run, port, history_figure
        self.times: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def cycle(self) -> None:
        with Timer() as t:
            self.run.status()
            history = self.run.history()
        self.add("refresh reads (status + history)", t.seconds)
        with Timer() as t:
            self.run.status()
            history = self.run.history()
            if not history.empty:
                self.figure(history, "loss")
                self.figure(history, "accuracy")
        self.add("refresh + 2 charts built", t.seconds)
        if self.port:
            self.add("GET /_stcore/health", health(self.port))

    def pages(self, at, rounds: int) -> None:
        for name, page in PAGES.items():
            at.switch_page(page)
            at.run()  # the first visit may import and cache; time the reruns
            for _ in range(rounds):
                with Timer() as t:
                    at.run()
                if at.exception:
                    raise RuntimeError(f"page {name} raised: {at.exception}")
                self.add(f"page run: {name} (AppTest)", t.seconds)


def measure(data: Path, seconds: float, rounds: int, use_server: bool, config: dict) -> tuple[dict, dict, dict]:
    from streamlit.testing.v1 import AppTest

    from core.config import TrainConfig
    from core.runs import create_run, process_alive, start_run_process

    port = _free_port() if use_server else None
    server = start_server(port) if use_server else None
    try:
        # A finished run to look at while idle, so both conditions read a run folder with a history.
        idle_cfg = TrainConfig(data=str(data), mode="bottleneck", **{k: v for k, v in config.items()
                                                                   if k != "finetune_epochs"})
        from core.engine import execute_run
        done = create_run(idle_cfg, name="idle reference")
        execute_run(done)
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=180)
        at.run()

        idle = Probe(done, port)
        end = time.time() + seconds / 3
        while time.time() < end:
            idle.cycle()
            time.sleep(0.05)
        idle.pages(at, rounds)

        run = create_run(TrainConfig(data=str(data), mode="finetune", **config), name="trains during the bench")
        start_run_process(run)
        while run.status().state == "queued" or run.history().empty:
            if run.status().state not in ("queued", "running"):
                raise RuntimeError(f"the training ended early: {run.status()}")
            time.sleep(0.2)
        busy = Probe(run, port)
        end = time.time() + seconds
        cycles = 0
        while time.time() < end and run.status().state == "running":
            if cycles % 100 == 0:
                busy.pages(at, 1)  # every page now and then, while it trains
            busy.cycle()
            cycles += 1
            time.sleep(0.05)
        still_running = run.status().state == "running"
        info = {"history_rows": len(run.history()), "still_running_at_end": still_running,
                "state": run.status().state}
        run.request_stop()
        deadline = time.time() + 120
        while run.status().state in ("queued", "running") and time.time() < deadline:
            time.sleep(0.5)
        status = run.status()  # the process still checks its export after stopping: let it end before cleanup
        while process_alive(status.pid, status.pid_start) and time.time() < deadline:
            time.sleep(0.2)
        return idle.times, busy.times, info
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)


def report(idle: dict, busy: dict, info: dict) -> str:
    rows = []
    for name in busy:
        b, i = busy[name], idle.get(name, [])
        rows.append([name, len(b), f"{1000 * percentile(b, 50):.1f}", f"{1000 * percentile(b, 95):.1f}",
                     f"{1000 * max(b):.1f}", f"{1000 * percentile(i, 50):.1f}" if i else "—",
                     f"{1000 * percentile(i, 95):.1f}" if i else "—"])
    return machine_line() + f"\n\nWhile a fine-tune run trains in its own process ({info['history_rows']} history " \
        f"rows at the end; still training when the measurement ended: {info['still_running_at_end']}). Milliseconds." \
        "\n\n" + table(["measurement", "n (training)", "median ms", "p95 ms", "max ms", "idle median ms",
                        "idle p95 ms"], rows)


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images", worker=False)
    parser.add_argument("data", nargs="?", type=Path, help="dataset (default: tuxpaint-stamps, else the demo)")
    parser.add_argument("--seconds", type=float, default=40, help="how long to measure while training")
    parser.add_argument("--rounds", type=int, default=3, help="page reruns per page while idle")
    parser.add_argument("--no-server", action="store_true", help="skip the real Streamlit server")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-ui-"))
    os.environ["FEWSHOT_WORKSPACE"] = str(tmp / "workspace")  # runs, cache and the server's view of them
    config: dict = {"finetune_epochs": 50, "patience": 1000}
    try:
        if args.tiny:
            args.data = make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)
            args.seconds, args.rounds, args.no_server = 3, 1, True
            config = {"epochs": 2, "finetune_epochs": 30}
        data = (args.data or (TUXPAINT if TUXPAINT.is_dir() else DEMO)).resolve()
        idle, busy, info = measure(data, args.seconds, args.rounds, not args.no_server, config)
        if args.json:
            args.json.write_text(json.dumps({"idle": idle, "training": busy, "info": info}, indent=1))
        print_section("The UI while a run trains", report(idle, busy, info))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
