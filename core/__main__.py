"""Command line: the same code path as the app.

    python -m core train DATA --mode bottleneck --out RUN_DIR
    python -m core predict RUN_DIR PATH...        → CSV: path,label,confidence
    python -m core evaluate RUN_DIR DATA          → JSON: accuracy, per_class, confusion, classes
    python -m core export RUN_DIR [--format F]    → RUN_DIR/model.tflite (F: tflite, tflite-int8, onnx, web), + its
                                                  check (web: RUN_DIR/model.html, a page that runs it offline)
    python -m core export RUN_DIR --model-file    → RUN_DIR/model.keras written again from the trained head
    python -m core submit DATA [train options] --out RUN_DIR   queue it on the configured executor; returns at once
    python -m core wait RUN_DIR...                → one JSON line per run: state, started_at, finished_at, node
    python -m core --ray ADDRESS submit ...       (or FEWSHOT_RAY_ADDRESS=ADDRESS): execute on that Ray cluster
    python -m core --ray ADDRESS extract DATA     cache DATA's features, sharded over the cluster → JSON report
    python -m core run RUN_DIR                    (used by the app: execute a prepared run folder)
    python -m core curve DATA [--shots 1,2,5,10,20] [--draws 5] [--backbone NAME] [--seed N]
                                                  → JSON: validation accuracy against photos per class
    python -m core backbones                      list the feature extractors
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from core.backbones import DEFAULT_BACKBONE
from core.config import MODES, TrainConfig
from core.errors import FewShotError
from core.workspace import DEMO_DATASET

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CliError(FewShotError):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Few-shot image classification by "
                                     "transfer learning (bottleneck features, fine-tuning).")
    parser.add_argument("--ray", metavar="ADDRESS", help="execute submitted runs on this Ray cluster (host:port; "
                        "default: FEWSHOT_RAY_ADDRESS, else the local warm worker)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a classifier on a class-folder dataset (in this process)")
    _add_train_options(train)
    submit = sub.add_parser("submit", help="queue a training on the configured executor and return at once")
    _add_train_options(submit)

    wait = sub.add_parser("wait", help="wait for runs to end; one JSON line per run")
    wait.add_argument("runs", nargs="+", metavar="RUN_DIR")
    wait.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 1)")
    extract = sub.add_parser("extract", help="cache a dataset's features, spread over the Ray cluster's workers")
    extract.add_argument("data", metavar="DATA")
    extract.add_argument("--backbone", default=DEFAULT_BACKBONE)
    extract.add_argument("--workers", type=int, help="extraction actors (default: the cluster's capacity)")
    _add_commands(sub)
    sub.add_parser("backbones", help="list the available feature extractors")
    return parser


def _add_train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("data", nargs="?", default=str(DEMO_DATASET),
                       help="dataset folder or .zip (default: the built-in demo dataset)")
    train.add_argument("--mode", choices=MODES, default="bottleneck")
    train.add_argument("--backbone", default=DEFAULT_BACKBONE)
    train.add_argument("--epochs", type=int, help="epochs (head/scratch; default 30)")
    train.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (default 10)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="learning rate (head/scratch Adam; fine-tuning uses --finetune-lr)")
    train.add_argument("--finetune-lr", type=float)
    train.add_argument("--dropout", type=float)
    train.add_argument("--dense-units", type=int)
    train.add_argument("--val-split", type=float)
    train.add_argument("--test-split", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--patience", type=int)
    train.add_argument("--no-early-stopping", action="store_true")
    train.add_argument("--class-weights", choices=("balanced", "none"))
    train.add_argument("--augment", metavar="FILE.json", help="augmentation settings (as saved by the app)")
    train.add_argument("--augment-copies", type=int, help="bottleneck: cache features of K augmented copies")
    train.add_argument("--finetune-full", action="store_true",
                       help="finetune: every epoch on whole images through the whole backbone (slower) instead of "
                            "the top block on cached activations")
    train.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="finetune: start from this run's head")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to create")


def _add_commands(sub) -> None:
    predict = sub.add_parser("predict", help="predict image files or folders with a trained run")
    predict.add_argument("run", metavar="RUN_DIR")
    predict.add_argument("paths", nargs="+", metavar="PATH")

    evaluate = sub.add_parser("evaluate", help="evaluate a trained run on a labelled dataset")
    evaluate.add_argument("run", metavar="RUN_DIR")
    evaluate.add_argument("data", metavar="DATA")

    from core.export.formats import FORMATS

    export = sub.add_parser("export", help="convert the run's model (TFLite, int8 TFLite, ONNX, a web page) and "
                                           "check the file on the validation photos (or, with --model-file, write "
                                           "model.keras again)")
    export.add_argument("run", metavar="RUN_DIR")
    export.add_argument("--format", choices=list(FORMATS), default="tflite",
                        help="; ".join(f"{f.name}: RUN_DIR/{f.file}" for f in FORMATS.values()))
    export.add_argument("--model-file", action="store_true",
                        help="write model.keras again from the run's trained head (a bottleneck run whose model "
                             "file was not written: a full disk, a killed process)")
    export.add_argument("--check", action="store_true",
                        help="reload model.keras and compare its predictions on the validation photos with the "
                             "run's own (the check done after every run), into metrics.json")

    run = sub.add_parser("run", help="execute a prepared run folder (what the app starts)")
    run.add_argument("run", metavar="RUN_DIR")

    curve = sub.add_parser("curve", help="how many photos do I need? validation accuracy of heads trained on k "
                                         "photos per class (cached features)")
    curve.add_argument("data", nargs="?", default=str(DEMO_DATASET),
                       help="dataset folder or .zip (default: the built-in demo dataset)")
    curve.add_argument("--shots", default="1,2,5,10,20", help="photos per class to try, comma-separated; every "
                       "training photo is always tried last (default 1,2,5,10,20)")
    curve.add_argument("--draws", type=int, default=5, help="random draws of the photos per level (default 5)")
    curve.add_argument("--backbone", default=DEFAULT_BACKBONE)
    curve.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    curve.add_argument("--val-split", type=float, default=0.2,
                       help="validation share of each class (flat layout; the app's split, seed 0; default 0.2)")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from core.augment import AugmentConfig

    values = {"data": str(Path(args.data).expanduser().resolve()), "mode": args.mode, "backbone": args.backbone}
    for name in ("epochs", "finetune_epochs", "batch_size", "lr", "finetune_lr", "dropout", "dense_units",
                 "val_split", "test_split", "seed", "patience", "class_weights", "augment_copies"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.no_early_stopping:
        values["early_stopping"] = False
    if args.finetune_full:
        if args.mode != "finetune":
            raise CliError("--finetune-full only makes sense with --mode finetune.")
        values["finetune_full"] = True
    if args.from_run:
        if args.mode != "finetune":
            raise CliError("--from only makes sense with --mode finetune.")
        values["from_run"] = str(Path(args.from_run).resolve())
    if args.augment:
        try:
            values["augment"] = AugmentConfig.from_json(Path(args.augment).read_text())
        except OSError as exc:
            raise CliError(f"cannot read {args.augment}: {exc.strerror}") from None
    return TrainConfig(**values)


def _new_run(args: argparse.Namespace, pid: int | None = None):
    from core.backbones import get_backbone
    from core.datasets import scan_dataset
    from core.runs import check_finetune_source, create_run

    cfg = _train_config(args)
    if cfg.mode != "scratch":
        get_backbone(cfg.backbone)  # fail before creating anything
    dataset = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed, check_images=False)  # same
    if cfg.from_run:
        check_finetune_source(cfg.from_run, cfg, dataset.classes)  # same: a bad --from makes no run folder
    return create_run(cfg, args.out, pid=pid, executor="in-process" if pid else None)


def cmd_train(args: argparse.Namespace) -> int:
    from core.engine import execute_run

    # In-process: the run records this process from its creation (a kill at any moment leaves it failed).
    run = _new_run(args, pid=os.getpid())
    print(f"run folder: {run.path}", file=sys.stderr)
    status = execute_run(run, terminal=sys.stderr)
    if status.state == "failed":
        raise CliError(status.error or "training failed")
    if status.model_file == "failed":
        raise CliError(f"the results are in {run.path}, but model.keras could not be written: "
                       f"{status.model_error} (then: python -m core export {run.path} --model-file)")
    metrics = run.metrics() or {}
    summary = {k: metrics.get(k) for k in ("val_accuracy", "test_accuracy", "n_train", "n_val", "n_extracted",
                                           "extract_seconds", "train_seconds")}
    print(f"{status.state}: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
    return 0 if status.state == "done" else EXIT_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    from core.engine import submit

    run = submit(_new_run(args))
    print(json.dumps({"run": str(run.path), "executor": run.read_status().executor}))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait until every run has ended (and its model file is written), then one JSON line per run, in order."""
    import time

    from core.runs import get_run

    runs = [get_run(path) for path in args.runs]
    deadline = None if args.timeout is None else time.time() + args.timeout
    while any(run.status().busy for run in runs):
        if deadline is not None and time.time() > deadline:
            break
        time.sleep(0.5)
    worst = 0
    for run in runs:
        status = run.status()
        print(json.dumps({"run": str(run.path), "state": status.state, "started_at": status.started_at,
                          "finished_at": status.finished_at, "node": status.node, "executor": status.executor,
                          "error": status.error}), flush=True)
        if status.state != "done":
            worst = EXIT_FAILED
    return worst


