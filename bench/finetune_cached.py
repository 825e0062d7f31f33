"""Stretch of issue item 4: fine-tune the top block on cached activations of the frozen lower part.

`finetune` sends every training image, freshly augmented, through the whole backbone every epoch, although only
the top block (and the head) learn. Here the frozen lower part runs once per image and augmented copy (K copies,
as `bottleneck` with augmented copies does); its output (7×7×192 for Lite0) is kept in memory, and the top block
+ head train on it, each epoch drawing one of the K+1 versions of each image. Same start (the bottleneck head),
optimiser (SGD, the run's fine-tune learning rate, momentum 0.9), epochs, class weights and BatchNorm in inference
mode as `finetune`; best-validation-loss weights kept, as with early stopping.

Compared side by side, per seed (a different train/validation split each), with the app's own `finetune` run
(through `core.engine.execute_run`, in a fresh process): validation accuracy, and the time of the fine-tuning
stage (`finetune` phase of the run vs caching the activations + training on them).

    .venv/bin/python -m bench.finetune_cached [DATASET] [--copies 5] [--seeds 0 1 2] [--tiny]
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import (
    DEMO,
    TUXPAINT,
    Timer,
    bench_parser,
    machine_line,
    make_tiny_dataset,
    print_section,
    run_worker,
    serve_worker,
    spread,
    table,
)

MODULE = "bench.finetune_cached"  # workers run this module again in a fresh process
TRAIN_MODULE = "bench.train"


def worker(payload: dict) -> dict:
    from core.augment import build_augmenter
    from core.backbones import build_feature_extractor, get_backbone, set_top_block_trainable
    from core.config import TrainConfig
    from core.datasets import scan_dataset
    from core.features import extract_features, image_dataset
    from core.models import build_head, loss_for
    from core.tfenv import keras, tf
    from core.training.data import class_weights
    from core.training.head import HeadFitConfig, fit_head

    cfg = TrainConfig(data=payload["data"], mode="finetune", seed=payload["seed"], **payload.get("config", {}))
    spec = get_backbone(cfg.backbone)
    ds = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed)
    train, val = ds.split("train"), ds.split("val")
    y_train = np.array([ds.label_index(it.label) for it in train])
    y_val = np.array([ds.label_index(it.label) for it in val])
    n_classes = len(ds.classes)
    weights = class_weights(y_train, n_classes) if cfg.class_weights == "balanced" else None
    times = {}

    # 1. The bottleneck head, as `finetune` starts (features from a scratch cache, so computed here).
    with Timer() as t:
        feats = extract_features([it.path for it in train + val], cfg.backbone, Path(payload["cache"])).features
        keras.utils.set_random_seed(cfg.seed)
        head = build_head(spec.feature_dim, n_classes, cfg.dense_units, cfg.dropout)
        fit_head(head, feats[:len(train)], y_train, feats[len(train):], y_val,
                 HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience if cfg.early_stopping else None,
                               cfg.seed), weights)
    times["bottleneck head"] = t.seconds

    # 2. Split the backbone where the top block starts: lower (frozen, run once) and top (trained).
    with Timer() as t:
        extractor = build_feature_extractor(cfg.backbone)
        first = next(i for i, layer in enumerate(extractor.layers) if layer.name.startswith(spec.top_block))
        lower = keras.Model(extractor.inputs, extractor.layers[first].input, name="lower")
        x = inputs = keras.Input(lower.output.shape[1:], name="activations")
        for layer in extractor.layers[first:]:
            if isinstance(layer, keras.layers.Add):
                raise RuntimeError(f"{layer.name}: the top part is not a plain chain")
            x = layer(x)
        top = keras.Model(inputs, x, name="top")
        n_trainable = set_top_block_trainable(top, cfg.backbone)
        forward = tf.function(lambda b: lower(b, training=False))

        def activations(paths, augmenter=None) -> np.ndarray:
            out = []
            for batch, _ in image_dataset(paths, spec.input_size, 32):
                if augmenter is not None:
                    batch = augmenter(batch, training=True)
                out.append(forward(batch).numpy())
            return np.concatenate(out)

        # 3. Cache: the original and K augmented copies of each training image (seeded per copy, like the
        # feature cache's copies), and the validation images.
        train_paths = [it.path for it in train]
        copies = [activations(train_paths)]
        for copy in range(1, payload["copies"] + 1):
            copies.append(activations(train_paths, build_augmenter(cfg.augment, seed=copy)))
        acts = np.stack(copies)  # (K+1, N, h, w, c)
        acts_val = activations([it.path for it in val])
    times["cache activations"] = t.seconds

    # 4. Top block + head, from the bottleneck head; each epoch one random version of each image.
    with Timer() as t:
        act_in = keras.Input(acts.shape[2:])
        model = keras.Model(act_in, head(top(act_in, training=False)))
        model.compile(optimizer=keras.optimizers.SGD(cfg.finetune_lr, momentum=0.9), loss=loss_for(n_classes),
                      metrics=["accuracy"])
        target = (lambda y: y.astype(np.float32)) if n_classes == 2 else (lambda y: y)
        rng = np.random.default_rng(cfg.seed)
        best, best_weights = np.inf, model.get_weights()
        for _ in range(cfg.finetune_epochs):
            pick = rng.integers(0, len(acts), len(y_train))
            model.fit(acts[pick, np.arange(len(y_train))], target(y_train), batch_size=cfg.batch_size, epochs=1,
                      class_weight=weights, verbose=0, shuffle=True)
            val_loss = model.evaluate(acts_val, target(y_val), verbose=0, return_dict=True)["loss"]
            if val_loss < best:
                best, best_weights = val_loss, model.get_weights()
        model.set_weights(best_weights)
        probs = model.predict(acts_val, verbose=0)
    times["train top + head"] = t.seconds
    predicted = (probs[:, 0] > 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(1)
    return {"val_accuracy": round(float((predicted == y_val).mean()), 4),  # rounded like metrics.json's
            "times": times, "n_trainable": n_trainable, "activation_mib": acts.nbytes / 2**20}


def main() -> None:
    parser = bench_parser(__doc__, "a few generated images, short training")
    parser.add_argument("data", nargs="?", type=Path, help="dataset (default: tuxpaint-stamps, else the demo)")
    parser.add_argument("--copies", type=int, default=5, help="K augmented copies cached per training image")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    if serve_worker(args, worker):
        return
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-ftcached-"))
    config: dict = {}
    try:
        if args.tiny:
            args.data = make_tiny_dataset(tmp / "tiny", classes=2, per_class=6)
            args.copies, args.seeds, config = 1, [0], {"epochs": 2, "finetune_epochs": 1}
        data = (args.data or (TUXPAINT if TUXPAINT.is_dir() else DEMO)).resolve()
        rows = []
        for seed in args.seeds:
            full = run_worker(TRAIN_MODULE, {"jobs": [{
                "workspace": str(tmp / f"ws-full-{seed}"), "data": str(data), "mode": "finetune",
                "name": f"full-{seed}", "config": {**config, "seed": seed}}]})["jobs"][0]
            started = time.perf_counter()
            cached = run_worker(MODULE, {"data": str(data), "seed": seed, "copies": args.copies, "config": config,
                                         "cache": str(tmp / f"cache-{seed}")})
            cached["wall"] = time.perf_counter() - started
            rows.append({"seed": seed, "full": full, "cached": cached})
            print(f"  seed {seed}: full {full['val_accuracy']} in {full['phases'].get('finetune')} s; cached "
                  f"{cached['val_accuracy']} in {cached['times']}", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        full_stage = [r["full"]["phases"].get("finetune", 0) for r in rows]
        cached_stage = [r["cached"]["times"]["cache activations"] + r["cached"]["times"]["train top + head"]
                        for r in rows]
        out = [["finetune (the app's mode)", spread([r["full"]["val_accuracy"] for r in rows], 3), "—",
                spread(full_stage, 1), "—"],
               [f"top block on cached activations, K={args.copies}",
                spread([r["cached"]["val_accuracy"] for r in rows], 3),
                spread([r["cached"]["val_accuracy"] - r["full"]["val_accuracy"] for r in rows], 3),
                spread(cached_stage, 1),
                spread([f / c for f, c in zip(full_stage, cached_stage)], 2, "×")]]
        detail = ", ".join(f"{k} {spread([r['cached']['times'][k] for r in rows], 1)} s"
                           for k in rows[0]["cached"]["times"])
        print_section("Fine-tuning on cached activations (stretch)", machine_line() + (
            f"\n\nDataset: {data.name}; seeds {args.seeds}. Fine-tuning stage time: `finetune`'s fine-tune "
            f"phase (its epochs, validation included) vs caching the lower part's activations (original + K "
            f"copies + validation) and training on them. Cached run, all steps: {detail}; activations kept: "
            f"{spread([r['cached']['activation_mib'] for r in rows], 0)} MiB.\n\n") + table(
                ["configuration", "val accuracy", "vs finetune (paired)", "fine-tuning stage s",
                 "faster than finetune"], out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
