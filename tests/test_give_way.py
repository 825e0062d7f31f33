"""Bonus work (export check, cross-validation) gives way to a run that waits for the warm worker (issue 10: a
retrain clicked just after a run's results must not wait ~10 s for that run's checks)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import TrainConfig
from core.give_way import GaveWay, give_way_if_asked, giving_way_when
from core.training.crossval import cross_validate_head


def _blobs(n_per_class: int = 6, n_classes: int = 2, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (rng.normal(0, 4, (n_classes, dim))[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_nothing_asks_outside_the_worker_and_the_hook_is_undone():
    give_way_if_asked()  # no hook: a no-op
    with giving_way_when(lambda: True), pytest.raises(GaveWay):
        give_way_if_asked()
    give_way_if_asked()  # the previous (never asking) hook is back


def test_cross_validation_stops_within_an_epoch_when_a_run_waits():
    x, y = _blobs()
    cfg = TrainConfig(epochs=3, batch_size=4, early_stopping=False)
    asks = []

    def asked() -> bool:
        asks.append(1)
        return len(asks) >= 3  # a run is queued while the first fold's second epoch trains

    with giving_way_when(asked), pytest.raises(GaveWay):
        cross_validate_head(x, y, 2, cfg)
    # Asked before the first fold and after each epoch: it stopped after the second epoch, not at the fold's end
    # (which would have been the fifth ask: before the fold, three epochs, before the next fold).
    assert len(asks) == 3
    assert cross_validate_head(x, y, 2, cfg) is not None  # done again later, from its start


def test_the_worker_runs_the_run_first_then_the_bonus_work_again(workspace, tiny_dataset):
    """A deferred job that gives way goes back to the front of the worker's deferred queue, untouched; with no run
    waiting it completes; when the worker exits it completes whatever waits."""
    from core.engine import queue
    from core.engine.worker import Deferred, _Worker
    from core.runs import create_run

    worker = _Worker()
    calls: list[str] = []

    def bonus() -> None:
        calls.append("begun")
        give_way_if_asked()
        calls.append("done")

    worker.deferred.append(Deferred(bonus))
    entry = queue.enqueue(create_run(TrainConfig(data=str(tiny_dataset), mode="scratch")))
    worker._run_deferred()
    assert calls == ["begun"] and [d.job for d in worker.deferred] == [bonus]  # gave way to the queued run
    worker._run_deferred(give_way=False)  # exiting: nothing will wait
    assert calls == ["begun", "begun", "done"] and not worker.deferred
    worker.deferred.append(Deferred(bonus))
    queue.remove(entry)
    worker._run_deferred()  # the queue is empty: straight through
    assert calls[-2:] == ["begun", "done"] and not worker.deferred


def _state(pid: int) -> str:
    """The process's state letter from /proc (R running, S sleeping, T stopped, Z zombie); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _wait_for_state(pid: int, states: tuple[str, ...], timeout: float = 10.0) -> str:
    """The process's state once it is one of `states` (a signal takes effect when the process is next scheduled,
    which on a loaded machine is not at once), or whatever it is at the deadline."""
    deadline = time.time() + timeout
    while _state(pid) not in states and time.time() < deadline:
        time.sleep(0.02)
    return _state(pid)


def test_a_step_that_cannot_give_way_runs_as_a_child_process_that_a_queued_run_pauses(workspace, tiny_dataset,
                                                                                      tmp_path):
    """The export check (one uncut reload of seconds) runs as a child process: a queued run pauses it at once
    (SIGSTOP: no CPU, no progress, nothing lost), it stays first in line, and with the queue empty again it is
    resumed where it was and runs to its end."""
    from core.engine import queue
    from core.engine.worker import Deferred, _Worker
    from core.runs import create_run

    worker = _Worker()
    finished, ticks = tmp_path / "finished", tmp_path / "ticks"
    # Counts to 30 in 0.1 s steps (3 s of running), then says it finished.
    script = (f"import pathlib, time\nfor i in range(30):\n    pathlib.Path({str(ticks)!r}).write_text(str(i))\n"
              f"    time.sleep(0.1)\npathlib.Path({str(finished)!r}).touch()")
    step = Deferred(lambda: None, command=[sys.executable, "-c", script], log=tmp_path / "log.txt")
    worker.defer(step)
    entry = queue.enqueue(create_run(TrainConfig(data=str(tiny_dataset), mode="scratch")))
    try:
        worker._run_deferred()  # started, then paused at its first look at the queue
        assert list(worker.deferred) == [step] and step.child is not None
        assert _wait_for_state(step.child.pid, ("T",)) == "T"  # stopped: it neither runs nor has ended
        ticked = ticks.read_text() if ticks.exists() else ""
        time.sleep(0.5)
        assert (ticks.read_text() if ticks.exists() else "") == ticked and not finished.exists()
        queue.remove(entry)
        worker._run_deferred()  # the queue is empty: resumed where it was, to its end
        assert finished.exists() and not worker.deferred and step.child is None
    finally:
        if step.child is not None:
            step.child.kill()


def test_deferred_work_goes_by_rank_then_first_come(workspace):
    """Model files (rank 0) before bonus work (1) before export checks (2), whatever order the runs finished in:
    a check that a new run paused never holds back that run's model file."""
    from core.engine.worker import Deferred, _Worker

    worker = _Worker()
    for name, rank in [("check A", 2), ("model B", 0), ("cv B", 1), ("check B", 2), ("model C", 0)]:
        worker.defer(Deferred(lambda: None, log=Path(name), rank=rank))
    assert [str(d.log) for d in worker.deferred] == ["model B", "model C", "cv B", "check A", "check B"]


def test_a_paused_child_does_not_outlive_a_killed_worker(workspace, tiny_dataset, tmp_path):
    """A worker killed (SIGKILL) while a run has paused its child: the kernel kills the stopped child too
    (core.engine.die_with_parent), so no paused process is left behind holding memory; also when the worker was
    started under nohup (SIGHUP ignored, as its children inherit)."""
    import json
    import os
    import signal
    import subprocess

    script = f"""
import json, signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
from core.config import TrainConfig
from core.engine import queue
from core.engine.worker import Deferred, _Worker
from core.runs import create_run
worker = _Worker()
worker.defer(Deferred(lambda: None, command=[sys.executable, "-c", "import time; time.sleep(60)"]))
queue.enqueue(create_run(TrainConfig(data={str(tiny_dataset)!r}, mode="scratch")))
worker._run_deferred()
print(json.dumps({{"child": worker.deferred[0].child.pid}}), flush=True)
time.sleep(60)
"""
    helper = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True, env=dict(os.environ))  # as ensure_worker starts a worker
    try:
        child = json.loads(helper.stdout.readline())["child"]
        assert _wait_for_state(child, ("T",)) == "T"
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait(10)
        assert _wait_for_state(child, ("", "Z")) in ("", "Z")  # gone (or a zombie waiting for init to reap it)
    finally:
        helper.kill()
