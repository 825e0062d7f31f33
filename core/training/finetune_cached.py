"""Fine-tuning on cached activations: what `--mode finetune` does unless `finetune_full` is set.

The full fine-tune sends every training image, freshly augmented, through the whole backbone every epoch, though
only the top block and the head learn. Here the frozen lower part runs once per image and augmented copy (and
its output is cached on disk, `core.activations`), and the top block + head train on those activations, each
epoch drawing one of the K+1 versions of each training image. Same start (the bottleneck head), optimiser
(SGD, momentum 0.9, the fine-tune learning rate as the peak of a short warm-up then cosine decay), epochs, class
weights, BatchNorm in inference mode and early stopping (best validation loss restored, the start counted as
epoch 0: it is kept when no epoch beats it) as the full path. The trained top block is the extractor's own layers,
so the model returned is the usual end-to-end classifier and model.keras is saved and checked as before.

Before the top block moves, the head is calibrated (`FinetuneRecipe.calibrate_head`): trained on, from where it
stands, the pooled features of all K+1 versions of the training images, which the same cached activations give
almost for free (activations → the frozen top block → pooling). The bottleneck head only ever saw the original
images; fine-tuning feeds it augmented ones, and without this its first epochs spend the gradient (and the top
block's weights) on that shift rather than on the task. The calibration is kept only when it lowers the
validation loss (the fine-tune's own rule), and the start kept when no epoch beats it is the bottleneck head
itself.

The loop is head.py's: one compiled graph per epoch (tf.function + while_loop), no `model.fit` bookkeeping.

With FEWSHOT_BF16=1 (`core.cpu.use_bf16`, off by default) or `FinetuneRecipe(bf16=True)`, the top block and the
head compute in mixed bfloat16 in the training steps: variables, gradients, the optimizer and the softmax output
stay float32, only the layers' arithmetic is bfloat16 (oneDNN). Validation and the model kept are float32.
Measured against the float32 fine-tune in BENCHMARKS.md, "bfloat16 fine-tuning": why it is not the default.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from core import images
from core.activations import DTYPE, ActivationCache, Activations, compute_activations, cut_backbone
from core.backbones import build_feature_extractor, set_top_block_trainable
from core.config import TrainConfig
from core.cpu import use_bf16
from core.models import build_image_classifier, is_binary
from core.reporting import Reporter
from core.tfenv import keras, tf
from core.training.data import SplitData, class_weights
from core.training.fit import rounded
from core.training.head import HeadFitConfig, fit_head, predicted_classes
from core.workspace import activations_dir

# Augmented copies cached per training image when the run sets none (`augment_copies`): one per fine-tune epoch
# bar one (the original counts), so every epoch can draw a version of each photo the others did not, as the recipe's
# augmentation (a fresh copy every epoch) does; at most MAX_DEFAULT_COPIES, and fewer where the activations held in
# memory would pass ACTIVATION_BUDGET_MIB. Measured (BENCHMARKS.md, issue 11): K = 9 against the previous K = 4
# on 4 datasets x 3 splits, the fine-tune gained +1.4 points over its head on average (+0.25 with K = 4) and never
# ended below it (K = 4: one split 2.6 points below); the first, cold fine-tune caches twice as many activations.
# With the milder default augmentation ("natural") and peak lr 1e-3 since, K = 9 gains +2.0 to +2.2 (two runs).
MAX_DEFAULT_COPIES = 9
ACTIVATION_BUDGET_MIB = 1024
WARMUP_FRACTION = 0.1  # of the fine-tune's steps, the learning rate's linear warm-up (then cosine decay to 0)


@dataclass(frozen=True)
class FinetuneRecipe:
    """How the fine-tune trains, beyond the run's settings. Not a user setting: `bench.finetune_gain` compares the
    default with `PREVIOUS_RECIPE` (what fine-tuning did before issue 11's item 3)."""
    calibrate_head: bool = True      # first train the head on the pooled features of all K+1 versions
    schedule: str = "warmup_cosine"  # "warmup_cosine" | "constant" (the 2016 recipe's fixed SGD step)
    # Blocks unfrozen below the top one. 0: measured on three small datasets (BENCHMARKS.md, "Issue 11 item 3"),
    # one more block (Lite0's block14) did not help there, and no larger dataset was at hand to show where it
    # starts to; so the top block alone, whatever the dataset's size.
    extra_blocks: int = 0
    # Mixed bfloat16 for the training steps; None: `core.cpu.use_bf16()` (FEWSHOT_BF16=1; float32 by default).
    bf16: bool | None = None


PREVIOUS_RECIPE = FinetuneRecipe(calibrate_head=False, schedule="constant", extra_blocks=0)


def finetune_learning_rate(peak: float, total_steps: int, schedule: str = "warmup_cosine",
                           warmup_fraction: float = WARMUP_FRACTION):
    """The fine-tune's learning rate for `total_steps` optimizer steps (epochs × batches per epoch): a linear
    warm-up over `warmup_fraction` of them (at least one step) to `peak`, then cosine decay to 0 at the last step.
    A float (`peak`) for "constant", or when there are too few steps for a schedule.

    The warm-up keeps the first, largest gradients (a head meeting a moving top block) from kicking the pretrained
    weights; the decay lets the last epochs settle instead of jittering at the full step. The first warm-up step
    is peak / (warm-up + 1), not 0: no step is wasted."""
    if schedule == "constant" or total_steps < 2:
        return peak
    if schedule != "warmup_cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    warmup = min(max(1, round(warmup_fraction * total_steps)), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(peak / (warmup + 1), total_steps - warmup, alpha=0.0,
                                                  warmup_target=peak, warmup_steps=warmup)


