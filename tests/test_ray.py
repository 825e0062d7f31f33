"""Runs on a real Ray cluster: a head on loopback with 2 CPUs, started by this module and stopped at its end (only
that cluster: its processes are found by its temporary folder). Two runs execute at once, a run whose worker is
killed with kill -9 ends failed while the other finishes, the Runs page shows where each run is and how many wait,
and stop works for a run on a cluster worker. Skipped only where Ray is not installed (scripts/test.sh installs
requirements-ray.txt)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported: keeps it on loopback
pytest.importorskip("ray")

from core.config import TrainConfig  # noqa: E402
from core.engine import get_executor, submit  # noqa: E402
from core.engine.ray_executor import RayExecutor  # noqa: E402
from core.engine.ray_local import local_cluster  # noqa: E402
from core.runs import create_run  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    with local_cluster(num_cpus=2) as address:
        yield address


@pytest.fixture
def on_ray(ray_cluster, workspace, monkeypatch):
    """This test's workspace served by the cluster; its dispatcher (and the workers it made) end with the test, so
    the next test's get the cluster's CPUs."""
    monkeypatch.setenv("FEWSHOT_RAY_ADDRESS", ray_cluster)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("FEWSHOT_WARM_BACKBONE", "none")  # scratch runs: TensorFlow only, no backbone to warm
    executor = get_executor()
    assert isinstance(executor, RayExecutor)
    yield executor
    executor.shutdown()


def _scratch(data, **overrides) -> TrainConfig:
    settings = {"epochs": 2, "batch_size": 8, "early_stopping": False, **overrides}
    return TrainConfig(data=str(data), mode="scratch", **settings)


def test_two_runs_submitted_from_the_command_line_run_at_once(on_ray, workspace, tiny_dataset, tmp_path):
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:  # each `submit` returns at once: a fresh process each, as a script would call it
        done = subprocess.run([sys.executable, "-m", "core", "submit", str(tiny_dataset), "--mode", "scratch",
                               "--epochs", "2", "--batch-size", "8", "--no-early-stopping", "--out", str(out)],
                              capture_output=True, text=True, timeout=300, env=os.environ)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["executor"] == "ray"
    waited = subprocess.run([sys.executable, "-m", "core", "wait", *map(str, outs), "--timeout", "600"],
                            capture_output=True, text=True, timeout=700, env=os.environ)
    lines = [json.loads(line) for line in waited.stdout.splitlines()]
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert [line["state"] for line in lines] == ["done", "done"]
    first, second = lines
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]  # overlap
    assert first["node"].startswith("127.0.0.1") and first["node"] != second["node"]  # two workers, one node
    assert all((out / "metrics.json").exists() and (out / "model.keras").exists() for out in outs)


def test_a_worker_killed_with_kill_9_fails_its_run_and_the_other_finishes(on_ray, tiny_dataset, wait_for):
    long = submit(create_run(_scratch(tiny_dataset, epochs=500), name="long"))
    short = submit(create_run(_scratch(tiny_dataset, epochs=3), name="short"))
    wait_for(lambda: long.read_status().state == "running" and len(long.history()) >= 1, 300)
    os.kill(long.read_status().pid, signal.SIGKILL)
    # read_status: no liveness check here, so it is the cluster side (the dispatcher) that records the death,
    # as it must for a worker on another machine.
    failed = wait_for(lambda: long.read_status() if long.read_status().state == "failed" else None, 120)
    assert "ended unexpectedly" in failed.error
    assert not long.has_results() and not long.has_model()
    assert not [p for p in long.path.iterdir() if p.name.startswith(".")]  # nothing half-written left
    finished = wait_for(lambda: short.status() if not short.status().busy else None, 300)
    assert finished.state == "done", short.log_tail()
    assert finished.node != failed.node and short.has_model()


def test_the_runs_page_shows_where_each_run_is_and_how_many_wait_and_stop_works_on_any(on_ray, tiny_dataset,
                                                                                        wait_for, open_app_page):
    runs = [submit(create_run(_scratch(tiny_dataset, epochs=500), name=f"class run {i}")) for i in range(3)]
    # The cluster has 2 CPUs, one per run: two run, the third waits.
    wait_for(lambda: sum(r.read_status().state == "running" for r in runs) == 2, 300)
    waiting = [r for r in runs if r.read_status().state == "queued"]
    assert len(waiting) == 1
    view = on_ray.describe()
    assert view.capacity == 2 and view.waiting == 1 and len(view.running) == 2

    at = open_app_page("pages/6_runs.py")
    panel = " ".join(m.value for m in at.get("markdown") if "Engine" in m.value or "class run" in m.value)
    assert "Ray cluster" in panel and "2 at a time" in panel and "2 running" in panel and "1 waiting" in panel
    running = [r for r in runs if r not in waiting]
    for run in running:
        assert f"running on {run.read_status().node}" in panel.replace("\\", "")
    assert "waiting for a worker" in panel

    for run in waiting + running:  # the waiting one first: a freed worker must not take it
        on_ray.stop(run)
    for run in runs:
        status = wait_for(lambda run=run: run.status() if not run.status().busy else None, 120)
        assert status.state == "stopped"
    assert waiting[0].read_status().started_at is None  # it never reached a worker
