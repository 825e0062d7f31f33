"""The warm engine: one long-lived process, apart from the Streamlit server, that keeps TensorFlow, the backbone
and its fast extractor loaded and executes queued runs one at a time.

A new process per run spent ~3 s importing TensorFlow and rebuilding the backbone before any work: most of what a
user waited for a retrain. The worker pays that once. Everything else stays as it was: the run folder is the only
contract (the pages poll it), a run records the worker's pid, so a killed worker leaves its run failed through the
same liveness check as before, and writes stay atomic, so nothing is half-written.

    python -m core.engine.worker      (started by `ensure_worker`; only one per workspace: an flock decides)
"""
from __future__ import annotations

import collections
import fcntl
import functools
import gc
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import fsutil
from core.engine import queue
from core.engine.die_with_parent import ARMED_FD_ENV
from core.errors import FewShotError
from core.give_way import GaveWay, giving_way_when
from core.runs import Run, process_alive, process_start_time
from core.workspace import PROJECT_ROOT, engine_dir

POLL_SECONDS = 0.05        # how often an idle worker looks at the queue (a directory listing)
MAX_RUNS = 100             # then the worker exits and the next submission starts a fresh one (bounded memory)
IDLE_EXIT_SECONDS = 6 * 3600
START_RETRY_SECONDS = 20.0  # a worker that died before it was ready is not restarted sooner than this
# Deferred work (a finished run's model file, checks; a conversion) waits until the queue has been empty at least
# this long (execute_run says how long for each of its steps): a user who clicks Start (or Retrain) right after a
# run gets the worker at once instead of waiting for the previous run's model file.
DEFER_IDLE_SECONDS = 2.0


CHILD_NICENESS = 10  # a deferred step's child process yields the CPU to the pages a user is looking at


@dataclass
class Deferred:
    job: Callable[[], None]
    after_idle: float = DEFER_IDLE_SECONDS  # seconds of an empty queue before it starts
    # A step that cannot give way from inside (Keras reloading a model file is one uncut call of seconds): the same
    # step as a command line, run as a child process that is paused (SIGSTOP) the moment a run is queued and
    # resumed, where it was, when the queue is empty again.
    command: list[str] | None = None
    log: Path | None = None  # where the child's output goes (the run's log.txt)
    # Which deferred work goes first, whatever the order the runs finished in (core.engine.execute's RANK_*): a
    # run's model file (0) before any bonus work (1: cross-validation, conversions; 2: export checks), so a check
    # paused by a new run never holds back that run's model file.
    rank: int = 1
    child: subprocess.Popen | None = field(default=None, repr=False)  # the paused child process, if any


@dataclass
class WorkerInfo:
    pid: int
    pid_start: str | None
    state: str = "starting"           # starting (importing, warming up) | ready | busy
    started_at: float = 0.0
    ready_at: float | None = None
    current_run: str | None = None
    runs_done: int = 0

    @property
    def alive(self) -> bool:
        return process_alive(self.pid, self.pid_start)


def _info_path(home: Path | None = None) -> Path:
    return (home or engine_dir()) / "worker.json"


def read_worker(home: Path | None = None) -> WorkerInfo | None:
    """The worker of this workspace (or of the engine folder `home`), as it last described itself."""
    data = fsutil.read_json(_info_path(home), None)
    try:
        return WorkerInfo(**data) if isinstance(data, dict) else None
    except TypeError:
        return None


def _write_info(info: WorkerInfo) -> None:
    fsutil.atomic_write_json(_info_path(), asdict(info))


class EngineError(FewShotError):
    """The warm worker cannot start; the message says where its log is."""


