"""Bonus work (export check, cross-validation) gives way to a run that waits for the warm worker (issue 10: a
retrain clicked just after a run's results must not wait ~10 s for that run's checks)."""
from __future__ import annotations

import sys

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


def test_cross_validation_stops_between_folds_when_a_run_waits():
    x, y = _blobs()
    cfg = TrainConfig(epochs=3, batch_size=4)
    folds_begun = []

    def asked() -> bool:
        folds_begun.append(1)
        return len(folds_begun) > 2  # a run is queued while the second fold trains

    with giving_way_when(asked), pytest.raises(GaveWay):
        cross_validate_head(x, y, 2, cfg)
    assert len(folds_begun) == 3  # two folds done, the third never started
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


def test_a_step_that_cannot_give_way_runs_as_a_child_process_that_a_queued_run_stops(workspace, tiny_dataset,
                                                                                     tmp_path):
    """The export check (one uncut reload of seconds) runs as a child process: a queued run stops it at once and
    it stays first in line, untouched; with no run waiting it runs to its end."""
    from core.engine import queue
    from core.engine.worker import Deferred, _Worker
    from core.runs import create_run

    worker = _Worker()
    finished = tmp_path / "finished"
    slow = Deferred(lambda: None, command=[sys.executable, "-c", "import pathlib, time; time.sleep(120); "
                                           f"pathlib.Path({str(finished)!r}).touch()"])
    worker.deferred.append(slow)
    entry = queue.enqueue(create_run(TrainConfig(data=str(tiny_dataset), mode="scratch")))
    worker._run_deferred()
    assert list(worker.deferred) == [slow] and not finished.exists()  # stopped, not waited for
    queue.remove(entry)
    quick = Deferred(lambda: None, command=[sys.executable, "-c", f"import pathlib; pathlib.Path({str(finished)!r})"
                                                                  ".touch()"], log=tmp_path / "log.txt")
    worker.deferred.clear()
    worker.deferred.append(quick)
    worker._run_deferred()  # the queue is empty: to its end
    assert finished.exists() and not worker.deferred
