import dataclasses
import pickle
import types
import warnings

import keras
import numpy as np
import pytest

from conftest import backbone_config, make_image_folder
from pipeline.core.errors import ConfigError, MissingWeights
from pipeline.data.images import INPUT_MODES, load_for_model
from pipeline.models.backbones import (
    EXTRACTORS,
    Backbone,
    Preprocess,
    application_names,
    build_extractor,
    imagenet_weights_file,
)
from pipeline.models.runtime import extract


def build(name: str, input_size: int, weights: str | None = None, **values: object):
    return build_extractor(
        Backbone.from_spec(backbone_config(name, input_size=input_size, weights=weights, **values))
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


def keras_asks_for(monkeypatch, application_name: str, size: int) -> str:
    """The weights file a keras.applications model asks Keras' get_file for (that private
    function patched here, in a test only, to learn the name without a download)."""
    from keras.src.utils import file_utils

    class Asked(Exception):
        pass

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", **kwargs):
        raise Asked(fname, cache_subdir)

    monkeypatch.setattr(file_utils, "get_file", get_file)
    constructor = getattr(keras.applications, application_name)
    with pytest.raises(Asked) as asked, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MobileNet's: no weights at this size, 224's instead
        constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
    file, cache_subdir = asked.value.args
    assert cache_subdir == "models"
    return file


@pytest.mark.parametrize(
    ("application_name", "size"),
    [
        ("VGG16", 32),
        ("InceptionV3", 75),
        ("MobileNet", 160),  # a size it has weights for
        ("MobileNet", 40),  # one it has not: 224's
        ("MobileNetV2", 96),
        ("MobileNetV3Small", 32),
        ("ResNet50V2", 32),
    ],
)
def test_the_weights_file_named_is_the_one_keras_asks_for(monkeypatch, application_name, size):
    assert imagenet_weights_file(application_name, size) == keras_asks_for(
        monkeypatch, application_name, size
    )


@pytest.mark.slow  # builds every keras.applications model: minutes
def test_every_applications_weights_file_is_named_as_keras_names_it(monkeypatch):
    sizes = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
    for name in application_names():
        size = sizes.get(name, 32)
        assert imagenet_weights_file(name, size) == keras_asks_for(monkeypatch, name, size), name


def test_weights_in_keras_cache_load_offline_without_asking_keras_for_a_download(
    tmp_path, monkeypatch
):
    import h5py

    keras.utils.set_random_seed(3)
    trained = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    # The legacy HDF5 layout of keras.applications' weights files: per layer with weights, a
    # group listing its weights' names
    with h5py.File(cache / imagenet_weights_file("VGG16", 32), "w") as file:
        layers = [layer for layer in trained.layers if layer.weights]
        file.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            names = [f"{layer.name}_{i}" for i in range(len(layer.weights))]
            group = file.create_group(layer.name)
            group.attrs["weight_names"] = [name.encode() for name in names]
            for name, weight in zip(names, layer.weights, strict=True):
                group.create_dataset(name, data=weight.numpy())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("AIIC_OFFLINE", "1")
    from keras.src.utils import file_utils

    def no_download(*args, **kwargs):
        raise AssertionError("keras.applications was left to fetch the weights itself")

    monkeypatch.setattr(file_utils, "get_file", no_download)
    keras.utils.set_random_seed(4)  # a network built afresh would have other weights
    loaded = build("vgg16", 32, "imagenet").get_layer("vgg16")
    for expected, actual in zip(trained.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_a_failed_download_names_the_missing_file(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def unreachable(fname=None, origin=None, *args, **kwargs):  # as Keras' get_file reports it
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", unreachable)  # no download is even tried
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("AIIC_OFFLINE")
    with pytest.raises(MissingWeights) as error:
        build("vgg16", 32, "imagenet")
    message = str(error.value)
    assert "the file vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 is not" in message
    assert "URL fetch failure" in message and "backbones.vgg16.weights" in message


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
    monkeypatch.setattr("pipeline.models.backend.gpus", lambda: [])
    keras.utils.set_random_seed(0)
    with pytest.warns(UserWarning, match="mixed_float16, meant for a GPU.s float16 units, but"):
        half = build("vgg16", 32, precision="mixed_float16")
    assert {w.dtype for w in half.weights} == {"float32"}
    out = keras.ops.convert_to_numpy(half(images))
    reference = keras.ops.convert_to_numpy(full(images))
    assert out.dtype == np.float32 and not np.array_equal(out, reference)  # float16 did compute
    cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, 1)
    assert cosine.min() > 0.999
    monkeypatch.setattr("pipeline.models.backend.gpus", lambda: ["/physical_device:GPU:0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("vgg16", 32, precision="mixed_float16")


def test_every_extractor_names_an_input_mode_with_its_description():
    for kind in EXTRACTORS.values():
        assert kind.input_mode in INPUT_MODES, kind
        assert "input_size" in INPUT_MODES[kind.input_mode].description


def test_a_backbone_is_read_only_and_pickles_as_ray_hands_it_to_its_actors():
    backbone = Backbone.from_spec(backbone_config("cnn", input_size=16, weights=None))
    assert (backbone.name, backbone.input_mode, backbone.training_mode) == (
        "cnn",
        "resize",
        "scratch",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        backbone.input_size = 64
    with pytest.raises(TypeError):
        backbone.settings["widths"] = [4]
    again = pickle.loads(pickle.dumps(backbone))
    assert again == backbone and isinstance(again.settings, types.MappingProxyType)
    assert again.kind is backbone.kind  # the registry's own extractor kind
    random = dataclasses.replace(backbone, weights=None)
    assert random.settings == backbone.settings and random.kind is backbone.kind


@pytest.mark.parametrize("name", ["spectrum", "cnn"])
def test_the_features_stage_checks_its_backbone_once(tmp_path, monkeypatch, name):
    """From params.yaml to its outputs (augmented copies and, for the cnn, a training included),
    the features stage checks its backbone where it starts; all below it takes that Backbone."""
    import pandas as pd
    import yaml

    from conftest import compose_params
    from pipeline.core import paths
    from pipeline.models import backbones
    from pipeline.stages import features

    monkeypatch.chdir(tmp_path)
    params = compose_params("augment.copies=1")
    spec = {**params["backbones"][name], "input_size": 16, "batch_size": 4}
    if name == "cnn":
        spec["widths"] = [4]
        spec["training"] = {**spec["training"], "epochs": 1, "batch_size": 4, "crossgen": False}
    params["backbones"], params["backbone"] = {name: spec}, {"name": name}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    images = sorted(make_image_folder(tmp_path / "images", per_class=3, size=24).rglob("*.png"))
    splits = pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(len(images))],
            "path": [str(path) for path in images],
            "label": [path.parent.name for path in images],
            "split": ["train", "train", "val"] * 2,
        }
    )
    paths.SPLITS.parent.mkdir(parents=True)
    splits.to_csv(paths.SPLITS, index=False)

    checked = []
    kind = backbones.EXTRACTORS[spec["extractor"]]
    original_check = kind.check
    monkeypatch.setattr(kind, "check", lambda spec: checked.append(spec) or original_check(spec))
    monkeypatch.setattr("sys.argv", ["features", name])
    features.main()
    assert len(checked) == 1
    assert (paths.features_dir(name) / paths.AUGMENTED_FILE).is_file()
