"""Memory and scale (issue item 5): peak resident memory and time while extracting 500, 2,000 and 5,000 images.

The images are made from the datasets' photos by augmentation (random crop, flip, rotation, colour, size: each
one a distinct file, so each goes through the network) into a scratch folder outside the project, once. Each
count runs in a fresh process through `core.features.extract_features` with a fresh feature cache (the cache
writes are part of the job), for each engine; memory is sampled as the extraction goes.

    .venv/bin/python -m bench.memory [DATASET ...] [--counts 500 2000 5000] [--engines tflite keras] [--tiny]
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    bench_parser,
    default_datasets,
    machine_line,
    make_scaled_dataset,
    make_tiny_dataset,
    peak_rss_mib,
    print_section,
    rss_mib,
    run_worker,
    serve_worker,
    spread,
    table,
)

MODULE = "bench.memory"  # workers run this module again in a fresh process
ENGINE_ENV = {"tflite": {"FEWSHOT_FAST_EXTRACT": "1"}, "keras": {"FEWSHOT_FAST_EXTRACT": "0"}}


def worker(payload: dict) -> dict:
    started = time.perf_counter()
    from core.backbones.tflite import fast_extractor
    from core.features import cached_extractor, extract_features
    imports = time.perf_counter() - started
    backbone = payload["backbone"]
    if payload["engine"] == "tflite":
        if fast_extractor(backbone, 10**9) is None:
            raise RuntimeError("no TFLite extractor")
    else:
        cached_extractor(backbone)
    ready = rss_mib()
    paths = [Path(p) for p in payload["paths"]]
    samples: list[tuple[int, float]] = []

    def progress(done: int, total: int) -> None:
        samples.append((done, rss_mib()))

    cache = Path(tempfile.mkdtemp(prefix="fewshot-bench-cache-"))
    try:
        t0 = time.perf_counter()
        result = extract_features(paths, backbone, cache, progress=progress)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"imports": imports, "n": len(paths), "seconds": seconds, "engine": result.engine,
            "rss_ready": ready, "peak": peak_rss_mib(), "rss_end": rss_mib(),
            "rss_half": next((r for d, r in samples if d >= len(paths) // 2), None),
            "rss_max_sampled": max((r for _, r in samples), default=None), "n_extracted": result.n_extracted}


def _pool(sources: list[Path], count: int, root: Path) -> list[Path]:
    """The first `count` generated images, in the order they were made (so every class is in each subset)."""
    paths = make_scaled_dataset(sources, count, root)
    return sorted(paths, key=lambda p: int(re.search(r"(\d+)", p.stem).group(1)))[:count]


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images")
    parser.add_argument("datasets", nargs="*", type=Path, help="source datasets (default: demo, tuxpaint)")
    parser.add_argument("--counts", nargs="+", type=int, default=[500, 2000, 5000])
    parser.add_argument("--engines", nargs="+", default=["tflite", "keras"], choices=list(ENGINE_ENV))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "fewshot-bench-scale",
                        help="where the generated images are kept between runs (outside the project)")
    args = parser.parse_args()
    if serve_worker(args, worker):
        return
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-memory-"))
    try:
        if args.tiny:
            args.datasets = [make_tiny_dataset(tmp / "tiny", classes=2, per_class=3)]
            args.counts, args.scratch, args.engines = [8, 16], tmp / "scale", ["tflite"]
        sources = [d.resolve() for d in (args.datasets or default_datasets())]
        pool = _pool(sources, max(args.counts), args.scratch / f"from-{'-'.join(s.name for s in sources)}")
        rows = []
        for rep in range(args.reps):
            for count in args.counts:
                for engine in args.engines:
                    res = run_worker(MODULE, {"paths": [str(p) for p in pool[:count]], "backbone": args.backbone,
                                              "engine": engine}, ENGINE_ENV[engine])
                    rows.append({"rep": rep, "count": count, **res})
                    print(f"  {count} {engine}: {res['seconds']:.1f} s, peak {res['peak']:.0f} MiB",
                          file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        out = []
        for engine in args.engines:
            for count in args.counts:
                group = [r for r in rows if r["count"] == count and r["engine"] == engine]
                out.append([engine, count, spread([r["seconds"] for r in group], 1),
                            spread([r["n"] / r["seconds"] for r in group], 1),
                            spread([1000 * r["seconds"] / r["n"] for r in group], 1),
                            spread([r["rss_ready"] for r in group], 0), spread([r["rss_half"] for r in group], 0),
                            spread([r["rss_end"] for r in group], 0), spread([r["peak"] for r in group], 0)])
        print_section("Memory and scale", machine_line() + f"\n\nBackbone {args.backbone}; images made from "
                      f"{', '.join(s.name for s in sources)} by augmentation; fresh process and feature cache per "
                      f"row; memory in MiB (resident).\n\n" + table(
                          ["engine", "images", "seconds", "img/s", "s per 1000", "RSS model loaded", "RSS halfway",
                           "RSS at end", "peak RSS"], out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
