"""Feature-extraction throughput (issue items 1 and 2): this project's path against the recipe's and Keras' own,
on the same images and the same backbone weights, and how far each is from the machine's limit.

Systems, each in its own fresh process, interleaved, `--reps` rounds (the order rotates every round):

  (a) recipe        legacy `ImageDataGenerator().flow_from_directory(...)` feeding `model.predict`, TF's default
                    threading (what the Keras blog recipe does)
  (b) keras-idfd    `keras.utils.image_dataset_from_directory(...)` + `model.predict`, TF's default threading
  (b') keras-idfd-2t  the same with this project's threading (2 intra-op, 1 inter-op): separates the pipeline
                    from the threading
  project-keras     `core.features.extract_features` (no cache) forced onto the Keras model
  project           `core.features.extract_features` (no cache) as shipped: TFLite/XNNPACK where converted

Each process builds the model first (not timed), then times two passes over each dataset: the first pass
includes graph tracing (what a user waits for), the second is the steady state.

The machine's limit: a float32 2048^3 matrix multiply through TF with 2 threads (best of 5), measured in each
round; each backbone's FLOPs per image are counted from its layers (2 x multiply-adds of convolutions and dense
layers); the fraction of the limit is images/s x FLOPs/image / matmul FLOP/s.

    .venv/bin/python -m bench.extract [DATASET ...] [--backbones efficientnet_lite0 efficientnet_lite2]
                                      [--reps 3] [--tiny]
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import (
    Timer,
    bench_parser,
    default_datasets,
    image_files,
    machine_line,
    make_tiny_dataset,
    median,
    print_section,
    run_worker,
    serve_worker,
    spread,
    table,
)

MODULE = "bench.extract"  # workers run this module again in a fresh process
DEFAULT_THREADS = {"FEWSHOT_INTRA_THREADS": "0", "FEWSHOT_INTER_THREADS": "0"}  # 0 = TensorFlow's default
PROJECT_THREADS = {"FEWSHOT_INTRA_THREADS": "2", "FEWSHOT_INTER_THREADS": "1"}
SYSTEMS = {  # name -> (label, environment)
    "recipe": ("(a) recipe: ImageDataGenerator + predict, TF default threads", DEFAULT_THREADS),
    "keras-idfd": ("(b) image_dataset_from_directory + predict, TF default threads", DEFAULT_THREADS),
    "keras-idfd-2t": ("(b') image_dataset_from_directory + predict, 2/1 threads", PROJECT_THREADS),
    "project-keras": ("this project, Keras engine", {**PROJECT_THREADS, "FEWSHOT_FAST_EXTRACT": "0"}),
    "project": ("this project as shipped (TFLite where converted)", PROJECT_THREADS),
}


# ------------------------------------------------------------------------------------------------ worker side

def _count_flops(model) -> int:
    """2 x multiply-adds of the convolutions and dense layers (BatchNorm, activations, adds: negligible)."""
    from core.tfenv import keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            macs += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            macs += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return 2 * int(macs)


def _worker_limits(payload: dict) -> dict:
    from core.backbones import build_feature_extractor
    from core.tfenv import tf

    n = payload["n"]
    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    tf.linalg.matmul(a, b).numpy()  # warm-up
    best = min(_timed(lambda: tf.linalg.matmul(a, b).numpy()) for _ in range(5))
    # bfloat16 through oneDNN: fast only where the CPU has it natively (AMX-BF16, AVX512-BF16); emulated elsewhere.
    a16, b16 = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    tf.linalg.matmul(a16, b16).numpy()
    best16 = min(_timed(lambda: tf.linalg.matmul(a16, b16).numpy()) for _ in range(5))
    an, bn = a.numpy(), b.numpy()
    an @ bn
    best_np = min(_timed(lambda: an @ bn) for _ in range(5))
    flops = {name: _count_flops(build_feature_extractor(name, weights=None)) for name in payload["backbones"]}
    return {"tf_gflops": 2 * n**3 / best / 1e9, "tf_bf16_gflops": 2 * n**3 / best16 / 1e9,
            "numpy_gflops": 2 * n**3 / best_np / 1e9, "flops": flops}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _worker_convert(payload: dict) -> dict:
    """Time a fresh conversion in a scratch weights folder, then make sure the real one has its conversion."""
    from core.backbones import build_feature_extractor, tflite, weights_dir

    name = payload["backbone"]
    build_feature_extractor(name)  # the converted Keras weights exist from here on
    real_dir = weights_dir()
    if not payload.get("time_fresh", True):  # smoke test: only make sure the real conversion exists
        conversion = tflite.convert(name) if not tflite.tflite_path(name).exists() else None
        return {"seconds": conversion.seconds if conversion else float("nan"),
                "max_abs_diff": conversion.max_abs_diff if conversion else float("nan"),
                "relative_diff": conversion.relative_diff if conversion else float("nan"), "accepted": True}
    scratch = Path(tempfile.mkdtemp(prefix="fewshot-convert-"))
    try:
        shutil.copy2(real_dir / f"{name}.weights.h5", scratch / f"{name}.weights.h5")
        os.environ["FEWSHOT_WEIGHTS_DIR"] = str(scratch)
        conversion = tflite.convert(name)
    finally:
        os.environ["FEWSHOT_WEIGHTS_DIR"] = str(real_dir)
        shutil.rmtree(scratch, ignore_errors=True)
    path = tflite.tflite_path(name)
    if conversion.accepted and not path.exists():
        tflite.convert(name)
    return {"seconds": conversion.seconds, "max_abs_diff": conversion.max_abs_diff,
            "relative_diff": conversion.relative_diff, "accepted": conversion.accepted}


def _system_fn(system: str, model, backbone: str, size: int):
    from core.tfenv import keras, tf

    if system == "recipe":
        def run(root: Path) -> np.ndarray:
            gen = tf.keras.preprocessing.image.ImageDataGenerator().flow_from_directory(
                str(root), target_size=(size, size), batch_size=32, class_mode=None, shuffle=False)
            return model.predict(gen, verbose=0)
        return run
    if system.startswith("keras-idfd"):
        def run(root: Path) -> np.ndarray:
            ds = keras.utils.image_dataset_from_directory(str(root), labels=None, image_size=(size, size),
                                                          batch_size=32, shuffle=False, verbose=False)
            return model.predict(ds, verbose=0)
        return run
    from core.backbones.tflite import fast_extractor
    from core.features import cached_extractor, extract_features

    cached_extractor(backbone)  # build outside the timing, like the baselines' model
    fast_extractor(backbone)

    def run(root: Path) -> np.ndarray:
        result = extract_features(image_files(root), backbone, cache_root=None)
        run.engine = result.engine
        return result.features
    run.engine = None
    return run


def _worker_extract(payload: dict) -> dict:
    """Time `payload["systems"]` (one, except in a smoke test) in this fresh process."""
    started = time.perf_counter()
    from core.backbones import build_feature_extractor, get_backbone
    from core.tfenv import tf  # noqa: F401  (threading is configured here)
    imports = time.perf_counter() - started

    backbone = payload["backbone"]
    size = get_backbone(backbone).input_size
    model = build_feature_extractor(backbone, weights=payload.get("weights", "imagenet"))
    out = {"imports": imports, "systems": {}}
    for system in payload["systems"]:
        # Read at call time, so it holds per system even when a smoke test runs them all in one process.
        os.environ.pop("FEWSHOT_FAST_EXTRACT", None)
        os.environ.update({k: v for k, v in SYSTEMS[system][1].items() if k == "FEWSHOT_FAST_EXTRACT"})
        run = _system_fn(system, model, backbone, size)
        out["systems"][system] = per_dataset = {}
        for root in payload["datasets"]:
            passes = []
            for _ in range(payload["passes"]):
                with Timer() as t:
                    features = run(Path(root))
                passes.append(t.seconds)
            per_dataset[root] = {"n": int(len(features)), "seconds": passes, "engine": getattr(run, "engine", None)}
            if payload.get("features_dir"):
                np.save(Path(payload["features_dir"]) / f"{system}-{backbone}-{Path(root).name}.npy", features)
    return out


def worker(payload: dict) -> dict:
    kind = payload["kind"]
    if kind == "batch":  # a smoke test's jobs, one after another in this one process
        return {"results": [worker(job) for job in payload["jobs"]]}
    return {"limits": _worker_limits, "convert": _worker_convert, "extract": _worker_extract}[kind](payload)


# ------------------------------------------------------------------------------------------------ orchestrator

def measure(datasets: list[Path], backbones: list[str], systems: list[str], reps: int, passes: int, n: int,
            smoke: bool = False) -> dict:
    features_dir = Path(tempfile.mkdtemp(prefix="fewshot-bench-features-"))
    results: dict = {"limits": [], "convert": {}, "runs": [], "features_dir": str(features_dir)}
    jobs: list[tuple[tuple, dict, dict]] = []  # (where its result goes, the worker's payload, its environment)
    for backbone in backbones:
        if backbone in ("efficientnet_lite0", "efficientnet_lite2") and "project" in systems:
            jobs.append((("convert", backbone), {"kind": "convert", "backbone": backbone, "time_fresh": not smoke},
                         PROJECT_THREADS))
    payload = {"kind": "extract", "datasets": [str(d) for d in datasets], "passes": passes,
               "features_dir": str(features_dir)}
    for rep in range(reps):
        jobs.append((("limits",), {"kind": "limits", "n": n, "backbones": backbones}, PROJECT_THREADS))
        for backbone in backbones:
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            # One fresh process per system (a smoke test puts them all in one).
            for group in ([order] if smoke else [[s] for s in order]):
                jobs.append((("extract", rep, backbone), {**payload, "backbone": backbone, "systems": group},
                             SYSTEMS[group[0]][1]))
    if smoke:
        # Every job in one worker process, with the first job's threading: a fresh process for each would only
        # import TensorFlow and build the backbone again (no number of a smoke test is read).
        outs = run_worker(MODULE, {"kind": "batch", "jobs": [job for _, job, _ in jobs]}, jobs[0][2])["results"]
    else:
        outs = (run_worker(MODULE, job, env) for _, job, env in jobs)  # one at a time, in this order
    for (where, _, _), res in zip(jobs, outs):
        if where[0] == "convert":
            results["convert"][where[1]] = res
        elif where[0] == "limits":
            results["limits"].append(res)
        else:
            _, rep, backbone = where
            for system, per_dataset in res["systems"].items():
                results["runs"].append({"rep": rep, "backbone": backbone, "system": system, "datasets": per_dataset})
                print(f"  round {rep + 1}/{reps} {backbone} {system}: " + ", ".join(
                    f"{Path(d).name} {v['n'] / v['seconds'][-1]:.1f} img/s" for d, v in per_dataset.items()),
                    file=sys.stderr, flush=True)
    return results


def _rates(results: dict, backbone: str, system: str, dataset: str, pass_index: int) -> dict[int, float]:
    return {r["rep"]: r["datasets"][dataset]["n"] / r["datasets"][dataset]["seconds"][pass_index]
            for r in results["runs"] if r["backbone"] == backbone and r["system"] == system}


def _ratio(num: dict[int, float], den: dict[int, float]) -> list[float]:
    return [num[k] / den[k] for k in num if k in den]  # paired within a round


def report(results: dict, datasets: list[Path], backbones: list[str], systems: list[str]) -> str:
    sections = [machine_line()]
    passes = len(results["runs"][0]["datasets"][str(datasets[0])]["seconds"])
    for backbone in backbones:
        rows = []
        for dataset in map(str, datasets):
            n = next(r["datasets"][dataset]["n"] for r in results["runs"] if r["backbone"] == backbone)
            base_a = {p: _rates(results, backbone, "recipe", dataset, p) for p in range(passes)}
            base_b = {p: _rates(results, backbone, "keras-idfd", dataset, p) for p in range(passes)}
            for system in systems:
                first = _rates(results, backbone, system, dataset, 0)
                last = _rates(results, backbone, system, dataset, passes - 1)
                engines = {r["datasets"][dataset]["engine"] for r in results["runs"]
                           if r["backbone"] == backbone and r["system"] == system} - {None}
                label = SYSTEMS[system][0] + (f" [{'/'.join(sorted(engines))}]" if engines else "")
                rows.append([f"{Path(dataset).name} ({n})", label, spread(first.values()), spread(last.values()),
                             spread(_ratio(first, base_a[0]), 2, "×") if base_a[0] else None,
                             spread(_ratio(last, base_a[passes - 1]), 2, "×") if base_a[0] else None,
                             spread(_ratio(first, base_b[0]), 2, "×") if base_b[0] else None,
                             spread(_ratio(last, base_b[passes - 1]), 2, "×") if base_b[0] else None])
        sections.append(f"**{backbone}** — images/s, median (min–max) over {len(results['limits'])} interleaved "
                        f"rounds; ratios paired within a round\n\n" + table(
                            ["dataset (images)", "system", "img/s 1st pass", "img/s 2nd pass", "vs (a) 1st",
                             "vs (a) 2nd", "vs (b) 1st", "vs (b) 2nd"], rows))

    limits = results["limits"]
    tf_gflops = [lim["tf_gflops"] for lim in limits]
    rows = []
    for backbone in backbones:
        gflop = limits[0]["flops"][backbone] / 1e9
        ceiling = median(tf_gflops) / gflop
        for system in systems:
            rates = [v for d in map(str, datasets) for v in _rates(results, backbone, system, d, passes - 1).values()]
            best = max(rates) if rates else None
            rows.append([backbone, f"{gflop:.2f}", f"{ceiling:.0f}", SYSTEMS[system][0],
                         spread(rates), f"{median(rates) * gflop / median(tf_gflops):.0%}" if rates else None,
                         f"{best * gflop / median(tf_gflops):.0%}" if best else None])
    sections.append(
        f"**Distance to the machine's limit.** float32 matmul 2048³ through TF, 2 threads, best of 5: "
        f"{spread(tf_gflops)} GFLOP/s (bfloat16: {spread([lim.get('tf_bf16_gflops') for lim in limits])} GFLOP/s; "
        f"numpy/OpenBLAS float32: {spread([lim['numpy_gflops'] for lim in limits])} GFLOP/s). "
        f"Steady-state (2nd pass) rates over both datasets and all rounds.\n\n" + table(
            ["backbone", "GFLOP/image", "ceiling img/s", "system", "img/s", "fraction of limit (median)",
             "fraction (best)"], rows))

    if results["convert"]:
        rows = []
        for backbone, conv in results["convert"].items():
            real = _real_diffs(results, backbone, datasets)
            speed = [v for d in map(str, datasets) for v in _ratio(
                _rates(results, backbone, "project", d, passes - 1),
                _rates(results, backbone, "project-keras", d, passes - 1))]
            fresh = conv["seconds"] == conv["seconds"]  # NaN: not timed (smoke test, already converted)
            rows.append([backbone, f"{conv['seconds']:.1f}" if fresh else "not timed",
                         f"{conv['max_abs_diff']:.2e}" if fresh else None,
                         f"{real[0]:.2e} ({real[1]:.1e} of max |feature|)" if real else None,
                         spread(speed, 2, "×"), "yes" if conv["accepted"] and speed and median(speed) > 1 else "no"])
        sections.append("**TFLite (XNNPACK) extractor** — converted from the Keras model (graph frozen); kept only "
                        "where its features match Keras (relative tolerance 1e-3) and it is faster.\n\n" + table(
                            ["backbone", "conversion s (once)", "max abs diff, check images",
                             "max abs diff, dataset images", "speed vs project-keras (2nd pass)", "used"], rows))
    return "\n\n".join(sections)


def _real_diffs(results: dict, backbone: str, datasets: list[Path]) -> tuple[float, float] | None:
    folder = Path(results["features_dir"])
    diffs, scale = [], []
    for d in datasets:
        a, b = folder / f"project-{backbone}-{d.name}.npy", folder / f"project-keras-{backbone}-{d.name}.npy"
        if a.exists() and b.exists():
            fa, fb = np.load(a), np.load(b)
            diffs.append(float(np.abs(fa - fb).max()))
            scale.append(float(np.abs(fb).max()))
    return (max(diffs), max(diffs) / max(scale)) if diffs else None


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, one round")
    parser.add_argument("datasets", nargs="*", type=Path, help="class-folder datasets (default: demo, tuxpaint)")
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    if serve_worker(args, worker):
        return
    n = 2048
    tmp = None
    if args.tiny:
        tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-tiny-"))
        args.datasets = [make_tiny_dataset(tmp / "tiny", classes=2, per_class=3)]  # every job in one process
        args.backbones, args.reps, args.passes, n = ["efficientnet_lite0"], 1, 1, 256
    datasets = [d.resolve() for d in (args.datasets or default_datasets())]
    results = measure(datasets, args.backbones, args.systems, args.reps, args.passes, n, smoke=args.tiny)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_section("Feature extraction throughput", report(results, datasets, args.backbones, args.systems))
    shutil.rmtree(results["features_dir"], ignore_errors=True)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
