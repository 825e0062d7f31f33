"""Shared helpers for the benchmark scripts: the machine, statistics, markdown tables, worker subprocesses,
and small datasets made on the spot.

Every benchmark compares systems as ratios measured side by side in one run: each system runs in its own fresh
process, the systems take turns (interleaved repetitions, the order rotated each round), and tables report the
median with the spread (min-max). On a shared or throttling machine absolute numbers drift; ratios drift less.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEMO = PROJECT_ROOT / "data" / "demo"
# GPL-licensed photos: read in place, never copied into the project.
TUXPAINT = Path(os.environ.get("FEWSHOT_TUXPAINT", "/work/shared/datasets/tuxpaint-stamps"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def default_datasets() -> list[Path]:
    """The built-in demo dataset, and tuxpaint-stamps where present."""
    return [DEMO] + ([TUXPAINT] if TUXPAINT.is_dir() else [])


def image_files(root: Path) -> list[Path]:
    """Image files in ROOT/<class>/ (what every system under test reads), sorted."""
    return sorted(p for p in Path(root).glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- the machine

def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine() -> dict:
    from importlib.metadata import version

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from core.cpu import cpu_features

    info = {"cpu": cpu_features().summary(), "cores": os.cpu_count(), "usable_cores": usable, "ram_gib": _ram_gib(),
            "python": platform.python_version(), "date": datetime.now().strftime("%Y-%m-%d %H:%M")}
    for pkg in ("tensorflow", "keras"):
        try:
            info[pkg] = version(pkg)
        except Exception:
            info[pkg] = "?"
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        info["load_avg_1m"] = None
    return info


def machine_line() -> str:
    m = machine()
    ram = f", {m['ram_gib']:.0f} GiB RAM" if m["ram_gib"] else ""
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable){ram}; "
            f"Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}; "
            f"{m['date']}; load average at start {m['load_avg_1m']}")


# ----------------------------------------------------------------------------------------------- statistics

def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


def spread(values, digits: int = 1, unit: str = "") -> str:
    """'median (min-max)' or just the value for one measurement."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return "—"
    fmt = f"{{:.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0]) + unit
    return f"{fmt.format(statistics.median(values))}{unit} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    def cell(v) -> str:
        return "—" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_section(title: str, body: str) -> None:
    print(f"\n### {title}\n\n{body}\n", flush=True)


# ----------------------------------------------------------------------------------------------- workers

def bench_parser(doc: str, tiny_help: str, worker: bool = True) -> argparse.ArgumentParser:
    """A bench script's command line: its own options go on top of --tiny, --json and (for scripts that time
    their systems in fresh processes) the internal --worker."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help=f"{tiny_help} (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    if worker:
        parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def serve_worker(args: argparse.Namespace, worker: Callable[[dict], dict]) -> bool:
    """In a worker process (`--worker PAYLOAD`): run `worker` on the payload and print its result. True if so."""
    if not getattr(args, "worker", None):
        return False
    emit(worker(read_payload(args.worker)))
    return True


def run_worker(module: str, payload: dict, env: dict | None = None, timeout: float = 1800) -> dict:
    """Run `python -m MODULE --worker @PAYLOAD.json` (from the project root) in a fresh Python process; it prints
    one JSON line starting with RESULT (see `read_payload` and `emit`)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="fewshot-bench-payload-") as fh:
        json.dump(payload, fh)  # a file, not argv: thousands of paths exceed the argument-length limit
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", module, "--worker", "@" + fh.name], cwd=PROJECT_ROOT,
                              env=full_env, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker {module} {payload} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}")


def read_payload(arg: str) -> dict:
    """A worker's `--worker` argument: JSON, or @FILE holding it."""
    return json.loads(Path(arg[1:]).read_text() if arg.startswith("@") else arg)


def emit(result: dict) -> None:
    """What a worker prints last."""
    print("RESULT " + json.dumps(result, default=float), flush=True)


def rss_mib() -> float:
    """Current resident memory of this process."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


# ----------------------------------------------------------------------------------------------- datasets

def make_tiny_dataset(root: Path, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """ROOT/<class>/img_<i>.jpg: a colour per class with noise and a darker square (learnable, tiny)."""
    colours = [(210, 40, 40), (40, 190, 60), (40, 60, 210), (200, 200, 40), (150, 40, 200)]
    for c in range(classes):
        for i in range(per_class):
            rng = np.random.default_rng(100 * c + i)
            arr = np.clip(np.array(colours[c % len(colours)], float) + rng.normal(0, 20, (size[1], size[0], 3)),
                          0, 255).astype(np.uint8)
            arr[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] //= 2
            path = root / f"class_{c}" / f"img_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, quality=90)
    return root


def augment_image(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A new, distinct photo from `img`: random crop, flip, small rotation, colour change, rescale."""
    img = img.convert("RGB")
    w, h = img.size
    scale = rng.uniform(0.7, 1.0)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, expand=False, fillcolor=(128, 128, 128))
    img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4)))
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
    side = int(rng.integers(200, 400))
    ratio = img.width / img.height
    return img.resize((side, max(8, int(side / ratio))) if ratio >= 1 else (max(8, int(side * ratio)), side),
                      Image.BILINEAR)


def make_scaled_dataset(sources: list[Path], count: int, out: Path, seed: int = 0) -> list[Path]:
    """`count` JPEG photos made by augmenting the sources' images, in OUT/<class>/ (reused if already made)."""
    marker = out / f".complete-{count}-{seed}"
    if marker.exists():
        return image_files(out)
    originals = [(p.parent.name, p) for src in sources for p in image_files(src)]
    if not originals:
        raise ValueError(f"no images in {sources}")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label, path = originals[i % len(originals)]
        with Image.open(path) as img:
            new = augment_image(img, rng)
        target = out / label / f"aug_{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        new.save(target, quality=88)
    marker.touch()
    return image_files(out)
