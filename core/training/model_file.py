"""The run's model.keras: assembled from a trained head on the frozen backbone, and checked against the run's own
predictions after it is written."""
from __future__ import annotations

from pathlib import Path

from core.export import check_export, save_model
from core.features import cached_extractor
from core.give_way import give_way_if_asked
from core.models import build_export_model, build_image_classifier
from core.runs import Run
from core.training.stages import TrainingError, saved_head


def write_model_file(run: Run) -> Path:
    """Assemble and save model.keras for a run whose trained part is its head: the frozen backbone (the same
    weights the features were extracted with) + the saved head, end to end. Also repairs such a run whose model
    file was never written (the process was killed meanwhile, the disk was full)."""
    cfg, classes = run.config(), run.labels()
    # A fine-tuned backbone lives only in the model.keras its run saved: the frozen one would not match its head.
    if cfg.mode == "scratch" or run.was_finetuned() or not classes or not run.has_head():
        raise TrainingError(f"Run {run.id} has no trained head on a frozen backbone to build a model file "
                            f"from; train it again.")
    extractor = cached_extractor(cfg.backbone)[0]  # built once per process: seconds, the first time
    give_way_if_asked()  # in the warm worker, a run that waits goes first; the file is written after it
    body = build_image_classifier(extractor, saved_head(run, len(classes)))
    model = build_export_model(body, cfg.input_size(), len(classes))
    give_way_if_asked()  # the save (~1.5 s, Keras' own code) cannot be cut short: the last chance to let it by
    save_model(model, run.model_path)
    return run.model_path


def verify_export(run: Run, max_images: int = 64) -> dict | None:
    """Reload the saved model.keras and compare its predictions on the validation images with the ones the run
    recorded; the result goes into metrics.json as `export_check`. Runs after the run is marked done, so it
    never delays the model being usable."""
    frame = run.predictions()
    labels = run.labels()
    if frame is None or not labels:
        return None
    frame = frame[frame["split"] == "val"].head(max_images)
    if frame.empty:
        return None
    expected = frame[[f"p_{c}" for c in labels]].to_numpy()
    check = check_export(run.model_path, [Path(p) for p in frame["path"]], expected)
    run.update_metrics(export_check=check)
    return check
