"""Execute a run in a process of its own (the warm worker's fallback, and what the kill/stop tests drive)."""
from __future__ import annotations

import os
import subprocess
import sys

from core.runs.folder import Run
from core.runs.process import process_start_time
from core.workspace import PROJECT_ROOT


def start_run_process(run: Run) -> int:
    """Execute the run in its own OS process (its own session: a closed browser or a restarted server leaves it
    running). Returns the pid; the process records itself in status.json."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core", "run", str(run.path)], cwd=PROJECT_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    run.update_status(pid=proc.pid, pid_start=process_start_time(proc.pid))
    return proc.pid
