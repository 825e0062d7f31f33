"""Training modes end to end on real images and the real EfficientNet-Lite0; the feature cache; the export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import TrainConfig
from core.engine import execute_run
from core.features import FeatureCache, extract_features
from core.runs import create_run, get_run

RUN_FILES = {"config.json", "status.json", "history.csv", "metrics.json", "model.keras", "labels.json",
             "predictions.csv", "split.json"}


def _train(data: Path, out: Path, **settings) -> tuple[dict, Path]:
    run = create_run(TrainConfig(data=str(data), **settings), out)
    status = execute_run(run)
    assert status.state == "done", status
    return json.loads((out / "metrics.json").read_text()), out


def test_bottleneck_run_writes_its_folder_and_learns(workspace, tiny_dataset, tmp_path):
    metrics, out = _train(tiny_dataset, tmp_path / "run", mode="bottleneck", epochs=20, val_split=0.25)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert metrics["val_accuracy"] >= 0.8  # three colours: trivially separable with ImageNet features
    assert metrics["n_extracted"] == 24 and metrics["n_train"] == 20 and metrics["n_val"] == 4
    assert metrics["test_accuracy"] is None and metrics["classes"] == ["blue", "green", "red"]
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[:5]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["mode"] == "bottleneck" and "tensorflow" in config["versions"]
    assert json.loads((out / "labels.json").read_text()) == ["blue", "green", "red"]
    # A small dataset is cross-validated after the results (features from the cache): every training and
    # validation photo judged once by a head that never saw it.
    cv = metrics["cross_validation"]
    assert cv["k"] == 5 and cv["n_photos"] == 24 and 0 <= cv["accuracy_std"] <= 1 and cv["accuracy_mean"] >= 0.8
    oof = get_run(out).oof()
    assert len(oof) == 24 and {"path", "label", "p_blue", "p_green", "p_red"} <= set(oof.columns)
    assert metrics["saved_model"]["stage"] == "bottleneck" and metrics["saved_model"]["n_val"] == 4


def test_cache_hit_extracts_nothing_and_new_content_only(workspace, tiny_dataset, tmp_path, make_image):
    first, _ = _train(tiny_dataset, tmp_path / "a", mode="bottleneck", epochs=2)
    second, _ = _train(tiny_dataset, tmp_path / "b", mode="bottleneck", epochs=2)
    assert first["n_extracted"] == 24 and second["n_extracted"] == 0
    # Relabel one image (a move: same content) and add one new image: only the new one is extracted.
    (tiny_dataset / "red" / "img_0.png").rename(tiny_dataset / "green" / "moved.png")
    make_image(tiny_dataset / "blue" / "new.png", (30, 30, 230), seed=77)
    third, _ = _train(tiny_dataset, tmp_path / "c", mode="bottleneck", epochs=2)
    assert third["n_extracted"] == 1


def test_corrupt_cache_entry_is_recomputed(workspace, tiny_dataset):
    paths = sorted(tiny_dataset.rglob("*.png"))[:3]
    cache_root = workspace / "cache" / "features"
    first = extract_features(paths, "efficientnet_lite0", cache_root)
    entry = next(cache_root.rglob("*.npy"))
    entry.write_bytes(b"garbage")
    again = extract_features(paths, "efficientnet_lite0", cache_root)
    assert again.n_extracted == 1
    np.testing.assert_allclose(again.features, first.features, atol=1e-5)
    assert len(FeatureCache(cache_root, "efficientnet_lite0", 224)) == 3


def test_finetune_starts_from_the_head_and_trains_the_top_block(workspace, tiny_dataset, tmp_path):
    peak = 1e-4  # 10x below the head's Adam step (TrainConfig.lr), to tell the two apart
    metrics, out = _train(tiny_dataset, tmp_path / "ft", mode="finetune", epochs=5, finetune_epochs=1,
                          batch_size=8, early_stopping=False, finetune_lr=peak)
    history = pd.read_csv(out / "history.csv")
    assert history["stage"].tolist() == ["bottleneck"] * 5 + ["finetune"]
    # The fine-tune's learning rate (its peak, then cosine decay towards 0 by the last step), not the head's.
    assert 0 < history["lr"].iloc[-1] <= 0.6 * peak
    # The fine-tuned model starts from the trained head, so it is good from its first epoch.
    assert history["val_accuracy"].iloc[-1] >= 0.8
    assert metrics["mode"] == "finetune" and (out / "head_bottleneck.weights.h5").exists()


def test_finetune_from_a_bottleneck_run(workspace, tiny_dataset, tmp_path):
    _, base = _train(tiny_dataset, tmp_path / "base", mode="bottleneck", epochs=10)
    metrics, out = _train(tiny_dataset, tmp_path / "ft", mode="finetune", finetune_epochs=1, batch_size=8,
                          from_run=str(base))
    history = pd.read_csv(out / "history.csv")
    assert history["stage"].tolist() == ["finetune"] and metrics["n_extracted"] == 0
    assert history["val_accuracy"].iloc[0] >= 0.8  # the head came trained from the source run


def test_scratch_trains_the_small_convnet(workspace, tiny_dataset, tmp_path):
    metrics, out = _train(tiny_dataset, tmp_path / "s", mode="scratch", epochs=3, batch_size=8)
    assert metrics["backbone"] is None and metrics["input_size"] == 150 and metrics["n_extracted"] == 0
    assert len(pd.read_csv(out / "history.csv")) == 3


def test_two_classes_use_a_sigmoid_and_export_two_columns(workspace, tmp_path, make_dataset):
    data = make_dataset(tmp_path / "two", {"cats": (200, 120, 40), "dogs": (40, 90, 200)}, per_class=6)
    metrics, out = _train(data, tmp_path / "r", mode="bottleneck", epochs=5)
    from core.export import load_model, predict_files
    model = load_model(out / "model.keras")
    assert model.get_layer("classifier").get_layer("head").output_shape[-1] == 1
    probs, _ = predict_files(model, sorted(data.rglob("*.png"))[:4])
    assert probs.shape == (4, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_exported_model_in_a_fresh_process_predicts_what_the_engine_predicts(demo_run):
    """model.keras loaded with plain Keras, no project code, in another process: same probabilities."""
    frame = pd.read_csv(demo_run / "predictions.csv")
    labels = json.loads((demo_run / "labels.json").read_text())
    sample = frame[frame["split"] == "val"].head(6)
    script = f"""
