"""Issue 10 item 4: the fine-tune's training on cached activations in mixed bfloat16 vs float32, side by side.

Per dataset and seed (a different train/validation split each), in one process: the bottleneck head is trained
once, then the fine-tune on cached activations (`core.training.finetune_cached`, the app's default recipe) runs
twice from that same head, with the same seed, epochs and batches: once in float32 and once with its training
steps in mixed bfloat16 (`FinetuneRecipe(bf16=True)`); the order alternates from seed to seed. The first of the
two computes the activations (cold), the second reads them from the cache; both times are reported apart from
the training, which is what is compared (each fine-tune runs `--repeats` times, alternating, for its time):

    epochs s     the fine-tune's epochs (training steps + float32 validation after each), from its history
    an epoch     the median epoch after the first (the first also traces and optimises the epoch's graph)
    training s   all of `fit_top`: the start's validation, the head's calibration (NumPy, float32 on both), epochs

The kept model (float32 variables either way, as saved to model.keras) then predicts the validation photos from
the images: its accuracy and loss, and the largest difference of any predicted probability between the two
paths; and, epoch by epoch, the largest difference of the two trainings' validation losses (each epoch's weights,
kept or not: where both keep the start, the kept models are the same). A matmul 2048³ through TF (2 threads,
best of 5) in float32 and bfloat16 gives the CPU's own ratio.

    .venv/bin/python -m bench.bf16 [DATASET ...] [--seeds 0 1 2] [--epochs N] [--tiny]
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

from bench.common import DEMO, TUXPAINT, bench_parser, machine_line, make_tiny_dataset, print_section, spread, table

PRECISIONS = ("float32", "bf16")


def matmul_rates(n: int = 2048) -> dict[str, float]:
    """GFLOP/s of an n³ matmul through TF (this process's threads), best of 5, float32 and bfloat16."""
    from core.tfenv import tf

    a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
    rates = {}
    for name, dtype in (("float32", tf.float32), ("bf16", tf.bfloat16)):
        x, y = tf.cast(a, dtype), tf.cast(b, dtype)
        tf.linalg.matmul(x, y).numpy()  # warm-up
        best = np.inf
        for _ in range(5):
            started = time.perf_counter()
            tf.linalg.matmul(x, y).numpy()
            best = min(best, time.perf_counter() - started)
        rates[name] = 2 * n**3 / best / 1e9
    return rates


def _val_scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of predicted probabilities, unweighted like the fine-tune's val_loss."""
    from core.evaluate import two_column

    p = two_column(probs)
    accuracy = float((p.argmax(1) == y).mean())
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)).mean())
    return accuracy, loss


def one_split(data: Path, seed: int, settings: dict, repeats: int) -> dict:
    from core.backbones import get_backbone
    from core.config import TrainConfig
    from core.datasets import scan_dataset
    from core.models import build_head
    from core.reporting import Reporter
    from core.tfenv import keras
    from core.training.data import predict_images, split_data
    from core.training.finetune_cached import FinetuneRecipe, finetune_on_activations
    from core.training.stages import train_bottleneck_head

    cfg = TrainConfig(data=str(data), mode="finetune", seed=seed, **settings)
    ds = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed)
    splits = split_data(ds)
    n_classes = len(ds.classes)
    spec = get_backbone(cfg.backbone)
    with open(os.devnull, "w") as quiet:
        head = train_bottleneck_head(cfg, n_classes, splits, Reporter(terminal=quiet)).head
    row: dict = {"seed": seed, "n_train": len(splits["train"]), "n_val": len(splits["val"])}
    for rep in range(repeats):
        # Alternate which path goes first (and, in the first round, pays the cold activation cache).
        order = PRECISIONS if (seed + rep) % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            keras.utils.set_random_seed(seed)  # the same dropout masks and batch order for both
            start = build_head(spec.feature_dim, n_classes, cfg.dense_units, cfg.dropout)
            start.set_weights(head.get_weights())
            with open(os.devnull, "w") as quiet:
                reporter = Reporter(terminal=quiet)
                result = finetune_on_activations(cfg, n_classes, splits, start, reporter,
                                                 FinetuneRecipe(bf16=precision == "bf16"))
            epochs = [r for r in reporter.history if r["stage"] == "finetune"]
            seconds = [r["seconds"] for r in epochs]
            times = {"training_seconds": round(result.train_seconds, 3), "epochs_seconds": round(sum(seconds), 3),
                     # an epoch once its graph is traced (the first one also traces and optimises it)
                     "steady_epoch_seconds": float(np.median(seconds[1:] or seconds)), "epoch_seconds": seconds}
            if rep:  # a repeat only times the same fine-tune again (same seed: same epochs, same model)
                row[precision]["repeats"].append(times)
                continue
            probs = predict_images(result.classifier, splits["val"].paths, spec.input_size)
            accuracy, loss = _val_scores(probs, splits["val"].y)
            row[precision] = {"precision": result.info["precision"], "first": precision == order[0],
                              "activation_seconds": round(result.activation_seconds, 3), **times,
                              "epochs": len(epochs), "kept_epoch": result.info["kept_epoch"],
                              "val_accuracy": accuracy, "val_loss": loss, "probs": probs.tolist(), "repeats": [],
                              "epoch_val_loss": [r["val_loss"] for r in epochs],
                              "epoch_val_accuracy": [r["val_accuracy"] for r in epochs]}
    for precision in PRECISIONS:  # the time compared: the median over the repeats of this seed
        runs = [row[precision], *row[precision]["repeats"]]
        for key in ("training_seconds", "epochs_seconds", "steady_epoch_seconds"):
            row[precision][f"median_{key}"] = float(np.median([r[key] for r in runs]))
    a, b = (np.asarray(row[p]["probs"]) for p in PRECISIONS)
    row["max_prob_diff"] = float(np.abs(a - b).max())
    # Epoch by epoch (float32 validation of each epoch's weights, kept or not): how far the two trainings drift.
    pairs = list(zip(row["float32"]["epoch_val_loss"], row["bf16"]["epoch_val_loss"]))
    row["max_epoch_val_loss_diff"] = max((abs(a - b) for a, b in pairs), default=0.0)
    row["same_predictions"] = int((a.argmax(1) == b.argmax(1)).sum()) if a.shape[1] > 1 else \
        int(((a[:, 0] > 0.5) == (b[:, 0] > 0.5)).sum())
    return row


