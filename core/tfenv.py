"""Import TensorFlow/Keras once, configured for small CPUs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# On 2-core machines TF's default thread pools oversubscribe the CPU and make
# inference about half as fast and erratic; this must run before any TF op.
try:
    tf.config.threading.set_intra_op_parallelism_threads(
        int(os.environ.get("FEWSHOT_INTRA_THREADS", 2)))
    tf.config.threading.set_inter_op_parallelism_threads(
        int(os.environ.get("FEWSHOT_INTER_THREADS", 1)))
except RuntimeError:
    pass  # TF was already initialised by someone else: keep its settings.

__all__ = ["tf", "keras"]
