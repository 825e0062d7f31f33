"""Augmentation without losing the cache (issue item 4): `bottleneck` with K cached augmented copies of each
training image, against plain `bottleneck` and against `finetune`, on tuxpaint-stamps.

For each seed (the seed also draws the train/validation split, so seeds are different splits of the same data),
each configuration trains in a fresh process, in a fresh workspace ("cold": every feature computed, the K
augmented copies included), then again in the same workspace ("warm": all features from the cache). Accuracy
differences are paired by seed. Runs go through `core.engine.execute_run`, like the app's.

    .venv/bin/python -m bench.augment [DATASET] [--copies 2 5 10] [--seeds 0 1 2] [--tiny]
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import (
    DEMO,
    TUXPAINT,
    bench_parser,
    machine_line,
    make_tiny_dataset,
    print_section,
    run_worker,
    spread,
    table,
)

TRAIN_MODULE = "bench.train"  # its worker runs execute_run in a fresh process


def measure(data: Path, copies: list[int], seeds: list[int], with_finetune: bool, base: dict, tmp: Path,
            smoke: bool = False) -> list[dict]:
    configs = [("bottleneck", 0)] + [("bottleneck", k) for k in copies] + ([("finetune", 0)] if with_finetune else [])
    rows, jobs = [], []
    for seed in seeds:
        for mode, k in configs:
            name = f"{mode}-K{k}-seed{seed}"
            ws = tmp / f"ws-{name}"
            for cache in (("cold", "warm") if mode == "bottleneck" else ("cold",)):
                job = {"workspace": str(ws), "data": str(data), "mode": mode, "name": f"{name}-{cache}",
                       "config": {**base, "seed": seed, "augment_copies": k}}
                tag = {"config": f"{mode} K={k}" if k else mode, "seed": seed, "cache": cache}
                if smoke:
                    jobs.append((job, tag))
                    continue
                res = run_worker(TRAIN_MODULE, {"jobs": [job]})
                rows.append({**tag, **res["jobs"][0]})
                print(f"  {tag}: {res['jobs'][0]['to_done']:.1f} s, val acc {res['jobs'][0]['val_accuracy']}",
                      file=sys.stderr, flush=True)
    if jobs:
        res = run_worker(TRAIN_MODULE, {"jobs": [job for job, _ in jobs]})
        rows += [{**tag, **out} for (_, tag), out in zip(jobs, res["jobs"])]
    return rows


def report(rows: list[dict], data: Path) -> str:
    configs = list(dict.fromkeys(r["config"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    acc = {(r["config"], r["seed"]): r["val_accuracy"] for r in rows if r["cache"] == "cold"}
    out = []
    for config in configs:
        cold = [r for r in rows if r["config"] == config and r["cache"] == "cold"]
        warm = [r for r in rows if r["config"] == config and r["cache"] == "warm"]
        gains = [acc[(config, s)] - acc[("bottleneck", s)] for s in seeds
                 if (config, s) in acc and ("bottleneck", s) in acc]
        out.append([config, spread([r["val_accuracy"] for r in cold], 3),
                    spread(gains, 3) if config != "bottleneck" else "—",
                    spread([r["to_done"] for r in cold], 1), spread([r["to_done"] for r in warm], 1) if warm else "—",
                    spread([r["n_extracted"] for r in cold], 0)])
    return machine_line() + (f"\n\nDataset: {data.name}; seeds {seeds} (each a different train/validation "
                             f"split); validation accuracy as recorded by the run (its best epoch's weights).\n\n") + \
        table(["configuration", "val accuracy", "vs bottleneck (paired by seed)", "time to done, cold s", "warm s",
               "images through network (cold)"], out)


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, short training", worker=False)
    parser.add_argument("data", nargs="?", type=Path, help="dataset (default: tuxpaint-stamps, else the demo)")
    parser.add_argument("--copies", nargs="+", type=int, default=[2, 5, 10], help="values of K to try")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-finetune", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-augment-"))
    base: dict = {}
    try:
        if args.tiny:
            args.data = make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)
            args.copies, args.seeds, base = [1], [0], {"epochs": 2, "finetune_epochs": 1}
        data = (args.data or (TUXPAINT if TUXPAINT.is_dir() else DEMO)).resolve()
        rows = measure(data, args.copies, args.seeds, not args.no_finetune, base, tmp, smoke=args.tiny)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        print_section("Augmentation with cached features", report(rows, data))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
