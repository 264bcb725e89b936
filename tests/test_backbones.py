import keras
import numpy as np
import pytest

from conftest import make_image_folder
from pipeline.backbones import MissingWeights, Preprocess, build_extractor
from pipeline.features import extract
from pipeline.images import load_for_model


def test_missing_imagenet_weights_fail_with_one_clear_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("AIIC_OFFLINE", "1")
    with pytest.raises(MissingWeights) as error:
        build_extractor("vgg16", 32, "imagenet")
    message = str(error.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "backbones.vgg16.weights" in message and "null" in message and "\n" not in message


def test_local_weights_path_must_exist(tmp_path):
    with pytest.raises(SystemExit, match="no such weights file"):
        build_extractor("vgg16", 32, str(tmp_path / "nope.h5"))


def test_unknown_backbone_and_too_small_input_are_explained():
    with pytest.raises(SystemExit, match="Unknown backbone 'resnet'"):
        build_extractor("resnet", 224, None)
    with pytest.raises(SystemExit, match="input_size >= 75"):
        build_extractor("inceptionv3", 32, None)


@pytest.mark.parametrize(("name", "expected"), [("inceptionv3", -1.0), ("vgg16", -103.939)])
def test_preprocess_layer_is_each_backbones_own(name, expected):
    black = np.zeros((1, 2, 2, 3), np.float32)
    out = keras.ops.convert_to_numpy(Preprocess(name)(black))
    assert out[0, 0, 0, 0] == pytest.approx(expected)  # vgg16: BGR, ImageNet mean removed


def test_streamed_features_equal_a_direct_model_call(tmp_path):
    """The features stage's decode path gives what the model gives on the same decoded images."""
    folder = make_image_folder(tmp_path / "images", per_class=3)
    paths = sorted(str(p) for p in folder.rglob("*.png")) + [str(tmp_path / "missing.png")]
    model = build_extractor("vgg16", 32, None)
    ok = extract(model, paths, 32, 4, tmp_path / "features.npy")
    features = np.load(tmp_path / "features.npy")
    assert ok.tolist() == [True] * 6 + [False]
    direct = model.predict(np.stack([load_for_model(p, 32) for p in paths[:6]]), verbose=0)
    np.testing.assert_allclose(features[:6], direct, rtol=1e-5, atol=1e-5)


def test_bfloat16_extractor_keeps_float32_weights_and_output_close_to_float32(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    full = build_extractor("vgg16", 32, None)
    keras.utils.set_random_seed(0)
    mixed = build_extractor("vgg16", 32, None, precision="bfloat16")
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
    with pytest.raises(SystemExit, match="float32 or bfloat16, got 'float16'"):
        build_extractor("vgg16", 32, None, precision="float16")
    with pytest.raises(SystemExit, match="spectrum.precision must be float32, got 'bfloat16'"):
        build_extractor("spectrum", 32, None, precision="bfloat16")
