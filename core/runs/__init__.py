"""Runs: a training is a folder on disk (`Run`, `RunStatus`), the only contract between the pages and the process
that executes it."""
from core.runs.folder import HISTORY_COLUMNS, Run
from core.runs.launch import start_run_process
from core.runs.process import process_alive, process_start_time
from core.runs.status import ACTIVE_STATES, STATES, RunStatus
from core.runs.store import (
                             RETRAIN_PREFIX,
                             RunError,
                             active_runs,
                             create_run,
                             delete_run,
                             get_run,
                             library_versions,
                             list_runs,
                             new_run_id,
                             retrained_from,
                             runs_table,
)
from core.runs.titles import default_title, file_stem, run_dataset_title, run_title

__all__ = ["ACTIVE_STATES", "HISTORY_COLUMNS", "RETRAIN_PREFIX", "STATES", "Run", "RunError", "RunStatus",
           "active_runs", "create_run", "default_title", "delete_run", "file_stem", "get_run", "library_versions",
           "list_runs", "new_run_id", "process_alive", "process_start_time", "retrained_from", "run_dataset_title",
           "run_title", "runs_table", "start_run_process"]
