"""The engine executes run folders outside the Streamlit process.

    execute.py   one run in this process: its turn (one training at a time per workspace), train, the outcome
    worker.py    the warm worker: a long-lived process that keeps TensorFlow loaded and executes queued runs
    queue.py     the worker's queue (one small file per submitted run)
    executors.py the executor boundary: the local warm worker (default) or a Ray cluster (FEWSHOT_RAY_ADDRESS)
    ray_executor.py  runs on a Ray cluster, several at once (imports Ray only when used)
    submit.py    what the pages call: submit a run to the configured executor, retrain one

This package imports no TensorFlow (the pages use it); execute.py loads it when a run starts.
"""
from core.engine.execute import execute_run, friendly_error, write_run_model
from core.engine.executors import Executor, ExecutorView, LocalWorkerExecutor, ProcessExecutor, get_executor
from core.engine.submit import retrain, submit
from core.engine.worker import EngineError, WorkerInfo, ensure_worker, keep_engine_running, read_worker, stop_worker

__all__ = ["EngineError", "Executor", "ExecutorView", "LocalWorkerExecutor", "ProcessExecutor", "WorkerInfo",
           "ensure_worker", "execute_run", "friendly_error", "get_executor", "keep_engine_running", "read_worker",
           "retrain", "stop_worker", "submit", "write_run_model"]
