"""Execute a prepared run folder: wait for its turn, train, record the outcome. The warm worker, the CLI
(in-process) and a process started for one run all take this path."""
from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TextIO

from core import fsutil
from core.runs import Run, RunStatus, process_start_time
from core.workspace import activations_dir, features_dir, workspace_root


@contextmanager
def training_slot(run: Run) -> Iterator[None]:
    """One training at a time per workspace: on a 2-core laptop two at once only make both slower.

    A second run waits here, visibly 'queued'. The lock is an flock, so a killed process releases it at once.
    """
    with open(workspace_root() / ".training.lock", "a+") as fh:
        announced = False
        while not _try_lock(fh):
            if not announced:
                run.update_status(state="queued", phase="queued", message="waiting for another training to finish")
                announced = True
            if run.stop_requested():
                raise _StoppedWhileQueued()
            time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class _StoppedWhileQueued(Exception):
    pass


def execute_run(run: Run, terminal: TextIO | None = None, executor: str = "in-process",
                handle_sigterm: bool = True,
                defer: Callable[[Callable[[], None], float, list[str] | None, int], None] | None = None,
                exclusive: bool = True, node: str = "this machine") -> RunStatus:
    """Train the run in this process; returns its status once the results are on disk. Never raises for a
    training failure.

    `exclusive` takes the workspace's training slot first (one training at a time: what a laptop wants, and what
    the CLI and the local worker do). An executor that places runs on a cluster itself (Ray: one per CPU share)
    passes False, and then leaves the feature cache's temporary files alone, as other runs are writing it.

    What follows the results (a bottleneck run's model.keras, the export check) runs before returning, or is
    handed to `defer` step by step, each with how long the queue must have been idle before it and, for a step
    that cannot give way, the command line that does it in a child process, and its rank (model files first):
    the warm worker runs them when no other run is waiting, so a retrain queued behind this run does not wait for
    them."""
    # The process is recorded before anything slow (importing TensorFlow takes seconds): a kill in that window
    # must leave the run failed, not "queued" forever.
    pid = os.getpid()
    run.update_status(pid=pid, pid_start=process_start_time(pid), executor=executor, host=socket.gethostname(),
                      node=node)
    # SIGTERM (kill, a closing terminal, a stopping service) becomes a polite stop request, for this run only: the
    # process's own handler is back when it returns (else a later SIGTERM would stop a finished run, not the process).
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: run.file(Run.STOP).touch()) if handle_sigterm else None
    from core.features import StopRequested  # imports TensorFlow: keep it out of the module's import time
    from core.reporting import Reporter
    from core.training import train, verify_export

    reporter = Reporter(run, terminal=terminal)
    try:
        if run.stop_requested():
            raise _StoppedWhileQueued()
        with training_slot(run) if exclusive else nullcontext():
            if exclusive:  # only runs write the feature and activation caches, and they take turns: what a killed
                fsutil.remove_temp_files(features_dir())  # one left half-written is stale
                fsutil.remove_temp_files(activations_dir())
            run.update_status(state="running", started_at=time.time(), error=None)
            result = train(run.config(), run, reporter)
        state = "stopped" if run.stop_requested() else "done"
        # Done means the results are on disk: predictions, metrics and the trained weights. A bottleneck run's
        # model.keras (frozen backbone + head) is assembled just after, so a retrain's results show sooner.
        run.update_status(state=state, phase=state, progress=1.0, finished_at=time.time(),
                          message="finished" if state == "done" else "stopped; the best model so far was saved",
                          val_accuracy=result.metrics.get("val_accuracy"),
                          model_file="writing" if result.model_pending else "ready")
        for step, after_idle, command, rank in _after_results(run, result.model_pending, verify_export):
            if defer is not None:
                defer(step, after_idle, command, rank)  # one at a time: the worker looks at its queue between them
            else:
                step()
        return run.status()
    except (StopRequested, _StoppedWhileQueued):
        _flush_history(reporter)
        return run.update_status(state="stopped", phase="stopped", finished_at=time.time(),
                                 message="stopped before any training epoch; no model was saved")
    except Exception as exc:  # the run's outcome is recorded whatever went wrong
        _flush_history(reporter)
        _log_traceback(run)
        return run.update_status(state="failed", phase="failed", finished_at=time.time(), error=friendly_error(exc))
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _flush_history(reporter) -> None:
    """The epochs a failed or stopped run still held back (history.csv is written at most every 0.2 s); a full disk
    must not stop its end being recorded."""
    try:
        reporter.flush_history()
    except OSError:
        pass


