"""The warm engine: one long-lived worker executes queued runs, keeps TensorFlow loaded between them, and a killed
worker leaves its run failed (nothing half-written) and is replaced on the next submission."""
from __future__ import annotations

import os
import signal

from core.config import TrainConfig
from core.engine import read_worker, submit
from core.engine.queue import entries, position
from core.runs import create_run


def _scratch(data, **overrides) -> TrainConfig:
    settings = {"epochs": 2, "batch_size": 8, "early_stopping": False, **overrides}
    return TrainConfig(data=str(data), mode="scratch", **settings)


def test_one_warm_worker_executes_queued_runs_in_turn(workspace, tiny_dataset, wait_for):
    first = submit(create_run(_scratch(tiny_dataset), name="first"))
    second = submit(create_run(_scratch(tiny_dataset), name="second"))
    assert first.status().state == "queued" and second.status().executor == "warm worker"
    assert position(second) in (1, 2)  # behind the first, unless the worker already took that one
    done = wait_for(lambda: second.status() if second.status().state == "done" else None, 300)
    assert first.status().state == "done", first.log_tail()
    # The worker counts a run once its execution returned, a moment after the run says done.
    worker = wait_for(lambda: (info := read_worker()) is not None and info.runs_done == 2 and info, 30)
    # Both ran in the same process: TensorFlow was loaded once.
    assert first.status().pid == done.pid == worker.pid and worker.runs_done == 2
    assert first.status().started_at <= first.status().finished_at <= done.started_at
    assert done.seconds_from_click(0) == done.finished_at - done.created_at > 0
    assert (second.metrics() or {})["n_val"] > 0 and not entries()
    assert "epoch" in second.history().columns and len(second.history()) == 2
    # The export check follows, once the worker is idle.
    check = wait_for(lambda: (second.metrics() or {}).get("export_check"), 120)
    assert check["same_top1"] == 1.0, second.log_tail()


def test_a_killed_worker_fails_its_run_and_the_next_submission_gets_a_new_one(workspace, tiny_dataset, wait_for):
    long = submit(create_run(_scratch(tiny_dataset, **{"epochs": 500}), name="long"))
    wait_for(lambda: long.status().state == "running" and len(long.history()) >= 1, 300)
    killed = read_worker()
    os.kill(killed.pid, signal.SIGKILL)
    status = wait_for(lambda: long.status() if long.status().state == "failed" else None, 30)
    assert "ended unexpectedly" in status.error
    assert not long.has_model() and not long.has_results()
    assert not [p for p in long.path.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    again = submit(create_run(_scratch(tiny_dataset), name="again"))
    assert wait_for(lambda: again.status().state == "done", 300), again.log_tail()
    assert again.status().pid != killed.pid and read_worker().alive


def test_stop_a_queued_run_and_a_running_one(workspace, tiny_dataset, wait_for):
    running = submit(create_run(_scratch(tiny_dataset, **{"epochs": 500}), name="running"))
    queued = submit(create_run(_scratch(tiny_dataset), name="queued"))
    wait_for(lambda: running.status().state == "running", 300)
    queued.request_stop()
    assert queued.status().state == "stopped"  # it never reached the worker
    running.request_stop()
    status = wait_for(lambda: running.status() if not running.status().active else None, 60)
    assert status.state == "stopped"
    after = submit(create_run(_scratch(tiny_dataset), name="after"))
    assert wait_for(lambda: after.status().state == "done", 300)
    assert queued.status().state == "stopped" and queued.status().started_at is None
    assert after.status().pid == running.status().pid  # the same worker served on
