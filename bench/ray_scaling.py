"""Scaling on Ray: throughput with 1 and 2 Ray workers on a loopback cluster of this machine (2 CPUs), for runs and
for sharded feature extraction, then the expected curve for N nodes from the measured per-run cost (a model, with
the bottlenecks: shared storage and the head node's dispatcher).

    .venv/bin/python -m bench.ray_scaling [--runs 4] [--epochs 3] [--images 200] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _images(root: Path, n: int, size: int = 96) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def _use_workspace(path: Path) -> None:
    os.environ["FEWSHOT_WORKSPACE"] = str(path)


def measure_runs(address: str, data: Path, n_runs: int, epochs: int, cpus_per_run: int, scratch: Path) -> dict:
    """n_runs scratch trainings submitted at once; capacity = 2 CPUs / cpus_per_run workers."""
    from core.config import TrainConfig
    from core.engine.ray_executor import RayExecutor, connect
    from core.runs import create_run

    os.environ["FEWSHOT_RAY_CPUS_PER_RUN"] = str(cpus_per_run)
    _use_workspace(scratch / f"ws-runs-{cpus_per_run}")
    executor = RayExecutor(address)
    config = TrainConfig(data=str(data), mode="scratch", epochs=epochs, batch_size=16, early_stopping=False)
    # Connected for the whole measurement; the dispatcher (and its first worker) warm before the clock starts:
    # the steady state of a classroom.
    executor.dispatcher(connect(address))
    start = time.time()
    runs = [executor.submit(create_run(config, name=f"bench {i}")) for i in range(n_runs)]
    while any(r.status().busy for r in runs):
        time.sleep(0.5)
    wall = time.time() - start
    statuses = [r.status() for r in runs]
    executor.shutdown()
    per_run = [s.finished_at - s.started_at for s in statuses if s.finished_at and s.started_at]
    dispatch = [s.started_at - s.created_at for s in statuses if s.started_at and s.created_at]
    return {"workers": 2 // cpus_per_run, "runs": n_runs, "done": sum(s.state == "done" for s in statuses),
            "wall_seconds": round(wall, 1), "runs_per_hour": round(3600 * n_runs / wall, 1),
            "median_run_seconds": round(float(np.median(per_run)), 1),
            "first_wait_seconds": round(min(dispatch), 1), "nodes": sorted({s.node for s in statuses if s.node})}


def measure_extract(address: str, paths: list[Path], workers: int, scratch: Path) -> dict:
    from core.backbones import DEFAULT_BACKBONE
    from core.engine.ray_extract import extract_on_cluster

    _use_workspace(scratch / f"ws-extract-{workers}")  # its own empty feature cache
    os.environ["FEWSHOT_RAY_CPUS_PER_RUN"] = "1"
    return extract_on_cluster(paths, DEFAULT_BACKBONE, address, workers=workers).to_dict()


def expected_curve(run_seconds: float, cpus_per_node: int, nodes: list[int], dispatch_seconds: float,
                   run_io_mb: float, storage_mb_s: float) -> list[dict]:
    """Runs per hour with N nodes: each node runs cpus_per_node at once, each taking `run_seconds`; capped by the
    head's dispatcher (one dispatch per `dispatch_seconds`, serial) and the shared storage (`run_io_mb` per run
    through `storage_mb_s`)."""
    rows = []
    for n in nodes:
        compute = 3600 * n * cpus_per_node / run_seconds
        head = 3600 / dispatch_seconds
        storage = 3600 * storage_mb_s / run_io_mb
        rate = min(compute, head, storage)
        limit = "compute" if rate == compute else ("head node" if rate == head else "shared storage")
        rows.append({"nodes": n, "runs_per_hour": round(rate), "limit": limit,
                     "30 runs take (min)": round(math.ceil(30 / (n * cpus_per_node)) * run_seconds / 60, 1)
                     if limit == "compute" else round(30 / rate * 60, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    os.environ.setdefault("FEWSHOT_WARM_BACKBONE", "none")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from core.engine.ray_local import local_cluster

    scratch = Path(tempfile.mkdtemp(prefix="fewshot-ray-bench-"))
    data = scratch / "data"
    paths = _images(data, args.images)
    out: dict = {"machine": f"{os.cpu_count()} CPUs", "runs": [], "extract": []}
    with local_cluster(num_cpus=2) as address:
        for cpus_per_run in (2, 1):  # 1 worker, then 2
            print(f"runs with {2 // cpus_per_run} worker(s)…", file=sys.stderr)
            out["runs"].append(measure_runs(address, data, args.runs, args.epochs, cpus_per_run, scratch))
        for workers in (1, 2):
            print(f"extraction with {workers} worker(s)…", file=sys.stderr)
            out["extract"].append(measure_extract(address, paths, workers, scratch))
    one = out["runs"][-1]
    out["curve"] = expected_curve(one["median_run_seconds"], 8, [1, 2, 4, 8, 16, 32],
                                  dispatch_seconds=0.2, run_io_mb=25, storage_mb_s=100)

    print("| Ray workers | runs | wall (s) | runs/hour | median run (s) |\n|---|---|---|---|---|")
    for row in out["runs"]:
        print(f"| {row['workers']} | {row['done']}/{row['runs']} | {row['wall_seconds']} | {row['runs_per_hour']} | "
              f"{row['median_run_seconds']} |")
    print("\n| extraction workers | images | seconds | images/s |\n|---|---|---|---|")
    for row in out["extract"]:
        print(f"| {row['workers']} | {row['n_images']} | {row['seconds']:.1f} | {row['images_per_second']} |")
    print("\n| nodes (8 CPUs each) | runs/hour | limit | 30 runs take (min) |\n|---|---|---|---|")
    for row in out["curve"]:
        print(f"| {row['nodes']} | {row['runs_per_hour']} | {row['limit']} | {row['30 runs take (min)']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
