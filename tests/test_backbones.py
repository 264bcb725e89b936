import warnings

import keras
import numpy as np
import pytest

from conftest import backbone_config, make_image_folder
from pipeline.backbones import EXTRACTORS, Preprocess, extractor_from_spec
from pipeline.errors import ConfigError, MissingWeights
from pipeline.images import INPUT_MODES, load_for_model
from pipeline.runtime import extract


def build(name: str, input_size: int, weights: str | None = None, **values: object):
    return extractor_from_spec(
        backbone_config(name, input_size=input_size, weights=weights, **values)
    )


def test_missing_imagenet_weights_fail_with_one_clear_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("AIIC_OFFLINE", "1")
    with pytest.raises(MissingWeights) as error:
        build("vgg16", 32, "imagenet")
    message = str(error.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "backbones.vgg16.weights" in message and "null" in message and "\n" not in message


def test_local_weights_path_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="no such weights file"):
        build("vgg16", 32, str(tmp_path / "nope.h5"))


def test_unknown_application_key_extractor_and_too_small_input_are_explained():
    with pytest.raises(ConfigError, match="application is 'ResNet'; allowed values: .*'ResNet50'"):
        build("vgg16", 224, application="ResNet")
    with pytest.raises(ConfigError, match="backbones.vgg16 key is 'units'; allowed values"):
        build("vgg16", 224, units=3)
    with pytest.raises(ConfigError, match="extractor is 'fourier'; allowed values: 'keras_app"):
        build("spectrum", 32, extractor="fourier")
    with pytest.raises(ConfigError, match="backbones.inceptionv3: .*at least 75"):
        build("inceptionv3", 32)


@pytest.mark.parametrize(("name", "expected"), [("InceptionV3", -1.0), ("VGG16", -103.939)])
def test_preprocess_layer_is_each_backbones_own(name, expected):
    black = np.zeros((1, 2, 2, 3), np.float32)
    out = keras.ops.convert_to_numpy(Preprocess(name)(black))
    assert out[0, 0, 0, 0] == pytest.approx(expected)  # vgg16: BGR, ImageNet mean removed


def test_streamed_features_equal_a_direct_model_call(tmp_path):
    """The features stage's decode path gives what the model gives on the same decoded images."""
    folder = make_image_folder(tmp_path / "images", per_class=3)
    paths = sorted(str(p) for p in folder.rglob("*.png")) + [str(tmp_path / "missing.png")]
    model = build("vgg16", 32)
    reasons = extract(model, paths, 32, 4, tmp_path / "features.npy")
    features = np.load(tmp_path / "features.npy")
    assert reasons.tolist() == [""] * 6 + ["missing"]
    direct = model.predict(np.stack([load_for_model(p, 32) for p in paths[:6]]), verbose=0)
    np.testing.assert_allclose(features[:6], direct, rtol=1e-5, atol=1e-5)


def test_bfloat16_extractor_keeps_float32_weights_and_output_close_to_float32(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    full = build("vgg16", 32)
    keras.utils.set_random_seed(0)
    mixed = build("vgg16", 32, precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert {w.dtype for w in mixed.weights} == {"float32"}
    out = keras.ops.convert_to_numpy(mixed(images))
    assert out.dtype == np.float32
    reference = keras.ops.convert_to_numpy(full(images))
    cosine = (
        (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() > 0.999 and not np.array_equal(out, reference)  # bfloat16 did compute
    mixed.save(tmp_path / "mixed.keras")
    reloaded = keras.saving.load_model(tmp_path / "mixed.keras", safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(images)), out)


def test_precision_is_checked():
    with pytest.raises(ConfigError, match="precision is 'float16'; allowed .*'float32', 'bf"):
        build("vgg16", 32, precision="float16")
    with pytest.raises(ConfigError, match="spectrum.precision is 'bfloat16'; allowed .*'float32'"):
        build("spectrum", 32, precision="bfloat16")


def test_mixed_float16_is_warned_about_without_a_gpu_and_still_computes(monkeypatch):
    """A params.yaml written for a GPU machine must still reproduce on a CPU-only one."""
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    full = build("vgg16", 32)
    monkeypatch.setattr("pipeline.backend.gpus", lambda: [])
    keras.utils.set_random_seed(0)
    with pytest.warns(UserWarning, match="mixed_float16, meant for a GPU.s float16 units, but"):
        half = build("vgg16", 32, precision="mixed_float16")
    assert {w.dtype for w in half.weights} == {"float32"}
    out = keras.ops.convert_to_numpy(half(images))
    reference = keras.ops.convert_to_numpy(full(images))
    assert out.dtype == np.float32 and not np.array_equal(out, reference)  # float16 did compute
    cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, 1)
    assert cosine.min() > 0.999
    monkeypatch.setattr("pipeline.backend.gpus", lambda: ["/physical_device:GPU:0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("vgg16", 32, precision="mixed_float16")


def test_every_extractor_names_an_input_mode_with_its_description():
    for kind in EXTRACTORS.values():
        assert kind.input_mode in INPUT_MODES, kind
        assert "input_size" in INPUT_MODES[kind.input_mode].description
