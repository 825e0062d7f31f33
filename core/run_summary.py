"""Plain sentences about a finished run's metrics.json, for the pages: which model was kept and why, and how many
photos each accuracy is measured on. No TensorFlow, no Streamlit."""
from __future__ import annotations

STAGE_WORDS = {"bottleneck": "the pretrained-features head", "finetune": "the fine-tune", "scratch": "the training",
               "head from --from run": "the head it started from"}


def measured_on(accuracy: float | None, n_photos: int | None, what: str = "validation") -> str:
    """'92% of 25 validation photos' (or '—'): every accuracy shown says what it is measured on."""
    if accuracy is None:
        return "—"
    return f"{accuracy:.0%} of {n_photos} {what} photo{'s' if n_photos != 1 else ''}" if n_photos is not None \
        else f"{accuracy:.0%}"


def saved_model_note(metrics: dict) -> str | None:
    """'Kept epoch 7 of the fine-tune (lowest validation loss, 0.123): 92% of 25 validation photos.' Runs written
    before metrics.json had "saved_model" give None."""
    saved = metrics.get("saved_model")
    if not saved:
        return None
    where = STAGE_WORDS.get(saved.get("stage"), saved.get("stage") or "the training")
    epoch = f"epoch {saved['epoch']} of {where}" if saved.get("epoch") else where
    loss = f", validation loss {saved['val_loss']:.3f}" if saved.get("val_loss") is not None else ""
    text = f"The saved model is {epoch} ({saved.get('why', 'lowest validation loss')}{loss})"
    if saved.get("val_accuracy") is not None:
        text += f": {measured_on(saved['val_accuracy'], saved.get('n_val'))} right"
    return text + "."
