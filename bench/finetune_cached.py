"""Issue 10, part 3: fine-tuning on cached activations (`--mode finetune`, the default) vs the full image path
(`--mode finetune --finetune-full`), side by side: same data, seeds, epochs and settings.

Each run goes through `core.engine.execute_run` in a fresh process (`bench/train.py`'s worker), so each pays its
own imports. Per seed (a different train/validation split each):

    full    `finetune_full=True` in a fresh workspace: every epoch sends every training image, freshly augmented,
            through the whole backbone
    cold    the cached path in a fresh workspace: the lower part's activations of the original and K augmented
            copies of each training image (and of the validation images) are computed and cached, then the top
            block + head train on them
    warm    the cached path again in that workspace (another process): every activation read from the cache, as
            for a retrain after fixing labels

Fine-tuning stage time: the `finetune` phase of `full` vs the `activations` + `finetune` phases of the cached
runs (the bottleneck head before it is the same in both). Memory: the activations held in memory (float16), the
activation cache on disk, and each process's peak RSS.

    .venv/bin/python -m bench.finetune_cached [DATASET] [--seeds 0 1 2] [--tiny]
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

TRAIN_MODULE = "bench.train"


def _one(workspace: Path, data: Path, name: str, config: dict) -> dict:
    out = run_worker(TRAIN_MODULE, {"jobs": [{"workspace": str(workspace), "data": str(data), "mode": "finetune",
                                              "name": name, "config": config}]})
    job = out["jobs"][0]
    job["peak_rss_mib"] = out.get("peak_rss_mib")
    phases = job["phases"]
    job["stage"] = phases.get("activations", 0.0) + phases.get("finetune", 0.0)
    return job


def _together(jobs: dict[str, tuple[Path, Path, dict]]) -> dict[str, dict]:
    """Smoke test only: the same jobs, in order, in one worker process (fresh processes would each import
    TensorFlow again); "peak RSS" is then that one process's."""
    out = run_worker(TRAIN_MODULE, {"jobs": [{"workspace": str(ws), "data": str(data), "mode": "finetune",
                                              "name": name, "config": config}
                                             for name, (ws, data, config) in jobs.items()]})
    for job in out["jobs"]:
        job["peak_rss_mib"] = out.get("peak_rss_mib")
        job["stage"] = job["phases"].get("activations", 0.0) + job["phases"].get("finetune", 0.0)
    return dict(zip(jobs, out["jobs"]))


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, short training")
    parser.add_argument("data", nargs="?", type=Path, help="dataset (default: tuxpaint-stamps, else the demo)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-ftcached-"))
    config: dict = {}
    try:
        if args.tiny:
            args.data = make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)
            args.seeds, config = [0], {"epochs": 2, "finetune_epochs": 1}
        data = (args.data or (TUXPAINT if TUXPAINT.is_dir() else DEMO)).resolve()
        rows = []
        for seed in args.seeds:
            settings = {**config, "seed": seed}
            jobs = {"full": (tmp / f"ws-full-{seed}", data, {**settings, "finetune_full": True}),
                    "cold": (tmp / f"ws-cached-{seed}", data, settings),
                    "warm": (tmp / f"ws-cached-{seed}", data, settings)}
            if args.tiny:
                row = {"seed": seed, **_together(jobs)}
            else:
                row = {"seed": seed, **{name: _one(ws, d, name, c) for name, (ws, d, c) in jobs.items()}}
            rows.append(row)
            print(f"  seed {seed}: " + "; ".join(
                f"{k} {row[k]['val_accuracy']} in {row[k]['stage']:.1f} s" for k in ("full", "cold", "warm")),
                file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        labels = {"full": "finetune --finetune-full", "cold": "finetune (cached), cold cache",
                  "warm": "finetune (cached), warm cache"}
        out = []
        for kind, label in labels.items():
            faster = "—" if kind == "full" else spread([r["full"]["stage"] / max(r[kind]["stage"], 1e-9)
                                                        for r in rows], 2, "×")
            paired = "—" if kind == "full" else spread([r[kind]["val_accuracy"] - r["full"]["val_accuracy"]
                                                        for r in rows], 3)
            out.append([label, spread([r[kind]["val_accuracy"] for r in rows], 3), paired,
                        spread([r[kind]["stage"] for r in rows], 1), faster,
                        spread([r[kind]["total_seconds"] for r in rows], 1),
                        spread([r[kind]["peak_rss_mib"] for r in rows], 0)])
        info = rows[0]["cold"]["finetune"] or {}
        detail = (f"n_val {rows[0]['full']['n_val']}; K = {info.get('copies')} augmented copies cached per "
                  f"training image, cut at {info.get('cut')}; activations computed cold "
                  f"{spread([r['cold']['finetune']['activations_computed'] for r in rows], 0)}, warm "
                  f"{spread([r['warm']['finetune']['activations_computed'] for r in rows], 0)} (read "
                  f"{spread([r['warm']['finetune']['activations_cached'] for r in rows], 0)}); in memory "
                  f"{spread([r['cold']['finetune']['activation_memory_mib'] for r in rows], 1)} MiB (float16), "
                  f"cache on disk {spread([r['cold']['finetune']['activation_cache_mib'] for r in rows], 1)} MiB; "
                  f"cold activations phase {spread([r['cold']['phases'].get('activations', 0) for r in rows], 1)} s, "
                  f"cold training {spread([r['cold']['phases'].get('finetune', 0) for r in rows], 1)} s.")
        print_section("Fine-tuning on cached activations vs full images", machine_line() + (
            f"\n\nDataset: {data.name}; seeds {args.seeds}; {detail}\n\n") + table(
                ["configuration", "val accuracy", "vs full (paired)", "fine-tuning stage s", "faster than full",
                 "run total s", "peak RSS MiB"], out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
