"""Train one run: scan, the mode's stages, predictions and metrics, written into the run folder through `Run`."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import TrainConfig
from core.datasets import content_key, scan_dataset
from core.evaluate import compute_metrics, predictions_frame
from core.export import save_model
from core.features import StopRequested, cached_extractor
from core.models import build_export_model, build_image_classifier
from core.reporting import Reporter
from core.runs import Run
from core.tfenv import keras
from core.training.data import predict_images, split_data
from core.training.stages import StageTimes, finetune, load_head_from_run, train_bottleneck_head, train_scratch


@dataclass
class TrainResult:
    metrics: dict
    # True when model.keras is left for `write_model_file`: the trained part of a bottleneck run is its head,
    # saved with the predictions before the run is reported done, so the user sees a retrain's results without
    # waiting for the ~1.5 s it takes to build and save the whole backbone into model.keras.
    model_pending: bool


def train(cfg: TrainConfig, run: Run, reporter: Reporter) -> TrainResult:
    """Train per `cfg`, writing split, predictions, metrics, labels, head weights and (unless `model_pending`)
    model.keras into the run folder."""
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    reporter.phase("scanning", "reading the dataset")
    ds = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed)
    for skipped in ds.skipped:
        reporter.log(f"skipped {skipped.path}: {skipped.reason}")
    splits = split_data(ds)
    run.write_split({
        "root": str(ds.root), "layout": ds.layout, "classes": ds.classes,
        "items": [{"path": str(it.path), "label": it.label, "split": it.split} for it in ds.items],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in ds.skipped]})
    n_classes = len(ds.classes)
    size = cfg.input_size()
    times = StageTimes()

    probs: dict[str, np.ndarray] = {}
    head = None
    body = None  # the trained image model; None while only the head was trained (the backbone stays frozen)
    finetune_info = None  # which fine-tune path ran, and what its activation cache did
    if cfg.mode == "scratch":
        body, stage_times = train_scratch(cfg, n_classes, splits, reporter)
        times += stage_times
    else:
        if cfg.mode == "finetune" and cfg.from_run:
            head = load_head_from_run(cfg.from_run, cfg, ds.classes)
        else:
            result = train_bottleneck_head(cfg, n_classes, splits, reporter)
            head, probs, times = result.head, result.probs, times + result.times
        if cfg.mode == "finetune" and not reporter.should_stop() and cfg.finetune_epochs:
            with run.writing(Run.BOTTLENECK_HEAD) as tmp:
                head.save_weights(tmp)
            body, stage_times, finetune_info = finetune(cfg, n_classes, splits, head, reporter)
            times += stage_times
            if finetune_info.get("kept_start"):
                # No fine-tune epoch beat the head it started from: the run's model is that head on the frozen
                # backbone (restored in place), with the head's own predictions, exactly as a bottleneck run's.
                body = None
                run.bottleneck_head_path.unlink(missing_ok=True)
            else:
                probs = {}
    if reporter.should_stop() and not reporter.history:
        raise StopRequested()

    reporter.phase("evaluating", "predicting the validation and test images")
    for s in ("val", "test"):
        if s not in probs:
            if body is None:  # a head loaded --from another run: predict through the frozen backbone
                body = build_image_classifier(cached_extractor(cfg.backbone)[0], head)
            probs[s] = predict_images(body, splits[s].paths, size) if len(splits[s]) else np.zeros((0, 1))
    frames = [predictions_frame(splits[s].paths, splits[s].y, probs[s], ds.classes, s)
              for s in ("val", "test") if len(splits[s])]
    if frames:
        frame = pd.concat(frames)
        # The photo's identity across runs (a relabel moves and may rename the file): before/after of a retrain
        # are compared on the same photos by it (core.retraining). Memoised, and the split already read them.
        frame["content"] = [content_key(Path(p)) for p in frame["path"]]
        run.write_predictions(frame)
    val_metrics = compute_metrics(splits["val"].y, probs["val"], ds.classes)
    test_metrics = compute_metrics(splits["test"].y, probs["test"], ds.classes) if len(splits["test"]) else None

    reporter.phase("saving", "saving the model")
    model_pending = body is None
    if not model_pending:
        save_model(build_export_model(body, size, n_classes), run.model_path)
    run.write_labels(ds.classes)
    if head is not None:
        with run.writing(Run.HEAD) as tmp:
            head.save_weights(tmp)
    saved = saved_model_summary(cfg, reporter.history, finetune_info, val_metrics["accuracy"], len(splits["val"]))
    metrics = {
        "mode": cfg.mode, "backbone": None if cfg.mode == "scratch" else cfg.backbone, "classes": ds.classes,
        "input_size": size,
        "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
        "n_skipped": len(ds.skipped),
        "val_accuracy": val_metrics["accuracy"], "test_accuracy": test_metrics["accuracy"] if test_metrics else None,
        "val_loss": saved["val_loss"], "best_epoch": saved["epoch"], "saved_model": saved,
        "epochs_run": len(reporter.history),
        "per_class": val_metrics["per_class"], "confusion": val_metrics["confusion"],
        "test": test_metrics,
        "train_seconds": round(times.train_seconds, 3), "extract_seconds": round(times.extract_seconds, 3),
        "n_extracted": times.n_extracted, "finetune": finetune_info,
        "total_seconds": round(time.perf_counter() - t0, 3),
        "export_check": None, "stopped_early_by_user": reporter.should_stop(),
        "phase_seconds": reporter.finish(),
    }
    run.write_metrics(metrics)  # last: a run folder with metrics.json has all its results
    return TrainResult(metrics, model_pending)


def _monitored(row: dict) -> float:
    value = row["val_loss"] if row.get("val_loss") is not None else row["loss"]
    return value if value is not None and math.isfinite(value) else math.inf


def saved_model_summary(cfg: TrainConfig, history: list[dict], finetune_info: dict | None, val_accuracy: float | None,
                        n_val: int) -> dict:
    """What metrics.json says about the model the run saved: the stage and epoch it came from, that epoch's
    validation loss, its validation accuracy (measured on `n_val` photos) and why it was kept.

    Every stage keeps its lowest-validation-loss epoch (training loss without validation photos), except an image
    model trained without early stopping, which keeps its last. A fine-tune counts its start as epoch 0: when
    no fine-tune epoch beats it, the model is the bottleneck head's."""
    stage = "scratch" if cfg.mode == "scratch" else "bottleneck"
    why = "lowest validation loss" if n_val else "lowest training loss (no validation photos)"
    if finetune_info is not None:
        if finetune_info.get("kept_start"):
            why = (f"no fine-tune epoch beat the starting head's validation loss "
                   f"({finetune_info.get('start_val_loss')}), so the head was kept")
        else:
            stage = "finetune"
            if finetune_info.get("path") == "full" and not cfg.early_stopping:
                why = "the last epoch (early stopping off)"
    rows = [r for r in history if r.get("stage") == stage]
    kept = None
    if finetune_info is not None and stage == "finetune" and finetune_info.get("kept_epoch"):
        kept = next((r for r in rows if r["epoch"] == finetune_info["kept_epoch"]), None)
    elif rows:
        last_only = stage != "bottleneck" and not (cfg.early_stopping and len(rows) > 1)
        kept = rows[-1] if last_only else min(rows, key=_monitored)
        if last_only:
            why = "the last epoch (early stopping off)"
    summary = {"stage": stage, "epoch": kept["epoch"] if kept else None,
               "val_loss": kept.get("val_loss") if kept else None, "val_accuracy": val_accuracy, "n_val": n_val,
               "why": why}
    if kept is None and finetune_info is not None and finetune_info.get("kept_start"):
        # A fine-tune from another run's head that kept it: the start is all there is to describe.
        summary |= {"stage": "head from --from run", "epoch": 0, "val_loss": finetune_info.get("start_val_loss")}
    return summary