def cmd_extract(args: argparse.Namespace) -> int:
    from core.datasets import iter_image_files
    from core.engine.executors import ray_address
    from core.engine.ray_extract import extract_on_cluster

    if not ray_address():
        raise CliError("extract spreads the work over a Ray cluster: give --ray ADDRESS (or FEWSHOT_RAY_ADDRESS).")
    paths = list(iter_image_files(Path(args.data)))
    if not paths:
        raise CliError(f"{args.data} has no images.")
    report = extract_on_cluster(paths, args.backbone, ray_address(), workers=args.workers)
    print(json.dumps(report.to_dict()))
    return 0


def _image_paths(paths: list[str]) -> list[Path]:
    from core.datasets import iter_image_files

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += iter_image_files(path)
        elif path.exists():
            out.append(path)
        else:
            raise CliError(f"{raw} does not exist.")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from core.export import load_model, predict_files
    from core.runs import get_run

    run = get_run(args.run)
    model, labels = load_model(run.model_path), run.labels()
    paths = _image_paths(args.paths)
    probs, failed = predict_files(model, paths)
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", "label", "confidence"])
    bad = {p for p, _ in failed}
    for path, row in zip(paths, probs):
        if path not in bad:
            writer.writerow([str(path), labels[int(row.argmax())], f"{row.max():.6f}"])
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from core.datasets import scan_dataset
    from core.evaluate import compute_metrics
    from core.export import load_model, predict_files
    from core.runs import get_run

    run = get_run(args.run)
    labels = run.labels()
    ds = scan_dataset(args.data, val_split=0.0)
    unknown = sorted(set(ds.classes) - set(labels))
    if unknown:
        raise CliError(f"{args.data} has classes the model does not know: {unknown} (it knows {labels}).")
    probs, failed = predict_files(load_model(run.model_path), [it.path for it in ds.items])
    ok = ~np.isnan(probs).any(axis=1)
    y = np.array([labels.index(it.label) for it in ds.items])
    metrics = compute_metrics(y[ok], probs[ok], labels)
    metrics["skipped"] = [{"path": str(p), "reason": r} for p, r in failed] + \
                         [{"path": str(s.path), "reason": s.reason} for s in ds.skipped]
    json.dump(metrics, sys.stdout, indent=2)
    print()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.export import export_format
    from core.runs import get_run

    run = get_run(args.run)
    if args.check:
        from core.engine.execute import check_saved_model

        if not run.model_path.exists():
            raise CliError(f"{run.id} has no model.keras to check (yet).")
        check_saved_model(run)
        print(json.dumps((run.metrics() or {}).get("export_check")))
        return 0
    if args.model_file:
        from core.engine import write_run_model

        if run.config().mode == "scratch":
            raise CliError(f"{run.id} is a scratch run: its model.keras is written by the training itself, there "
                           f"is no head to build it again from.")
        status = write_run_model(run)
        if status.model_file != "ready":
            raise CliError(f"model.keras could not be written: {status.model_error}")
        print(run.model_path)
        return 0
    with _stdout_to_stderr():  # the converter prints its own messages: stdout stays the path alone
        check = export_format(run, args.format)
    print(run.file(check["file"]))
    print(export_summary(check), file=sys.stderr)
    return 0


