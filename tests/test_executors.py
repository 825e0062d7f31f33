"""The executor boundary without a cluster: which executor `submit` picks, what `describe` tells the pages, and a run
whose process is on another machine is left to that machine's executor (a page cannot check its pid)."""
from __future__ import annotations

from core.config import TrainConfig
from core.engine import LocalWorkerExecutor, get_executor
from core.engine.queue import enqueue
from core.engine.ray_executor import RayExecutor
from core.runs import create_run


def _config(data) -> TrainConfig:
    return TrainConfig(data=str(data), mode="scratch", epochs=2)


def test_the_local_worker_is_the_default_and_ray_is_chosen_by_its_address(workspace, monkeypatch):
    monkeypatch.delenv("FEWSHOT_RAY_ADDRESS", raising=False)
    assert isinstance(get_executor(), LocalWorkerExecutor)
    monkeypatch.setenv("FEWSHOT_RAY_ADDRESS", "127.0.0.1:6379")
    chosen = get_executor()
    assert isinstance(chosen, RayExecutor) and chosen.address == "127.0.0.1:6379"
    assert get_executor("10.0.0.5:6379").address == "10.0.0.5:6379"  # --ray ADDRESS wins


def test_describe_counts_the_waiting_runs_from_files(workspace, tiny_dataset):
    local = LocalWorkerExecutor()
    run = create_run(_config(tiny_dataset), name="waits")
    run.update_status(executor=local.kind)
    enqueue(run)  # queued without starting a worker: describe reads files only
    view = local.describe()
    assert (view.kind, view.capacity, view.waiting) == ("warm worker", 1, 1)
    assert [(p.run_id, p.state, p.node) for p in view.placements] == [(run.id, "queued", None)]
    ray_view = RayExecutor("127.0.0.1:1").describe()  # no cluster there, and none needed to describe
    assert ray_view.waiting == 0 and ray_view.capacity == 0 and "not started" in ray_view.note


def test_a_run_on_another_machine_is_not_failed_by_a_pid_check_here(workspace, tiny_dataset):
    run = create_run(_config(tiny_dataset))
    # A pid that is surely not alive here: on its own machine it may well be.
    run.update_status(state="running", pid=2 ** 22 + 7, pid_start="1", host="another-node", node="10.0.0.7 pid 9")
    assert run.status().state == "running"
    run.update_status(host=None)  # the same record on this machine: the pid is checked, and it is gone
    assert run.status().state == "failed"
    lost = create_run(_config(tiny_dataset))
    lost.update_status(state="running", host="another-node")
    assert "Ray worker" in lost.mark_process_lost(who="The Ray worker executing it").error