def ensure_worker() -> WorkerInfo:
    """The live worker, started if there is none (or it died). Cheap when it is running: one small JSON read."""
    info = read_worker()
    if info is not None and info.alive:
        return info
    with open(engine_dir() / "spawn.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions submitting at once start one worker, not two
        info = read_worker()
        if info is not None and info.alive:
            return info
        if info is not None and info.ready_at is None and time.time() - info.started_at < START_RETRY_SECONDS:
            # It died while starting, moments ago: starting it again at every poll would only repeat that.
            raise EngineError(f"The training engine failed to start; its log is {engine_dir() / 'worker.log'}. "
                              f"It is tried again in {START_RETRY_SECONDS:.0f} s.")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(engine_dir() / "worker.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "core.engine.worker"], cwd=PROJECT_ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=env)
        info = WorkerInfo(proc.pid, process_start_time(proc.pid), started_at=time.time())
        _write_info(info)
        return info


def eager_start_enabled() -> bool:
    return os.environ.get("FEWSHOT_EAGER_WORKER", "1") != "0"


def keep_engine_running(always: bool = False) -> WorkerInfo | None:
    """Restart a worker that died while runs wait for it (or, with `always`, start one ahead of the first run,
    unless FEWSHOT_EAGER_WORKER=0)."""
    if (always and eager_start_enabled()) or queue.entries():
        return ensure_worker()
    return None


def stop_worker(home: Path | None = None, timeout: float = 30.0) -> None:
    """Ask the worker to finish (a running run is stopped politely, finished runs' model files are written) and
    wait for it to exit."""
    info = read_worker(home)
    if info is None or not info.alive:
        return
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while info.alive and time.time() < deadline:
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ inside the worker

@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (TensorFlow's C++ logs included) to the run's log.txt for one run."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def warm_up() -> str | None:
    """What every run needs, paid once: TensorFlow, the training code, the default backbone's fast extractor
    (converted here once if it never was, so small datasets get it too; Keras' extractor where it cannot be).
    Returns the backbone whose Keras network is still to build (only model files need it), if any."""
    import numpy as np

    from core.backbones import DEFAULT_BACKBONE
    from core.backbones.tflite import MIN_IMAGES_TO_CONVERT, fast_extractor
    from core.engine.execute import execute_run  # noqa: F401  (imports the whole training stack)
    from core.features import EXTRACT_BATCH, cached_extractor

    backbone = os.environ.get("FEWSHOT_WARM_BACKBONE", DEFAULT_BACKBONE)
    if backbone in ("", "none"):  # TensorFlow and the training code only (tests that train from scratch)
        return None
    try:
        # The fast extractor is all a bottleneck run needs before its results; the Keras one (seconds to build) only
        # where there is no fast one.
        fast = fast_extractor(backbone, n_images=MIN_IMAGES_TO_CONVERT)
        if fast is None:
            cached_extractor(backbone)
            return None
        # XNNPACK packs its weights and sizes its buffers at the first invoke: here, not in the first run.
        fast.predict(np.zeros((EXTRACT_BATCH, *fast.input_shape), np.float32))
        return backbone
    except Exception:  # no weights here (offline, no package): runs will say why; the worker still serves
        traceback.print_exc()
        return None


def _build_keras_extractor(backbone: str) -> None:
    """Keras' network of `backbone`, built once per process (`core.features.cached_extractor`) for the model files.
    Deferred work of its own, first in line once the worker is ready: a run queued before then goes first, and
    the first run's model file, 2 s after its results, no longer builds it (a click then waited ~1.5 s for it)."""
    from core.features import cached_extractor

    try:
        cached_extractor(backbone)
    except Exception:  # the model-file step builds it again and records why it fails
        traceback.print_exc()


class _Worker:
    def __init__(self) -> None:
        pid = os.getpid()
        self.info = WorkerInfo(pid, process_start_time(pid), started_at=time.time())
        self.exiting = False
        self.current: Run | None = None
        self.waiting = queue.queue_dir()  # listed as it is from here on: a deleted workspace is never made again
        # Model files and export checks of finished runs: done when no run waits (results come first), by rank.
        self.deferred: collections.deque[Deferred] = collections.deque()

    def on_sigterm(self, *_: object) -> None:
        self.exiting = True
        if self.current is not None:
            self.current.file(Run.STOP).touch()

    def serve(self) -> int:
        from core.engine.execute import RANK_MODEL_FILE, execute_run

        signal.signal(signal.SIGTERM, self.on_sigterm)
        _write_info(self.info)
        keras_to_build = warm_up()
        if keras_to_build:  # not in a thread beside the first run: it took a core from its extraction (4.0 -> 6.5 s)
            self.defer(Deferred(functools.partial(_build_keras_extractor, keras_to_build), after_idle=0.0,
                                rank=RANK_MODEL_FILE))
        self.info.state, self.info.ready_at = "ready", time.time()
        _write_info(self.info)
        print(f"worker {self.info.pid} ready in {self.info.ready_at - self.info.started_at:.1f} s", flush=True)
        idle_since = time.time()
        while not self.exiting and self.info.runs_done < MAX_RUNS:
            if not self.waiting.exists():
                break  # its workspace was deleted (a test's temporary folder, a user tidying up)
            entry = next(iter(queue.entries(self.waiting)), None)
            if entry is None:
                if self.deferred and time.time() - idle_since >= self.deferred[0].after_idle:
                    self._run_deferred()
                    continue
                if time.time() - idle_since > IDLE_EXIT_SECONDS:
                    break
                time.sleep(POLL_SECONDS)
                continue
            run = queue.run_of(entry)
            if run is None or not run.path.exists() or run.read_status().state != "queued":
                queue.remove(entry)  # stopped while waiting, deleted, or taken by another executor
                continue
            # Claim it (the run records this process) before the entry goes: a crash in between leaves a run
            # whose process is gone, which the liveness check marks failed.
            run.update_status(pid=self.info.pid, pid_start=self.info.pid_start, executor="warm worker")
            queue.remove(entry)
            self.info.state, self.info.current_run = "busy", run.id
            _write_info(self.info)
            self.current = run
            with _output_to(run.log_path):
                execute_run(run, executor="warm worker", handle_sigterm=False,
                            defer=lambda job, after_idle, command, rank, log=run.log_path: self.defer(
                                Deferred(functools.partial(self._logged, job, log), after_idle, command, log, rank)))
            self.current = None
            self._prepare_fast_extractor(run)
            self.info.state, self.info.current_run = "ready", None
            self.info.runs_done += 1
            _write_info(self.info)
            gc.collect()
            idle_since = time.time()
        while self.deferred:  # exiting: finish what finished runs still owe (their model files)
            self._run_deferred(give_way=False)
        return 0

    def _prepare_fast_extractor(self, run: Run) -> None:
        """Convert the run's backbone for fast extraction when the worker is next idle. A one-off process converts
        only for big jobs (the conversion costs seconds); in a long-lived worker, and with the conversion kept on
        disk, every later run gains from it, so small datasets get the fast path from their second run on."""
        from core.backbones import get_backbone
        from core.backbones.tflite import MIN_IMAGES_TO_CONVERT, fast_extractor

        try:
            cfg = run.config()
            if cfg.mode != "scratch" and get_backbone(cfg.backbone).fast_extract:
                self.defer(Deferred(functools.partial(fast_extractor, cfg.backbone, MIN_IMAGES_TO_CONVERT)))
        except Exception:  # an unreadable config or an unknown backbone: the run already said why
            pass

    def defer(self, item: Deferred) -> None:
        """Queue deferred work behind every item of its rank or lower (the queue stays sorted by rank; within a
        rank, first come first served)."""
        at = next((i for i, queued in enumerate(self.deferred) if queued.rank > item.rank), len(self.deferred))
        self.deferred.insert(at, item)

    def _run_deferred(self, give_way: bool = True) -> None:
        """The oldest deferred job; bonus work in it gives way to a run that is waiting (and is done again later,
        from its start), unless `give_way` is False (the worker is exiting: nothing will wait)."""
        item = self.deferred.popleft()
        run_waiting = (lambda: bool(queue.entries(self.waiting))) if give_way else (lambda: False)
        if item.command is not None and give_way:
            if not self._run_child(item, run_waiting):
                self.deferred.appendleft(item)
            return
        _end_child(item)  # exiting: a paused child is not resumed; the step is done here, where TF is loaded
        # In this process: a step that gives way from inside, or any step while the worker exits (nothing will wait,
        # and TensorFlow is loaded here already).
        try:
            with giving_way_when(run_waiting):
                item.job()
        except GaveWay:
            self.deferred.appendleft(item)
        except Exception:  # each job records its own failure in its run folder; the worker goes on
            traceback.print_exc()

    def _run_child(self, item: Deferred, run_waiting: Callable[[], bool]) -> bool:
        """Run a deferred step's command as a child process, niced, or resume the one a run paused; True once it
        ended (its own failures are its run's business, written in its log), False when it was paused because a
        run is waiting, or ended because the worker is exiting (which then does the step itself)."""
        child = item.child
        if child is None:
            # Through core.engine.die_with_parent: killed by the kernel should the worker die, even while paused.
            # (Its own process group and the kernel's hang-up of an orphaned, stopped group were tried first; a
            # worker started under nohup ignores SIGHUP, and so did its child, which then ran on.)
            command = [sys.executable, "-m", "core.engine.die_with_parent", str(os.getpid()), *item.command]
            armed_r, armed_w = os.pipe()  # closed by the child once its death signal is set: only then may it pause
            try:
                with open(item.log or os.devnull, "ab") as log:
                    child = item.child = subprocess.Popen(
                        command, cwd=PROJECT_ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                        pass_fds=(armed_w,), env={**os.environ, ARMED_FD_ENV: str(armed_w)})
            finally:
                os.close(armed_w)
            _wait_until_armed(armed_r)
            try:
                os.setpriority(os.PRIO_PROCESS, child.pid, CHILD_NICENESS)
            except OSError:  # already ended, or a platform without priorities: it only runs a little less politely
                pass
        else:
            _signal(child, signal.SIGCONT)
        while child.poll() is None:
            if self.exiting:
                _end_child(item)
                return False
            if run_waiting():
                _signal(child, signal.SIGSTOP)  # paused where it is: no CPU while the run trains, no work lost
                return False
            time.sleep(POLL_SECONDS)
        item.child = None
        return True

    @staticmethod
    def _logged(job: Callable[[], None], log: Path) -> None:
        with _output_to(log):
            job()


def _wait_until_armed(fd: int, timeout: float = 10.0) -> None:
    """Until the child has closed its end of the pipe (its death signal is set, or it has ended): paused before
    that, it would outlive a killed worker."""
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def _signal(child: subprocess.Popen, sig: int) -> None:
    try:
        child.send_signal(sig)
    except ProcessLookupError:  # it has just ended
        pass


def _end_child(item: Deferred) -> None:
    """Kill a deferred step's child process, paused or not (its writes are atomic: the run keeps the previous
    metrics.json whole)."""
    if item.child is not None:
        item.child.kill()
        item.child.wait()
        item.child = None


def main() -> int:
    with open(engine_dir() / "worker.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another worker serves this workspace; exiting", flush=True)
            return 0
        return _Worker().serve()


if __name__ == "__main__":
    sys.exit(main())