import json, sys, numpy as np, keras
from PIL import Image, ImageOps
model = keras.saving.load_model({str(demo_run / 'model.keras')!r})
paths = {sample['path'].tolist()!r}
out = []
for p in paths:
    img = Image.open(p); img.draft("RGB", (448, 448)); img = ImageOps.exif_transpose(img).convert("RGB")
    out.append(model.predict(np.asarray(img, np.float32)[None], verbose=0)[0].tolist())
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd="/", env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    expected = sample[[f"p_{c}" for c in labels]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert metrics["export_check"]["same_top1"] == 1.0 and metrics["export_check"]["max_abs_diff"] < 1e-4


def test_demo_bottleneck_accuracy(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.93
    assert len(metrics["confusion"]) == 4 and sum(map(sum, metrics["confusion"])) == metrics["n_val"]


def test_tflite_export_matches_keras(demo_run, tmp_path):
    from core.export import export_tflite, load_model
    from core.images import load_resized
    from core.tfenv import tf

    out = export_tflite(demo_run / "model.keras", tmp_path / "model.tflite")
    interpreter = tf.lite.Interpreter(model_path=str(out))
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    path = pd.read_csv(demo_run / "predictions.csv")["path"].iloc[0]
    x = load_resized(path, 224)[None].astype(np.float32)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(outp["index"])
    keras_out = load_model(demo_run / "model.keras")(x, training=False).numpy()
    np.testing.assert_allclose(lite, keras_out, atol=1e-4)


def test_a_reused_head_starts_from_the_weights_a_new_one_gets(workspace):
    """The bottleneck path keeps one Keras head per shape and resets it: the same start as building a new one after
    seeding, whatever ran before it in the process (here: a head of another seed, then a trained one)."""
    from core.config import TrainConfig
    from core.models import build_head
    from core.tfenv import keras
    from core.training.stages import fresh_head

    for seed in (3, 0, 3):
        cfg = TrainConfig(seed=seed, dense_units=8, dropout=0.5)
        head = fresh_head(16, 3, cfg, reuse=True)
        keras.utils.set_random_seed(seed)
        expected = build_head(16, 3, 8, 0.5).get_weights()
        assert all((a == b).all() for a, b in zip(head.get_weights(), expected))
        head.set_weights([w + 1 for w in head.get_weights()])  # as training would change it


def test_the_numpy_head_takes_the_step_keras_would(workspace):
    """core.training.head trains the head in NumPy: with dropout off, a few Adam steps on a weighted batch land
    where Keras' Adam on the Keras head, with the loss Keras computes, lands (softmax and sigmoid heads)."""
    from core.models import build_head
    from core.tfenv import keras, tf
    from core.training.head import _Head

    rng = np.random.default_rng(0)
    for n_classes in (3, 2):
        keras.utils.set_random_seed(1)
        head = build_head(12, n_classes, 8, 0.0)
        net = _Head(head)
        x = rng.normal(size=(6, 12)).astype(np.float32)
        y = np.arange(6) % n_classes
        w = np.array([1.0, 2.0, 0.5, 1.0, 1.5, 1.0], np.float32)
        loss_fn = keras.losses.BinaryCrossentropy() if n_classes == 2 else keras.losses.SparseCategoricalCrossentropy()
        optimizer = keras.optimizers.Adam(1e-2)
        for _ in range(3):
            net.train_step(x, y, w, 1e-2, rng)
            with tf.GradientTape() as tape:
                target = y.reshape(-1, 1).astype(np.float32) if n_classes == 2 else y
                loss = loss_fn(target, head(x, training=True), sample_weight=w)
            optimizer.apply_gradients(zip(tape.gradient(loss, head.trainable_variables), head.trainable_variables))
        for ours, theirs in zip(net.weights, head.get_weights()):
            np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_history_of_fast_epochs_is_written_in_batches_and_complete_at_the_end(workspace, tmp_path):
    from core.reporting import Reporter

    run = create_run(TrainConfig(data=str(tmp_path)), tmp_path / "run")
    reporter = Reporter(run, history_interval=3600)
    for epoch in range(1, 6):
        reporter.epoch({"epoch": epoch, "stage": "bottleneck", "loss": 1.0 / epoch, "accuracy": 0.5, "val_loss": None,
                        "val_accuracy": None, "lr": 0.001, "seconds": 0.01})
    assert run.history()["epoch"].tolist() == [1]  # the first at once, the rest held back …
    reporter.finish()
    assert run.history()["epoch"].tolist() == [1, 2, 3, 4, 5]  # … and written when the training ends
