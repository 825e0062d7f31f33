"""Fine-tuning on cached activations (the default `--mode finetune`) and the full path (`--finetune-full`), with
the real EfficientNet-Lite0 on tiny images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError, TrainConfig
from core.engine import execute_run
from core.runs import create_run, get_run

SETTINGS = dict(mode="finetune", epochs=3, finetune_epochs=2, batch_size=8, early_stopping=False, val_split=0.25,
                augment_copies=1)


def _train(data: Path, out: Path, **settings) -> dict:
    run = create_run(TrainConfig(data=str(data), **{**SETTINGS, **settings}), out)
    status = execute_run(run)
    assert status.state == "done", status
    return json.loads((out / "metrics.json").read_text())


def _top_block_weights(model_path: Path) -> dict[str, list[np.ndarray]]:
    from core.export import load_model
    model = load_model(model_path)
    extractor = next(layer for layer in model._flatten_layers() if layer.name == "efficientnet_lite0")
    return {layer.name: [w.numpy() for w in layer.weights] for layer in extractor.layers
            if layer.name.startswith("block15_") and layer.weights}


def test_cut_backbone_reproduces_the_extractor_and_float16_is_close():
    from core.activations import DTYPE, cut_backbone
    from core.backbones import build_feature_extractor

    extractor = build_feature_extractor("efficientnet_lite0")
    cut = cut_backbone(extractor, "efficientnet_lite0")
    assert cut.cut == "block15_expand" and cut.shape == (7, 7, 192)
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    features = extractor(x, training=False).numpy()
    acts = cut.lower(x, training=False).numpy()
    np.testing.assert_allclose(cut.top(acts, training=False).numpy(), features, atol=1e-5)
    from_fp16 = cut.top(acts.astype(DTYPE).astype(np.float32), training=False).numpy()
    assert np.abs(from_fp16 - features).max() < 1e-3 * np.abs(features).max()
    # The top part is the extractor's own layers: training it trains the extractor.
    assert all(layer is extractor.get_layer(layer.name) for layer in cut.top.layers[1:])
    # One more block under the top one (block14, with its residual add reading the cut tensor) cuts there too.
    deeper = cut_backbone(extractor, "efficientnet_lite0", extra_blocks=1)
    assert deeper.cut == "block14_expand" and deeper.shape == (7, 7, 192)
    np.testing.assert_allclose(deeper.top(deeper.lower(x, training=False), training=False).numpy(), features,
                               atol=1e-5)


def test_cached_finetune_trains_the_top_block_exports_and_second_run_reads_the_cache(workspace, tiny_dataset,
                                                                                    tmp_path):
    from core.training import verify_export

    first = _train(tiny_dataset, tmp_path / "a")
    info = first["finetune"]
    n_train, n_val = first["n_train"], first["n_val"]
    assert info["path"] == "cached" and info["copies"] == 1
    assert info["activations_computed"] == 2 * n_train + n_val and info["activations_cached"] == 0
    assert info["activation_cache_mib"] > 0 and info["activation_memory_mib"] > 0
    history = pd.read_csv(tmp_path / "a" / "history.csv")
    assert history["stage"].tolist() == ["bottleneck"] * 3 + ["finetune"] * 2
    # The fine-tune learning rate is the peak of a warm-up then cosine decay: below it by the last epoch.
    finetune_lr = history[history["stage"] == "finetune"]["lr"]
    assert 0 < finetune_lr.iloc[-1] < finetune_lr.max() <= TrainConfig().finetune_lr
    assert history["val_accuracy"].iloc[-1] >= 0.8  # starts from the trained head: good from its first epoch
    assert "activations" in first["phase_seconds"] and "finetune" in first["phase_seconds"]

    # The top block changed, and model.keras (the end-to-end model) predicts what the run recorded.
    from core.backbones import build_feature_extractor
    frozen = {layer.name: [w.numpy() for w in layer.weights] for layer in build_feature_extractor(
        "efficientnet_lite0").layers if layer.name.startswith("block15_") and layer.weights}
    tuned = _top_block_weights(tmp_path / "a" / "model.keras")
    assert tuned.keys() == frozen.keys() and tuned
    assert any(not np.allclose(t, f) for name in tuned for t, f in zip(tuned[name], frozen[name]))
    check = verify_export(get_run(tmp_path / "a"))
    assert check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-4
    # metrics.json describes the saved model: a fine-tune epoch here, its own validation loss (not the minimum
    # over the bottleneck stage too).
    assert not info["kept_start"] and first["saved_model"]["stage"] == "finetune"
    kept = history[history["epoch"] == first["best_epoch"]].iloc[0]
    assert kept["stage"] == "finetune" and first["val_loss"] == pytest.approx(kept["val_loss"])
    assert first["val_loss"] == pytest.approx(history[history["stage"] == "finetune"]["val_loss"].min())
    assert first["val_loss"] < info["start_val_loss"]

    # A retrain of the same photos with other settings: every activation comes from the cache.
    second = _train(tiny_dataset, tmp_path / "b", finetune_lr=3e-4, dense_units=64)
    assert second["finetune"]["activations_computed"] == 0
    assert second["finetune"]["activations_cached"] == info["activations_computed"]


def test_finetune_full_takes_the_image_path(workspace, tiny_dataset, tmp_path):
    metrics = _train(tiny_dataset, tmp_path / "full", finetune_full=True, finetune_epochs=1)
    assert metrics["finetune"]["path"] == "full" and metrics["finetune"]["start_val_loss"] is not None
    assert metrics["saved_model"]["epoch"] == (0 if metrics["finetune"]["kept_start"] else 4)
    assert "activations" not in metrics["phase_seconds"]
    assert not (workspace / "cache" / "activations").exists() or not any((workspace / "cache" / "activations")
                                                                        .rglob("*.npy"))
    assert get_run(tmp_path / "full").config().finetune_full is True


def test_cli_finetune_full_flag(tiny_dataset, tmp_path):
    from core.__main__ import CliError, _parser, _train_config

    def config(*flags: str) -> TrainConfig:
        return _train_config(_parser().parse_args(["train", str(tiny_dataset), *flags, "--out", str(tmp_path)]))

    assert config("--mode", "finetune", "--finetune-full").finetune_full is True
    assert config("--mode", "finetune").finetune_full is False
    with pytest.raises(CliError, match="--finetune-full only makes sense"):
        config("--finetune-full")


def test_finetune_full_is_validated_and_saved():
    assert TrainConfig.from_json(TrainConfig(finetune_full=True).to_json()).finetune_full is True
    assert TrainConfig().finetune_full is False
    with pytest.raises(ConfigError, match="finetune_full"):
        TrainConfig(finetune_full="yes")


@pytest.mark.parametrize("full", [False, True])
def test_a_finetune_that_never_beats_its_head_keeps_the_head(workspace, tiny_dataset, tmp_path, full):
    """The starting head is epoch 0: a fine-tune whose epochs all do worse on validation (here a learning rate that
    blows it apart) ends with the head, on the frozen backbone, its predictions and its metrics."""
    from core.training import verify_export

    out = tmp_path / ("full" if full else "cached")
    metrics = _train(tiny_dataset, out, finetune_lr=1.0, finetune_epochs=1, batch_size=2, finetune_full=full)
    info, saved = metrics["finetune"], metrics["saved_model"]
    assert info["kept_start"] and info["kept_epoch"] == 0
    history = pd.read_csv(out / "history.csv")
    bottleneck = history[history["stage"] == "bottleneck"]
    assert saved["stage"] == "bottleneck" and "head was kept" in saved["why"]
    assert metrics["best_epoch"] == bottleneck.loc[bottleneck["val_loss"].idxmin(), "epoch"]
    assert metrics["val_loss"] == pytest.approx(bottleneck["val_loss"].min())
    run = get_run(out)
    assert not run.was_finetuned()  # no fine-tuned backbone: model.keras is the head on the frozen one
    from core.backbones import build_feature_extractor
    frozen = {layer.name: [w.numpy() for w in layer.weights] for layer in build_feature_extractor(
        "efficientnet_lite0").layers if layer.name.startswith("block15_") and layer.weights}
    kept = _top_block_weights(out / "model.keras")
    assert all(np.allclose(t, f) for name in kept for t, f in zip(kept[name], frozen[name]))
    check = verify_export(run)
    assert check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-4



def test_finetune_learning_rate_warms_up_then_decays_in_a_real_optimizer():
    """Warm-up over a tenth of the steps (linear, from above 0) to the fine-tune learning rate, then cosine decay
    to 0 at the last step, as a real Keras SGD optimizer applies it step by step."""
    from core.tfenv import keras
    from core.training.finetune_cached import finetune_learning_rate, last_step_lr

    total = 40
    schedule = finetune_learning_rate(1e-4, total)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    w = keras.Variable(np.ones(3, np.float32))
    optimizer.build([w])
    used = []
    for _ in range(total):
        optimizer.apply_gradients([(keras.ops.ones_like(w), w)])
        used.append(last_step_lr(schedule, optimizer))
    used = np.array(used)
    peak = int(np.argmax(used))
    assert peak == schedule.warmup_steps == 4 and used[peak] == pytest.approx(1e-4)
    assert 0 < used[0] < used[1] < used[peak]                     # warm-up, no step at 0
    assert np.all(np.diff(used[peak:]) < 0)                       # then decays every step...
    assert used[-1] < 1e-6 and used[total // 2 + 2] == pytest.approx(0.5e-4, rel=0.1)  # ...a cosine, to ~0
    # The recipe's constant step is still there (the benchmark's "before"), and one step has no schedule.
    assert finetune_learning_rate(1e-4, total, "constant") == 1e-4 and finetune_learning_rate(1e-4, 1) == 1e-4


def test_the_starting_head_is_calibrated_on_the_augmented_copies(monkeypatch):
    """Before the top block moves, the head trains on the pooled features of every version the fine-tune feeds it:
    the originals and the K augmented copies (from the same activations); the previous recipe skips it."""
    import os

    from core.models import build_head
    from core.reporting import Reporter
    from core.tfenv import keras
    from core.training import finetune_cached
    from core.training.finetune_cached import PREVIOUS_RECIPE, fit_top, pooled_features

    seen = []
    real_fit_head = finetune_cached.fit_head

    def spy(head, x, y, x_val, y_val, *args, **kwargs):
        seen.append((x.copy(), y.copy()))
        return real_fit_head(head, x, y, x_val, y_val, *args, **kwargs)

    monkeypatch.setattr(finetune_cached, "fit_head", spy)
    inputs = keras.Input((4, 4, 8))
    top = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 1)(inputs)))
    rng = np.random.default_rng(0)
    versions, n = 3, 12  # the originals and K = 2 augmented copies
    x = rng.normal(size=(versions, n, 4, 4, 8)).astype(np.float16)
    y = np.arange(n) % 3
    x_val, y_val = rng.normal(size=(6, 4, 4, 8)).astype(np.float16), np.arange(6) % 3
    cfg = TrainConfig(epochs=3, finetune_epochs=2, batch_size=4)

    head = build_head(16, 3, 8, 0.0)
    start = [w.copy() for w in head.get_weights()]
    expected = [pooled_features(top, x[v]) for v in range(versions)]  # the top block as it is before it moves
    with open(os.devnull, "w") as quiet:
        info = fit_top(top, head, x, y, x_val, y_val, cfg, 3, Reporter(terminal=quiet))
    (features, labels), = seen
    assert features.shape == (versions * n, 16) and labels.tolist() == np.tile(y, versions).tolist()
    for v in range(versions):  # every version's own features, copies included
        np.testing.assert_allclose(features[v * n:(v + 1) * n], expected[v], atol=1e-5)
    calibrated = info["calibrated_head"]
    assert calibrated["n_features"] == versions * n and calibrated["val_loss"] is not None and "kept" in calibrated
    assert info["schedule"] == "warmup_cosine" and info["steps"] == 2 * 3 and info["warmup_steps"] == 1
    if info["kept_start"]:  # the start kept is the bottleneck head as it came, not the calibrated one
        assert all(np.allclose(a, b) for a, b in zip(head.get_weights(), start))

    seen.clear()
    with open(os.devnull, "w") as quiet:
        info = fit_top(top, build_head(16, 3, 8, 0.0), x, y, x_val, y_val, cfg, 3, Reporter(terminal=quiet),
                       PREVIOUS_RECIPE)
    assert not seen and info["calibrated_head"] is None and info["schedule"] == "constant"


def test_top_block_prefixes_count_blocks_down():
    from core.backbones import BackboneError, top_block_prefixes

    assert top_block_prefixes("efficientnet_lite0") == ("block15_", "head_")
    assert top_block_prefixes("efficientnet_lite0", 1) == ("block14_", "block15_", "head_")
    assert top_block_prefixes("vgg16", 2) == ("block3_", "block4_", "block5_")
    with pytest.raises(BackboneError):
        top_block_prefixes("vgg16", 5)


def test_bf16_fine_tune_trains_in_mixed_bfloat16_and_predicts_close_to_float32(monkeypatch):
    """The bfloat16 path (forced by the recipe, or by FEWSHOT_BF16=1 on any CPU: emulated where not native) trains
    a real Keras top block + head from the same start as float32, keeps float32 variables and layers, and its
    model predicts within bfloat16's rounding of float32's."""
    import os

    from core.models import build_head
    from core.reporting import Reporter
    from core.tfenv import keras, tf
    from core.training.finetune_cached import FinetuneRecipe, dtype_policy, fit_top, mixed_bf16_layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 8))
    bn = keras.layers.BatchNormalization(name="top_bn")
    bn.trainable = False  # frozen and in inference mode, as the real top block's
    top = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(bn(
        keras.layers.Conv2D(32, 1, name="top_conv")(inputs)))))
    head = build_head(32, 3, 16, 0.0)
    start = top.get_weights(), head.get_weights()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 24, 4, 4, 8)).astype(np.float16)
    x_val = rng.normal(size=(12, 4, 4, 8)).astype(np.float16)
    # Learnable labels (which of three channels is largest), so every epoch lowers the validation loss and both
    # paths keep their last epoch rather than the shared start.
    y, y_val = x[0, :, :, :, :3].mean(axis=(1, 2)).argmax(1), x_val[:, :, :, :3].mean(axis=(1, 2)).argmax(1)
    cfg = TrainConfig(epochs=3, finetune_epochs=3, batch_size=8, finetune_lr=0.05, early_stopping=False)

    # The mechanism: inside `dtype_policy` the layers compute in bfloat16, the softmax output stays float32.
    with dtype_policy(mixed_bf16_layers(top, head), "mixed_bfloat16"):
        features = top(tf.constant(x_val, tf.float32), training=False)
        assert features.dtype == tf.bfloat16 and head(features).dtype == tf.float32

    def fine_tune(recipe: FinetuneRecipe) -> tuple[dict, np.ndarray]:
        top.set_weights(start[0])
        head.set_weights(start[1])
        keras.utils.set_random_seed(0)
        with open(os.devnull, "w") as quiet:
            info = fit_top(top, head, x, y, x_val, y_val, cfg, 3, Reporter(terminal=quiet), recipe)
        return info, head(top(x_val.astype(np.float32), training=False)).numpy()

    info32, probs32 = fine_tune(FinetuneRecipe(calibrate_head=False, bf16=False))
    info16, probs16 = fine_tune(FinetuneRecipe(calibrate_head=False, bf16=True))
    assert info32["precision"] == "float32" and info16["precision"] == "mixed_bfloat16"
    assert info32["kept_epoch"] == info16["kept_epoch"] > 0, (info32, info16)
    assert not np.allclose(top.get_weights()[0], start[0][0])  # the top block trained
    # The model kept is float32 through and through: policies put back, variables never narrowed.
    assert all(layer.dtype_policy.name == "float32" for layer in (*top.layers, *head.layers))
    assert all(v.dtype == "float32" for v in top.weights + head.weights)
    difference = np.abs(probs16 - probs32).max()
    # bfloat16 did run (not float32 again), and stayed close: 5e-5 measured, bfloat16 rounds at ~4e-3 relative.
    assert 0 < difference < 1e-3, difference
    assert (probs16.argmax(1) == probs32.argmax(1)).all()

    # The recipe's default follows core.cpu.use_bf16(): float32 unless FEWSHOT_BF16=1, whatever the CPU offers.
    for setting, expected in ((None, "float32"), ("0", "float32"), ("1", "mixed_bfloat16")):
        if setting is None:
            monkeypatch.delenv("FEWSHOT_BF16", raising=False)
        else:
            monkeypatch.setenv("FEWSHOT_BF16", setting)
        info, _ = fine_tune(FinetuneRecipe(calibrate_head=False))
        assert info["precision"] == expected


def test_the_default_number_of_cached_copies_gives_each_epoch_a_fresh_version_within_a_memory_budget():
    """K augmented copies when the run sets none: one per fine-tune epoch bar one (the original is the other),
    at most 9 and at least 1, fewer where the activations held in memory would pass the budget; none when the
    augmentation changes nothing; the run's own number wins."""
    from core.augment import AugmentConfig
    from core.training.finetune_cached import ACTIVATION_BUDGET_MIB, MAX_DEFAULT_COPIES, finetune_copies

    assert finetune_copies(TrainConfig(mode="finetune")) == MAX_DEFAULT_COPIES == 9  # 10 epochs by default
    assert finetune_copies(TrainConfig(mode="finetune", finetune_epochs=3)) == 2
    assert finetune_copies(TrainConfig(mode="finetune", finetune_epochs=1)) == 1
    assert finetune_copies(TrainConfig(mode="finetune", finetune_epochs=50)) == 9
    assert finetune_copies(TrainConfig(mode="finetune", augment_copies=3)) == 3
    assert finetune_copies(TrainConfig(mode="finetune", augment=AugmentConfig(enabled=False))) == 0
    per_image = 7 * 7 * 192 * 2  # Lite0's activations at its cut, float16
    assert finetune_copies(TrainConfig(mode="finetune"), 150, per_image) == 9  # a few-shot dataset: 26 MiB
    many = 10_000  # 10 versions would be 1.8 GiB: as many as fit in the budget
    k = finetune_copies(TrainConfig(mode="finetune"), many, per_image)
    assert (k + 1) * many * per_image <= ACTIVATION_BUDGET_MIB * 2**20 < (k + 2) * many * per_image
    assert finetune_copies(TrainConfig(mode="finetune"), 10**7, per_image) == 1  # never fewer than one copy
