"""Feature extraction of a large dataset spread over a Ray cluster: the images are split into shards, one per
extraction actor (one per CPU share, as for runs), and each actor writes its features to the content-keyed cache on
the shared storage. A training afterwards finds them all cached; nothing travels back through Ray but counts.

    python -m core extract DATA --ray ADDRESS [--backbone NAME] [--workers N]
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.engine.ray_executor import _runtime_env, connect, cpus_per_run
from core.workspace import features_dir, workspace_root


@dataclass
class ShardReport:
    node: str
    n_images: int
    n_extracted: int      # computed by the backbone (the rest were in the cache already)
    seconds: float
    engine: str


@dataclass
class ExtractReport:
    backbone: str
    workers: int
    n_images: int
    n_extracted: int
    seconds: float        # wall time of the extraction itself, the actors already warm
    warm_up_seconds: float
    shards: list[ShardReport] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}


class _Extractor:
    def __init__(self, backbone: str, n_images: int) -> None:
        from core.backbones.tflite import fast_extractor
        from core.features import cached_extractor

        self.backbone = backbone
        cached_extractor(backbone)  # paid once per actor, before the clock starts
        fast_extractor(backbone, n_images)

    def ready(self) -> bool:
        return True

    def extract(self, paths: list[str], cache_root: str, batch_size: int) -> dict:
        import ray

        from core.features import extract_features

        result = extract_features([Path(p) for p in paths], self.backbone, Path(cache_root), batch_size=batch_size)
        return {"node": f"{ray.util.get_node_ip_address()} pid {os.getpid()}", "n_images": len(paths),
                "n_extracted": result.n_extracted, "seconds": result.seconds, "engine": result.engine}


def shard(paths: list[Path], n: int) -> list[list[Path]]:
    """n contiguous shards of near-equal size (contiguous: a class folder's files stay together on disk)."""
    size, extra = divmod(len(paths), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(paths[start:end])
        start = end
    return [s for s in out if s]


def extract_on_cluster(paths: list[Path], backbone: str, address: str, workers: int | None = None,
                       batch_size: int = 32) -> ExtractReport:
    """Extract (and cache) the features of `paths` on `workers` actors of the cluster (default: its capacity)."""
    ray = connect(address)
    capacity = max(1, int(ray.cluster_resources().get("CPU", 0) // cpus_per_run()))
    shards = shard(list(paths), max(1, min(workers or capacity, len(paths))))
    env = _runtime_env(workspace_root())
    start = time.perf_counter()
    actors = [ray.remote(_Extractor).options(num_cpus=cpus_per_run(), runtime_env=env).remote(backbone, len(s))
              for s in shards]
    try:
        ray.get([a.ready.remote() for a in actors])
        warm = time.perf_counter() - start
        start = time.perf_counter()
        results = ray.get([a.extract.remote([str(p) for p in s], str(features_dir()), batch_size)
                           for a, s in zip(actors, shards)])
        seconds = time.perf_counter() - start
    finally:
        for actor in actors:
            ray.kill(actor)
    reports = [ShardReport(**r) for r in results]
    return ExtractReport(backbone, len(shards), len(paths), sum(r.n_extracted for r in reports), seconds, warm,
                         reports)