def _log_traceback(run: Run) -> None:
    """The traceback goes to the run's log.txt only (for whoever debugs it): never to a terminal, where the command
    line prints one line, nor to a page (the Training page's log leaves tracebacks out). On a full disk the log
    cannot take it, and that must not stop the run's failure being recorded."""
    try:
        sys.stderr.flush()
        with open(run.log_path, "a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
    except OSError:
        pass


# How long the warm worker's queue must have been empty before it starts each step (seconds): a user who fixes
# labels and clicks Retrain right after a run must find the worker free, not inside a step that cannot be cut.
MODEL_FILE_IDLE_SECONDS = 2.0   # ~1 s (quiet) to ~3 s (loaded); needed to predict new photos and to download
CROSSVAL_IDLE_SECONDS = 2.0     # it gives way between epochs (~15 ms each): no longer wait needed
# The export check reloads model.keras: ~3 s that cannot be cut short in the worker. So the worker runs it as a
# child process (`python -m core export RUN --check`) that it pauses the moment a run is queued and resumes when the
# queue is empty again; the child costs a TensorFlow import (seconds of CPU, niced) but a click never waits for it.
# Model files rank before checks, so a paused check never holds back a later run's model file.
CHECK_IN_CHILD = True
CHECK_IDLE_SECONDS = 2.0 if CHECK_IN_CHILD else 10.0
# The worker's order for deferred steps, whatever order the runs finished in.
RANK_MODEL_FILE, RANK_BONUS, RANK_CHECK = 0, 1, 2

AfterStep = tuple[Callable[[], None], float, "list[str] | None", int]


def _after_results(run: Run, model_pending: bool, verify) -> list[AfterStep]:
    """What follows the results, in order, each with the idle time the warm worker waits for before it, the
    command line that does it in a child process where the step cannot give way to a waiting run (core.give_way)
    from inside, and its rank in the worker's deferred queue: the model file, then the bonus work: the
    cross-validation (it gives way between epochs), the export check last."""
    steps: list[AfterStep] = [(functools.partial(write_run_model, run), MODEL_FILE_IDLE_SECONDS, None,
                               RANK_MODEL_FILE)] if model_pending else []
    check_command = [sys.executable, "-m", "core", "export", str(run.path), "--check"] if CHECK_IN_CHILD else None
    return steps + [(functools.partial(_cross_validate, run), CROSSVAL_IDLE_SECONDS, None, RANK_BONUS),
                    (functools.partial(_verify, run, verify), CHECK_IDLE_SECONDS, check_command, RANK_CHECK)]


def _cross_validate(run: Run) -> None:
    """Small datasets' cross-validated accuracy (seconds, features from the cache): a bonus like the export
    check, after the results, so it never delays them; its failure is reported, never fails the run."""
    from core.training.crossval import cross_validate_run

    try:
        cross_validate_run(run)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        run.update_metrics(cross_validation={"error": friendly_error(exc)})


def write_run_model(run: Run) -> RunStatus:
    """Write a bottleneck run's model.keras from its trained head: right after the run is done, or again later
    (the Predictions page's button, `python -m core export RUN --model-file`) when that failed. A failure (a full
    disk) leaves the run's results as they are and says why in status.json. Returns the status."""
    from core.training import write_model_file

    try:
        write_model_file(run)
        return run.update_status(model_file="ready", model_error=None, model_written_at=time.time())
    except Exception as exc:
        _log_traceback(run)
        run.remove_temp_files()
        reason = ("The disk is full: free some space, then write the model file again. The run's results are kept."
                  if isinstance(exc, OSError) and exc.errno == 28 else friendly_error(exc))
        return run.update_status(model_file="failed", model_error=reason)


def check_saved_model(run: Run) -> None:
    """The export check of a finished run, again (`python -m core export RUN --check`; the warm worker's child
    process): reload its model.keras and compare with the run's own predictions, into metrics.json."""
    from core.training import verify_export

    _verify(run, verify_export)


def _verify(run: Run, verify) -> None:
    """The export check is a bonus: its failure is reported in metrics.json, never turns a done run failed."""
    try:
        check = verify(run)
        if check and check["same_top1"] is not None and check["same_top1"] < 1.0:
            print(f"warning: the saved model disagrees with the app on {1 - check['same_top1']:.0%} of the "
                  f"validation images", file=sys.stderr)
    except Exception as exc:
        run.update_metrics(export_check={"error": friendly_error(exc)})


def friendly_error(exc: BaseException) -> str:
    """The message a user can act on: ours verbatim, anything else with its type, never a traceback."""
    from core.errors import FewShotError

    if isinstance(exc, FewShotError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller batch size or fewer images."
    if isinstance(exc, OSError) and exc.errno == 28:
        return "The disk is full: free some space and start the training again. Nothing was corrupted."
    if isinstance(exc, FileNotFoundError):
        return (f"A file of the dataset was moved or deleted while the training read it ({exc.filename}). "
                f"Start the training again once the dataset has stopped changing.")
    return f"Training failed: {type(exc).__name__}: {exc}"