def last_step_lr(lr, optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate `optimizer` used for its last step: schedule `lr` at iterations - 1 (the optimizer's own
    `learning_rate` is the next step's), or `lr` itself when fixed."""
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(max(int(optimizer.iterations.numpy()) - 1, 0)))
    return float(lr)


@dataclass
class CachedFinetune:
    classifier: keras.Model
    activation_seconds: float = 0.0
    train_seconds: float = 0.0
    info: dict = field(default_factory=dict)  # what metrics.json's "finetune" reports


def finetune_copies(cfg: TrainConfig, n_train: int = 0, activation_bytes: int = 0) -> int:
    """K: the run's augmented copies, else one per fine-tune epoch bar one (at most MAX_DEFAULT_COPIES, at least 1)
    within ACTIVATION_BUDGET_MIB for `n_train` images of `activation_bytes` each; none when augmentation would
    change nothing."""
    if not cfg.augment.enabled or cfg.augment.is_identity():
        return 0
    if cfg.augment_copies:
        return cfg.augment_copies
    copies = min(MAX_DEFAULT_COPIES, max(1, cfg.finetune_epochs - 1))
    if n_train and activation_bytes:
        fits = int(ACTIVATION_BUDGET_MIB * 2**20 // (n_train * activation_bytes)) - 1  # the originals count too
        copies = max(1, min(copies, fits))
    return copies


def finetune_on_activations(cfg: TrainConfig, n_classes: int, splits: dict[str, SplitData], head: keras.Model,
                            reporter: Reporter, recipe: FinetuneRecipe | None = None) -> CachedFinetune:
    recipe = recipe or FinetuneRecipe()
    # A fresh extractor, as for the full path: the process-wide cached one must stay frozen.
    extractor = build_feature_extractor(cfg.backbone)
    n_trainable = set_top_block_trainable(extractor, cfg.backbone, recipe.extra_blocks)
    cut = cut_backbone(extractor, cfg.backbone, recipe.extra_blocks)
    copies = finetune_copies(cfg, len(splits["train"]), int(np.prod(cut.shape)) * np.dtype(DTYPE).itemsize)
    blocks = "top block" if not recipe.extra_blocks else f"top {recipe.extra_blocks + 1} blocks"
    reporter.log(f"fine-tuning {n_trainable:,} parameters of {cfg.backbone}'s {blocks} and the head on cached "
                 f"activations at {cut.cut} ({copies} augmented copies per training image)")
    cache = ActivationCache(activations_dir(), cfg.backbone, cut.cut, cut.shape)

    reporter.phase("activations", "caching activations")
    started = time.perf_counter()
    acts: dict[str, Activations] = {}
    for split, k in (("train", copies), ("val", 0)):
        data = splits[split]
        acts[split] = compute_activations(
            data.paths, [images.content_hash(p) for p in data.paths], cut, cfg.backbone, cache, cfg.augment, k,
            should_stop=reporter.should_stop,
            progress=lambda d, t, s=split: reporter.progress(d, t, f"caching {s} activations: {d}/{t}"))
        for path, reason in acts[split].failed:
            reporter.log(f"skipped {path}: {reason}")
    activation_seconds = time.perf_counter() - started
    n_computed = sum(a.n_computed for a in acts.values())
    n_cached = sum(a.n_cached for a in acts.values())
    memory_mib = sum(a.values.nbytes for a in acts.values()) / 2**20
    info = {"path": "cached", "copies": copies, "cut": cut.cut, "activations_computed": n_computed,
            "activations_cached": n_cached, "activation_cache_mib": round(cache.size_mib(), 1),
            "activation_memory_mib": round(memory_mib, 1), "activation_seconds": round(activation_seconds, 3)}
    reporter.log(f"activations: {n_computed} computed, {n_cached} read from the cache; {memory_mib:.1f} MiB in "
                 f"memory, cache {info['activation_cache_mib']} MiB on disk")

    train_ok, val_ok = acts["train"].ok, acts["val"].ok
    x_val, y_val = acts["val"].values[0][val_ok], splits["val"].y[val_ok]
    started = time.perf_counter()
    info |= fit_top(cut.top, head, acts["train"].values[:, train_ok], splits["train"].y[train_ok], x_val, y_val,
                    cfg, n_classes, reporter, recipe)
    return CachedFinetune(build_image_classifier(extractor, head), activation_seconds,
                          time.perf_counter() - started, info)


def pooled_features(top: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The frozen top block's pooled features of activations `x` (N, ...): what the head reads."""
    forward = tf.function(lambda xb: top(tf.cast(xb, tf.float32), training=False), reduce_retracing=True)
    out = [forward(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, int(top.output.shape[-1])), np.float32)


def calibrate_head(top: keras.Model, head: keras.Model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, cfg: TrainConfig, n_classes: int, start_val_loss: float | None = None) -> dict:
    """Train `head` in place, from where it stands, on the pooled features of every version in `x` (versions, N,
    ...) of the training images: the originals and their K augmented copies, as the fine-tune will feed it. The
    bottleneck head's loop and settings (Adam at the head's learning rate, its epochs, class weights, early
    stopping on validation loss with the best epoch restored). As for the fine-tune, the start counts: when no
    epoch's validation loss is below `start_val_loss` the head is put back as it came ("kept": False) and the
    fine-tune starts from it. Returns its validation loss and accuracy, and whether it was kept."""
    before = head.get_weights()
    versions, n = x.shape[0], x.shape[1]
    features = pooled_features(top, x.reshape((versions * n, *x.shape[2:])))
    labels = np.tile(y, versions)
    has_val = len(x_val) > 0
    val_features = pooled_features(top, x_val) if has_val else None
    weights = class_weights(labels, n_classes) if cfg.class_weights == "balanced" else None
    history = fit_head(head, features, labels, val_features, y_val if has_val else None,
                       HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience if cfg.early_stopping else None,
                                     cfg.seed), weights)
    scored = [r for r in history if r.get("val_loss") is not None]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else None
    kept = best is None or start_val_loss is None or best["val_loss"] < start_val_loss
    if not kept:
        head.set_weights(before)
    return {"n_features": int(len(features)), "epochs": len(history), "kept": kept,
            "val_loss": rounded(best["val_loss"]) if best else None,
            "val_accuracy": rounded(best["val_accuracy"]) if best else None}


def mixed_bf16_layers(top: keras.Model, head: keras.Model) -> list[keras.layers.Layer]:
    """The layers that compute in bfloat16 on the mixed path: the top block's and the head's, all but the head's
    output layer, whose softmax (sigmoid) stays float32 so the loss and its small probabilities keep their digits."""
    return [layer for layer in (*top.layers, *head.layers) if layer.name != "head_predictions"]


@contextlib.contextmanager
def dtype_policy(layers: Sequence[keras.layers.Layer], policy: str) -> Iterator[None]:
    """`layers` compute under `policy` ("mixed_bfloat16": bfloat16 arithmetic on float32 variables) while a graph
    is traced inside, then are put back. Keras reads a layer's policy at call time, so only the graphs traced here
    are mixed; the layers (and the model saved from them) stay float32 everywhere else."""
    before = [layer.dtype_policy for layer in layers]
    for layer in layers:
        layer.dtype_policy = policy
    try:
        yield
    finally:
        for layer, old in zip(layers, before):
            layer.dtype_policy = old


def fit_top(top: keras.Model, head: keras.Model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            cfg: TrainConfig, n_classes: int, reporter: Reporter, recipe: FinetuneRecipe | None = None) -> dict:
    """Train `top` + `head` in place on activations `x` (versions, N, ...), one version per image per epoch.

    The starting point (the trained head on the untouched top block) is epoch 0: the weights kept at the end are
    those of the lowest validation loss among epoch 0 and the fine-tune epochs, so fine-tuning never ends worse on
    validation than the head it started from. With `recipe.calibrate_head` (and augmented copies) the head is then
    trained on all versions' features (`calibrate_head`) before the top block moves. Returns what metrics.json's
    "finetune" adds: the start's validation loss and accuracy, the calibration, the learning-rate schedule, the
    epoch kept (0: the start), whether the start was kept, and the precision the training steps computed in.
    With `recipe.bf16` (None: `use_bf16()`) the training steps run in mixed bfloat16 (`dtype_policy`); the
    validation, the calibration (NumPy) and the weights kept are float32 either way."""
    recipe = recipe or FinetuneRecipe()
    bf16 = use_bf16() if recipe.bf16 is None else recipe.bf16
    # Mixed precision only inside the fine-tune's own graphs; float32: no layer touched, the graphs as before.
    mixed = mixed_bf16_layers(top, head) if bf16 else []
    binary = is_binary(n_classes)
    loss_fn = keras.losses.BinaryCrossentropy() if binary else keras.losses.SparseCategoricalCrossentropy()
    weights = class_weights(y, n_classes) if cfg.class_weights == "balanced" else {}
    weights_per_class = tf.constant([weights.get(c, 1.0) for c in range(n_classes)], tf.float32)
    versions, n = x.shape[0], x.shape[1]
    # float16 in memory (half the size); each batch is widened to float32 inside the graph.
    x_t = tf.constant(x.reshape((versions * n, *x.shape[2:])))
    y_t = tf.constant(y, tf.int64)
    steps = int(np.ceil(n / cfg.batch_size))
    epochs = cfg.finetune_epochs
    # The schedule runs over every step the epochs could take (early stopping may end it sooner).
    lr = finetune_learning_rate(cfg.finetune_lr, epochs * steps, recipe.schedule)
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    variables = top.trainable_variables + head.trainable_variables
    optimizer.build(variables)

    def forward(xb, training: bool):
        # BatchNorm of the top block in inference mode (as the full path's `extractor(..., training=False)`);
        # the head's dropout is active while training, as in `fit`. Validation stays float32 on the bfloat16 path:
        # the epoch kept is chosen on the numbers the float32 fine-tune and the calibration compare.
        with dtype_policy(mixed if training else [], "mixed_bfloat16"):
            return head(top(tf.cast(xb, tf.float32), training=False), training=training)

    def loss_of(out, yb, sample_weight=None):
        target = tf.cast(tf.reshape(yb, (-1, 1)), tf.float32) if binary else yb
        return loss_fn(target, out, sample_weight=sample_weight)

    @tf.function(reduce_retracing=True, autograph=False)
    def train_epoch(flat_order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def step_fn(step, total_loss, correct):
            idx = flat_order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            yb = tf.gather(y_t, idx % n)
            with tf.GradientTape() as tape:
                out = forward(tf.gather(x_t, idx), True)
                loss = loss_of(out, yb, tf.gather(weights_per_class, yb))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return (step + 1, total_loss + loss * tf.cast(tf.shape(idx)[0], tf.float32),
                    correct + tf.reduce_sum(tf.cast(predicted_classes(out, binary) == yb, tf.int64)))

        _, total_loss, correct = tf.while_loop(lambda step, *_: step < steps, step_fn,
                                               (tf.constant(0), tf.constant(0.0), tf.constant(0, tf.int64)))
        count = tf.cast(tf.shape(flat_order)[0], tf.float32)
        return total_loss / count, tf.cast(correct, tf.float32) / count

    @tf.function(reduce_retracing=True, autograph=False)
    def evaluate_batch(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out = forward(xb, False)
        return loss_of(out, yb) * tf.cast(tf.shape(yb)[0], tf.float32), \
            tf.reduce_sum(tf.cast(predicted_classes(out, binary) == yb, tf.float32))

    def evaluate() -> tuple[float, float]:
        loss = correct = 0.0
        for i in range(0, len(x_val), 256):  # bounded graph size however many validation images
            batch_loss, batch_correct = evaluate_batch(tf.constant(x_val[i:i + 256]),
                                                       tf.constant(y_val[i:i + 256], tf.int64))
            loss, correct = loss + float(batch_loss), correct + float(batch_correct)
        return loss / len(x_val), correct / len(x_val)  # unweighted, like fit's val_loss

    patience = cfg.patience if cfg.early_stopping and epochs > 1 else None
    has_val = len(x_val) > 0
    offset = len(reporter.history)
    rng = np.random.default_rng(cfg.seed)
    best, best_weights, best_epoch, waited = np.inf, None, None, 0
    outcome: dict = {"start_val_loss": None, "start_val_accuracy": None, "calibrated_head": None,
                     "schedule": recipe.schedule, "peak_lr": cfg.finetune_lr, "steps": epochs * steps,
                     "warmup_steps": getattr(lr, "warmup_steps", 0),
                     "precision": "mixed_bfloat16" if bf16 else "float32"}
    if has_val:
        start_loss, start_acc = evaluate()
        outcome |= {"start_val_loss": rounded(start_loss), "start_val_accuracy": rounded(start_acc)}
        best, best_weights, best_epoch = start_loss, (top.get_weights(), head.get_weights()), 0
    if recipe.calibrate_head and versions > 1 and epochs:
        reporter.phase("calibrating", "training the head on the augmented copies' features")
        calibrated = outcome["calibrated_head"] = calibrate_head(top, head, x, y, x_val, y_val, cfg, n_classes,
                                                                 best if has_val else None)
        reporter.log(f"head trained on {calibrated['n_features']} features (originals and augmented copies): "
                     f"validation loss {calibrated['val_loss']}" + (
                         "" if calibrated["kept"] else f", not below the start's {outcome['start_val_loss']}: "
                                                       f"the fine-tune starts from the head as it came"))
    reporter.phase("finetune", f"finetune: epoch 1 of {epochs}")
    for epoch in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(n)
        version = rng.integers(0, versions, n)  # one of the K+1 versions of each image this epoch
        loss, acc = train_epoch(tf.constant(version[order] * n + order, tf.int64))
        row = {"epoch": offset + epoch + 1, "stage": "finetune", "loss": rounded(loss), "accuracy": rounded(acc),
               "val_loss": None, "val_accuracy": None, "lr": rounded(last_step_lr(lr, optimizer))}
        monitored = float(loss)
        if has_val:
            val_loss, val_acc = evaluate()
            row["val_loss"], row["val_accuracy"] = rounded(val_loss), rounded(val_acc)
            monitored = val_loss
        row["seconds"] = round(time.perf_counter() - started, 3)
        reporter.epoch(row)
        reporter.progress(epoch + 1, epochs, f"finetune: epoch {epoch + 1} of {epochs}")
        if monitored < best:
            best, best_weights, best_epoch, waited = monitored, (top.get_weights(), head.get_weights()), epoch + 1, 0
        else:
            waited += 1
        if reporter.should_stop() or (patience is not None and waited > 0 and waited >= patience):
            break
    if best_weights is not None:
        top.set_weights(best_weights[0])
        head.set_weights(best_weights[1])
    kept_start = best_epoch == 0
    if kept_start:
        reporter.log(f"no fine-tune epoch beat the starting head's validation loss ({outcome['start_val_loss']}): "
                     f"kept the head")
    return outcome | {"kept_epoch": None if best_epoch is None else (offset + best_epoch if best_epoch else 0),
                      "kept_start": kept_start}
