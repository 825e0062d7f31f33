"""Issue 11, item 3: does fine-tuning gain over its bottleneck head? Per dataset and seed (each seed is another
train/validation split), on the same split and the same cached features:

    logreg          scikit-learn's LogisticRegression (L2, C=1, balanced class weights, the app's default) on the
                    bottleneck features: the baseline the head must match
    head            the bottleneck head (`train_bottleneck_head`, the app's defaults)
    head K=4 aug    the bottleneck mode's head trained on the originals' and 4 augmented copies' features (the
                    app's `augment_copies=4`: each copy through the whole backbone), with what the copies cost
    calibrated      the head retrained on all K+1 versions' features from the fine-tune's cached activations (the
                    new fine-tune's first step; not itself a model the app keeps)
    ft before       the fine-tune as it was: head as trained, SGD at a constant 1e-4 (`PREVIOUS_RECIPE`)
    ft after        issue 11's first pass: head calibrated on the augmented copies first, warm-up + cosine decay
    ft after +1     the same with one more block unfrozen under the top one (Lite0: block14 and block15)
    (with --configs: ft schedule = warm-up + cosine only, ft calibrate = calibration only; after-k9 = K = 9
    cached copies; natural-k9[+1] = K = 9, the "natural" preset and peak lr 1e-3 [+1 block]: the app's default
    [+1 block]; full = the full-image fine-tune, with the app's defaults)

The configs before natural-k9 keep the settings they were measured with when they were the default (the recipe's
augmentation, peak lr 1e-4), so their rows stay comparable with BENCHMARKS.md's earlier runs.

Every fine-tune starts from the same bottleneck head and keeps it when no epoch beats it on validation loss (the
app's rule), so its accuracy is the kept model's: the head's own when the head was kept. Accuracies are on the
split's validation photos; the tables give mean ± sample sd over seeds (min–max), and differences with the head
paired by seed.

Datasets (default): the built-in demo, tuxpaint-stamps (read where it lies, GPL: never copied), and a Fashion-MNIST
subsample made from the `dataset-fashion-mnist` Debian package on this machine (its .deb in apt's cache, or the
installed /usr/share/datasets/fashion-mnist): 40 photos of each of the 5 classes sandal, shirt, sneaker, bag and
ankle boot from its test set, drawn with a fixed seed, written as 28×28 PNGs into the temporary folder.
`--digits` adds scikit-learn's bundled 8×8 handwritten digits (20 of each of 10 digits, 200 photos, never looked at
while choosing the recipe; `--only-digits` runs them alone).
`--dev` uses another subsample (the other 5 classes, from its training set): what was looked at while choosing
the recipe, so the default datasets are ones it was not tuned on.

    .venv/bin/python -m bench.finetune_gain [DATASET ...] [--seeds 0 1 2] [--configs ...] [--tiny]
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import DEMO, TUXPAINT, bench_parser, machine_line, make_tiny_dataset, print_section, table

FMNIST_DEB_DIR = Path("/var/cache/apt/archives")
FMNIST_INSTALLED = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
CONFIGS = ("before", "schedule", "calibrate", "after", "after+1", "after-k9", "natural-k9", "natural-k9+1", "full")
DEFAULT_CONFIGS = ["before", "after", "after+1"]
LABELS = {"logreg": "logistic regression (sklearn, features)", "head": "bottleneck head",
          "head_aug": "bottleneck head, K=4 augmented features", "calibrated": "head calibrated on K+1 versions",
          "before": "fine-tune before (head as is, constant lr)",
          "schedule": "fine-tune, warm-up + cosine only", "calibrate": "fine-tune, calibrated head only",
          "after": "fine-tune after (calibrated head, warm-up + cosine)",
          "after+1": "fine-tune after, +1 block unfrozen",
          "after-k9": "fine-tune after, K=9 cached copies (one per epoch), recipe's augmentation, lr 1e-4",
          "natural-k9": "fine-tune, K=9, 'natural' augmentation, peak lr 1e-3 (the default)",
          "natural-k9+1": "fine-tune, K=9, 'natural' augmentation, peak lr 1e-3, +1 block unfrozen",
          "full": "fine-tune on full images (--finetune-full: fresh augmentation every epoch)"}
# The summary's columns: each fine-tune config's gain over the head (the ablations stay in the per-dataset tables).
SUMMARY = {"before": "fine-tune before − head", "after": "after − head", "after+1": "after +1 block − head",
           "after-k9": "after, K=9 − head", "natural-k9": "natural, lr 1e-3 (default) − head",
           "natural-k9+1": "natural, lr 1e-3, +1 block − head", "full": "full images − head"}


# ----------------------------------------------------------------------------------------------- Fashion-MNIST

def _fmnist_files() -> dict[str, bytes]:
    """The package's four .gz idx files, from the installed package or its .deb in apt's cache."""
    if FMNIST_INSTALLED.is_dir():
        return {p.name: p.read_bytes() for p in FMNIST_INSTALLED.glob("*-ubyte.gz")}
    debs = sorted(FMNIST_DEB_DIR.glob("dataset-fashion-mnist_*.deb"))
    if not debs:
        raise FileNotFoundError("no dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)")
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True,
                               check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            if member.name.endswith("-ubyte.gz"):
                out[Path(member.name).name] = tar.extractfile(member).read()
    return out


def _idx(data: bytes) -> np.ndarray:
    raw = gzip.decompress(data)
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(out: Path, part: str, classes: list[int], per_class: int, seed: int = 0) -> Path:
    """OUT/<class>/<index>.png: `per_class` images of each class from the `part` ("t10k" or "train") set."""
    marker = out / f".complete-{part}-{'-'.join(map(str, classes))}-{per_class}-{seed}"
    if marker.exists():
        return out
    from PIL import Image

    files = _fmnist_files()
    images, labels = _idx(files[f"{part}-images-idx3-ubyte.gz"]), _idx(files[f"{part}-labels-idx1-ubyte.gz"])
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False):
            path = out / FMNIST_CLASSES[c] / f"{part}_{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(path)
    marker.touch()
    return out


def sklearn_digits(out: Path, per_class: int, seed: int = 0) -> Path:
    """OUT/<digit>/<index>.png: `per_class` of scikit-learn's bundled handwritten digits per class (UCI's 8×8
    greyscale digits, 16 levels; shipped inside the scikit-learn package, no download), drawn with a fixed seed.
    Far from ImageNet's photos: where a frozen network's features fit least, so fine-tuning has room to help."""
    marker = out / f".complete-digits-{per_class}-{seed}"
    if marker.exists():
        return out
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for c in range(10):
        for i in rng.choice(np.flatnonzero(digits.target == c), per_class, replace=False):
            path = out / str(c) / f"digit_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)  # 0-16 -> 0-255
            Image.fromarray(255 - pixels).convert("RGB").save(path)  # dark ink on white paper
    marker.touch()
    return out


# ----------------------------------------------------------------------------------------------- one split

def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    pred = (probs[:, 0] > 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(1)
    return round(float((pred == y).mean()), 5)  # as the history's (rounded) accuracies, so equal ones compare equal


def _from_head(cfg, n_classes: int, head, train) -> tuple[dict, list[dict], float]:
    """Run `train(start, reporter) -> info` (a fine-tune) from a copy of `head`, quietly and timed: its info, its
    epochs and its seconds."""
    from core.backbones import get_backbone
    from core.models import build_head
    from core.reporting import Reporter
    from core.tfenv import keras

    keras.utils.set_random_seed(cfg.seed)
    start = build_head(get_backbone(cfg.backbone).feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    start.set_weights(head.get_weights())
    with open(os.devnull, "w") as quiet:
        reporter = Reporter(terminal=quiet)
        started = time.perf_counter()
        info = train(start, reporter)
        seconds = time.perf_counter() - started
    return info, reporter.history, seconds


def _kept_accuracy(info: dict, history: list[dict], head_acc: float) -> float:
    if info["kept_start"]:
        return head_acc  # the head itself, as the app keeps it
    return next(r["val_accuracy"] for r in history if r["epoch"] == info["kept_epoch"])


def _finetune(cfg, n_classes: int, splits: dict, head, head_acc: float, recipe) -> dict:
    from core.training.finetune_cached import finetune_on_activations

    info, history, seconds = _from_head(cfg, n_classes, head, lambda start, reporter: finetune_on_activations(
        cfg, n_classes, splits, start, reporter, recipe).info)
    calibrated = info.get("calibrated_head") or {}
    return {"val_accuracy": _kept_accuracy(info, history, head_acc), "kept_start": info["kept_start"],
            "kept_epoch": info["kept_epoch"], "epochs": len(history), "seconds": round(seconds, 2),
            "activation_seconds": info["activation_seconds"], "calibrated_accuracy": calibrated.get("val_accuracy"),
            "start_val_accuracy": info["start_val_accuracy"], "start_val_loss": info["start_val_loss"],
            "kept_val_loss": min([info["start_val_loss"]] + [r["val_loss"] for r in history]),
            "calibration_kept": calibrated.get("kept"), "calibrated_val_loss": calibrated.get("val_loss"),
            "warmup_steps": int(info["warmup_steps"]),
            "steps": info["steps"]}


def _finetune_full(cfg, n_classes: int, splits: dict, head, head_acc: float) -> dict:
    """The full-image path (`--finetune-full`) from the same head: every epoch sends every training image, freshly
    augmented, through the whole backbone."""
    from core.training.stages import finetune_full

    info, history, seconds = _from_head(cfg, n_classes, head, lambda start, reporter: finetune_full(
        cfg, n_classes, splits, start, reporter)[2])
    return {"val_accuracy": _kept_accuracy(info, history, head_acc), "kept_start": info["kept_start"],
            "kept_epoch": info["kept_epoch"], "epochs": len(history), "seconds": round(seconds, 2),
            "activation_seconds": 0.0, "start_val_accuracy": info["start_val_accuracy"],
            "start_val_loss": info["start_val_loss"]}


def one_split(data: Path, seed: int, configs: list[str], settings: dict, head_aug: bool) -> dict:
    from sklearn.linear_model import LogisticRegression

    from core.augment import PRESETS, AugmentConfig
    from core.config import TrainConfig
    from core.datasets import scan_dataset
    from core.features import extract_features
    from core.reporting import Reporter
    from core.training.data import split_data
    from core.training.finetune_cached import PREVIOUS_RECIPE, FinetuneRecipe
    from core.training.stages import train_bottleneck_head
    from core.workspace import features_dir

    cfg = TrainConfig(data=str(data), mode="finetune", seed=seed, **settings)
    # Per config: the recipe, and the run settings it changes. The older configs keep the settings of their day
    # (the recipe's augmentation, peak lr 1e-4); K = epochs bar one: a fresh version of each photo per epoch;
    # "natural": the milder preset and a 10x larger peak step (issue 11's third pass, now the default).
    old = {"finetune_lr": 1e-4, "augment": AugmentConfig()}
    one_per_epoch = {"augment_copies": cfg.finetune_epochs - 1}
    natural = one_per_epoch | {"finetune_lr": 1e-3, "augment": PRESETS["natural"].config()}
    recipes = {"before": (PREVIOUS_RECIPE, old), "after": (FinetuneRecipe(), old),
               "schedule": (FinetuneRecipe(calibrate_head=False), old),
               "calibrate": (FinetuneRecipe(schedule="constant"), old),
               "after+1": (FinetuneRecipe(extra_blocks=1), old),
               "after-k9": (FinetuneRecipe(), old | one_per_epoch),
               "natural-k9": (FinetuneRecipe(), natural), "natural-k9+1": (FinetuneRecipe(extra_blocks=1), natural)}
    ds = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed)
    splits = split_data(ds)
    n_classes = len(ds.classes)
    row: dict = {"seed": seed, "n_train": len(splits["train"]), "n_val": len(splits["val"])}
    with open(os.devnull, "w") as quiet:
        started = time.perf_counter()
        head = train_bottleneck_head(cfg, n_classes, splits, Reporter(terminal=quiet))
        row["head_seconds"] = round(time.perf_counter() - started, 2)
    y_val = splits["val"].y
    row["head"] = _accuracy(head.probs["val"], y_val)

    feats = {s: extract_features(splits[s].paths, cfg.backbone, features_dir()).features for s in ("train", "val")}
    logreg = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced" if cfg.class_weights == "balanced"
                                else None).fit(feats["train"], splits["train"].y)
    row["logreg"] = round(float((logreg.predict(feats["val"]) == y_val).mean()), 5)

    if head_aug:
        aug_cfg = TrainConfig(data=str(data), mode="bottleneck", seed=seed, augment_copies=4, **settings)
        with open(os.devnull, "w") as quiet:
            started = time.perf_counter()
            aug = train_bottleneck_head(aug_cfg, n_classes, split_data(ds), Reporter(terminal=quiet))
        row["head_aug"] = _accuracy(aug.probs["val"], y_val)
        row["head_aug_seconds"] = round(time.perf_counter() - started, 2)
        row["head_aug_extracted"] = aug.times.n_extracted

    for name in configs:
        if name == "full":
            row[name] = _finetune_full(cfg, n_classes, splits, head.head, row["head"])
            continue
        recipe, changes = recipes[name]
        row[name] = _finetune(replace(cfg, **changes), n_classes, splits, head.head, row["head"], recipe)
        if name == "after":
            row["calibrated"] = row[name]["calibrated_accuracy"]
    return row


# ----------------------------------------------------------------------------------------------- report

def _acc(row: dict, key: str) -> float | None:
    value = row.get(key)
    return value["val_accuracy"] if isinstance(value, dict) else value


def _fmt(value: float, digits: int) -> str:
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.0" for a rounding error below the digits


def _mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{_fmt(statistics.mean(values), digits)} ± {_fmt(sd, digits)} "
            f"({_fmt(min(values), digits)}–{_fmt(max(values), digits)})")


def report(name: str, rows: list[dict], keys: list[str]) -> str:
    n_val = sorted({r["n_val"] for r in rows})
    out = []
    for key in keys:
        accs = [_acc(r, key) for r in rows]
        if all(a is None for a in accs):
            continue
        diffs = [(a - r["head"]) * 100 for a, r in zip(accs, rows) if a is not None]
        # Training only: the first fine-tune of a split also computes (or reads) the activations.
        seconds = [r[key]["seconds"] - r[key]["activation_seconds"] for r in rows if isinstance(r.get(key), dict)]
        if key == "head":
            seconds = [r["head_seconds"] for r in rows]
        elif key == "head_aug":
            seconds = [r["head_aug_seconds"] for r in rows]
        kept = [r[key]["kept_start"] for r in rows if isinstance(r.get(key), dict)]
        out.append([LABELS[key], _mean_sd(accs), "—" if key == "head" else _mean_sd(diffs, 1),
                    f"{sum(kept)} of {len(kept)}" if kept else "—",
                    f"{statistics.mean(seconds):.1f}" if seconds else "—"])
    header = (f"Dataset: {name}; seeds {[r['seed'] for r in rows]}; validation photos per seed {n_val}, training "
              f"photos {sorted({r['n_train'] for r in rows})}.")
    return header + "\n\n" + table(["system", "val accuracy mean ± sd (min–max)", "vs head, points (paired)",
                                    "kept the head", "training s (mean)"], out)


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, short training", worker=False)
    parser.add_argument("data", nargs="*", type=Path, help="datasets (default: demo, tuxpaint-stamps, Fashion-MNIST)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=DEFAULT_CONFIGS)
    parser.add_argument("--no-head-aug", action="store_true", help="skip the bottleneck head on K=4 copies")
    parser.add_argument("--dev", action="store_true", help="the development subsample of Fashion-MNIST only")
    parser.add_argument("--digits", action="store_true",
                        help="add scikit-learn's 8x8 digits (20 per class, 200 photos) to the default datasets")
    parser.add_argument("--only-digits", action="store_true", help="scikit-learn's digits only")
    parser.add_argument("--workspace", type=Path, help="keep the feature and activation caches here (reused)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-gain-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path) -> None:
    os.environ["FEWSHOT_WORKSPACE"] = str(args.workspace or tmp / "workspace")
    settings: dict = {}
    data_root = Path(tempfile.gettempdir())
    if args.tiny:
        datasets = [make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)]
        args.seeds, settings = [0], {"epochs": 2, "finetune_epochs": 2}
        args.configs, args.no_head_aug = ["before", "after"], True
    elif args.dev:
        datasets = [fashion_mnist(data_root / "fewshot-bench-fmnist-dev", "train", [0, 1, 2, 3, 4], 30)]
    elif args.only_digits:
        datasets = [sklearn_digits(data_root / "fewshot-bench-digits", 20)]
    elif args.data:
        datasets = args.data
    else:
        datasets = [DEMO] + ([TUXPAINT] if TUXPAINT.is_dir() else [])
        try:
            datasets.append(fashion_mnist(data_root / "fewshot-bench-fmnist", "t10k", [5, 6, 7, 8, 9], 40))
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            print(f"Fashion-MNIST left out: {exc}", file=sys.stderr)
        if args.digits:
            datasets.append(sklearn_digits(data_root / "fewshot-bench-digits", 20))
    print(machine_line(), flush=True)
    keys = ["logreg", "head", *([] if args.no_head_aug else ["head_aug"]),
            *(["calibrated"] if "after" in args.configs else []), *args.configs]
    results = {}
    for data in datasets:
        data = Path(data).resolve()
        rows = []
        for seed in args.seeds:
            started = time.perf_counter()
            rows.append(one_split(data, seed, args.configs, settings, not args.no_head_aug))
            print(f"  {data.name} seed {seed} ({time.perf_counter() - started:.0f} s): " + "; ".join(
                f"{k} {_acc(rows[-1], k):.3f}" for k in keys if _acc(rows[-1], k) is not None),
                file=sys.stderr, flush=True)
        results[data.name] = rows
        print_section(f"Fine-tune gain: {data.name}", report(data.name, rows, keys))
    summary = []
    for name, rows in results.items():
        line = [name, sum(r["n_val"] for r in rows)]
        for key in SUMMARY:
            diffs = [(_acc(r, key) - r["head"]) * 100 for r in rows if r.get(key)]
            line.append(f"{round(statistics.mean(diffs), 1) + 0.0:+.1f} (min {round(min(diffs), 1) + 0.0:+.1f})"
                        if diffs else "—")
        line.append(f"{round(statistics.mean([(r['head'] - r['logreg']) * 100 for r in rows]), 1) + 0.0:+.1f}")
        summary.append(line)
    print_section("Fine-tune gain: summary (points of validation accuracy, mean over seeds, paired by seed)",
                  machine_line() + "\n\n" + table(
                      ["dataset", "validation photos (all seeds)", *SUMMARY.values(), "head − logistic regression"],
                      summary))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