def report(rows: list[dict]) -> str:
    def of(key: str, precision: str) -> list[float]:
        return [r[precision][key] for r in rows]

    out = []
    for precision in PRECISIONS:
        f32 = precision == "float32"
        out.append([precision if f32 else "mixed bfloat16 (training steps)",
                    spread(of("median_epochs_seconds", precision), 1),
                    "—" if f32 else spread([a / b for a, b in zip(of("median_epochs_seconds", "float32"),
                                                                   of("median_epochs_seconds", "bf16"))], 2, "×"),
                    spread(of("median_steady_epoch_seconds", precision), 2),
                    "—" if f32 else spread([a / b for a, b in zip(of("median_steady_epoch_seconds", "float32"),
                                                                   of("median_steady_epoch_seconds", "bf16"))], 2, "×"),
                    spread(of("median_training_seconds", precision), 1),
                    "—" if f32 else spread([a / b for a, b in zip(of("median_training_seconds", "float32"),
                                                                   of("median_training_seconds", "bf16"))], 2, "×"),
                    " / ".join(f"{e} ({k})" for e, k in zip(of("epochs", precision), of("kept_epoch", precision))),
                    " / ".join(f"{a:.3f}" for a in of("val_accuracy", precision)),
                    " / ".join(f"{v:.4f}" for v in of("val_loss", precision)),
                    "—" if f32 else " / ".join(f"{r['max_prob_diff']:.1e}" for r in rows),
                    "—" if f32 else " / ".join(f"{r['same_predictions']}/{r['n_val']}" for r in rows),
                    "—" if f32 else " / ".join(f"{r['max_epoch_val_loss_diff']:.1e}" for r in rows)])
    cold = [r[p]["activation_seconds"] for r in rows for p in PRECISIONS if r[p]["first"]]
    warm = [r[p]["activation_seconds"] for r in rows for p in PRECISIONS if not r[p]["first"]]
    repeats = 1 + len(rows[0]["float32"]["repeats"])
    return (f"Seeds {[r['seed'] for r in rows]}, each fine-tune timed {repeats}× (median per seed, paired by "
            f"seed); validation photos {[r['n_val'] for r in rows]}, training photos "
            f"{[r['n_train'] for r in rows]}. Activation caching (not in the times below): cold "
            f"{spread(cold, 1)} s, read back {spread(warm, 1)} s.\n\n") + table(
        ["fine-tune", "epochs s", "float32 / bf16 (paired)", "an epoch after the first, s", "float32 / bf16",
         "training s", "float32 / bf16 (paired)",
         "epochs run (kept)", "val accuracy (per seed)", "val loss (per seed)", "largest prob. difference",
         "same predicted class", "largest val-loss difference, any epoch"], out)


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, one seed, 2 epochs", worker=False)
    parser.add_argument("data", nargs="*", type=Path, help="datasets (default: the demo and tuxpaint-stamps)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="fine-tune epochs (default: the app's)")
    parser.add_argument("--repeats", type=int, default=2, help="times each fine-tune is run (timing only)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-bf16-"))
    os.environ["FEWSHOT_WORKSPACE"] = str(tmp / "workspace")
    settings: dict = {} if args.epochs is None else {"finetune_epochs": args.epochs}
    try:
        if args.tiny:
            datasets = [make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)]
            args.seeds, args.repeats = [0], 1
            settings = {"epochs": 2, "finetune_epochs": 2, "augment_copies": 1}
        else:
            datasets = args.data or [DEMO] + ([TUXPAINT] if TUXPAINT.is_dir() else [])
        rates = matmul_rates(256 if args.tiny else 2048)
        machine = machine_line()
        print(machine + f"\nmatmul through TF: float32 {rates['float32']:.0f} GFLOP/s, bfloat16 "
                        f"{rates['bf16']:.0f} GFLOP/s ({rates['bf16'] / rates['float32']:.2f}×)", flush=True)
        results = {}
        for data in datasets:
            data = Path(data).resolve()
            rows = []
            for seed in args.seeds:
                started = time.perf_counter()
                rows.append(one_split(data, seed, settings, args.repeats))
                r = rows[-1]
                print(f"  {data.name} seed {seed} ({time.perf_counter() - started:.0f} s): epochs float32 "
                      f"{r['float32']['median_epochs_seconds']:.1f} s, bf16 "
                      f"{r['bf16']['median_epochs_seconds']:.1f} s; accuracy "
                      f"{r['float32']['val_accuracy']:.3f} / {r['bf16']['val_accuracy']:.3f}; largest probability "
                      f"difference {r['max_prob_diff']:.1e}", file=sys.stderr, flush=True)
            results[data.name] = rows
            print_section(f"bfloat16 fine-tuning: {data.name}", report(rows))
        print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "matmul_gflops": rates, "results": results},
                                            indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