def export_summary(check: dict) -> str:
    """One line: the file's size and how it compares with the app on the validation photos."""
    size = f"{check['size_bytes'] / 1e6:.1f} MB (model.keras {check['keras_size_bytes'] / 1e6:.1f} MB)"
    if not check.get("n_images"):
        return f"{check['file']}: {size}; not checked (the run has no validation photos)"
    how = " (its ONNX model, run by ONNX Runtime in Python)" if check.get("checked_with") == "onnxruntime" else ""
    return (f"{check['file']}: {size}; on {check['n_images']} validation photos{how}: same answer as the app on "
            f"{check['same_top1']:.1%}, largest probability difference {check['max_abs_diff']:.2e}, accuracy "
            f"{check['accuracy']:.1%} (app {check['app_accuracy']:.1%})")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send this process's stdout to stderr for a while, Python's and the C++ libraries' (file descriptor 1)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_run(args: argparse.Namespace) -> int:
    from core.engine import execute_run
    from core.runs import get_run

    status = execute_run(get_run(args.run), terminal=sys.stdout, executor="process")
    return 0 if status.state in ("done", "stopped") else EXIT_FAILED


def cmd_curve(args: argparse.Namespace) -> int:
    from core.backbones import get_backbone
    from core.curve import CurveSettings, dataset_curve, parse_shots

    get_backbone(args.backbone)  # an unknown name fails before anything loads
    settings = CurveSettings(shots=parse_shots(args.shots), draws=args.draws, seed=args.seed)
    result = dataset_curve(args.data, args.backbone, settings, val_split=args.val_split)
    json.dump(result.rows, sys.stdout, indent=2)
    print()
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from core.backbones import list_backbones

    for spec in list_backbones():
        print(f"{spec.name:20s} {spec.input_size:4d}px  {spec.feature_dim:5d}-d  {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ray:
        from core.engine.executors import RAY_ADDRESS_ENV

        os.environ[RAY_ADDRESS_ENV] = args.ray
    handler = {"submit": cmd_submit, "wait": cmd_wait, "extract": cmd_extract,
               "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "export": cmd_export,
               "run": cmd_run, "curve": cmd_curve, "backbones": cmd_backbones}[args.command]
    try:
        return handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        from core.engine import friendly_error

        if isinstance(exc, FewShotError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"error: {friendly_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
