"""Training: the recipe's three modes on a run folder.

    data.py        the splits as label arrays; images streamed from disk (tf.data)
    head.py        the lean training loop for the dense head on cached features
    fit.py         model.fit for image models, with the callback that writes the run folder
    finetune_cached.py  the default fine-tune: top block + head on cached activations of the frozen lower part
    stages.py      scratch, bottleneck head, fine-tune: each returns its model and what it cost
    train.py       one run from scan to metrics.json
    model_file.py  a head run's model.keras, and the check of the saved file against the run's predictions
"""
from core.training.model_file import verify_export, write_model_file
from core.training.stages import TrainingError
from core.training.train import TrainResult, train

__all__ = ["TrainResult", "TrainingError", "train", "verify_export", "write_model_file"]
