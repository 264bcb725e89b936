"""The networks made to be trained: NPR as its authors build it, the CIFAKE-size CNN, and the
checks of a backbone's `training` section."""

import keras
import numpy as np
import pytest

from conftest import backbone_config
from pipeline.core.errors import ConfigError
from pipeline.models import networks
from pipeline.models.backbones import Backbone, build_extractor

IMAGENET_MEAN, IMAGENET_STD = np.array(networks.IMAGENET_MEAN), np.array(networks.IMAGENET_STD)


def npr_spec(**values):
    return backbone_config("npr", **values)


def test_npr_has_the_authors_parameter_count():
    """ResNet-50's stem and first two stages: 1,437,248 trainable parameters, which with the
    authors' fc1 (512 -> 1) are the 1,437,761 of their resnet50(num_classes=1)."""
    model = build_extractor(Backbone.from_spec(npr_spec(input_size=32)))
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == 1_437_248 and model.output_shape == (None, 512)


def test_npr_stages_divide_the_side_as_resnet50s_do():
    model = build_extractor(Backbone.from_spec(npr_spec(input_size=224)))
    sizes = {layer.name: layer.output.shape[1] for layer in model.layers}
    assert (sizes["stem_pool"], sizes["layer1_2_add"], sizes["layer2_3_add"]) == (56, 56, 28)


def reference_residual(pixels: np.ndarray) -> np.ndarray:
    """The authors' NPR input in NumPy: normalised x minus its nearest x0.5-then-x2 copy, x 2/3
    (PyTorch's nearest x0.5 keeps the pixel at 2i, 2j; x2 repeats it), for even sides."""
    x = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    resampled = x[:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)
    return (x - resampled) * 2 / 3


@pytest.mark.parametrize("size", [8, 32])
def test_neighbour_residual_is_the_authors(size):
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(networks.NeighbourResidual()(pixels))
    np.testing.assert_allclose(ours, reference_residual(pixels), atol=1e-5)


def test_neighbour_residual_of_an_odd_side_keeps_the_size():
    """The authors' code fails on an odd side; here the last row and column form cells of
    their own, which their formula gives on the image padded by repeating its edge."""
    pixels = np.random.default_rng(1).integers(0, 256, (1, 9, 9, 3)).astype(np.float32)
    padded = np.pad(pixels, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    ours = keras.ops.convert_to_numpy(networks.NeighbourResidual()(pixels))
    np.testing.assert_allclose(ours, reference_residual(padded)[:, :9, :9], atol=1e-5)


def test_stride_two_convolutions_sample_the_grid_pytorch_samples():
    """PyTorch pads a 3x3 stride-2 convolution by one pixel on every side, so its outputs sit
    on the even pixels; Keras' "same" would put them on the odd ones. A kernel that copies its
    centre shows which."""
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, networks._conv(inputs, 1, 3, 2, "probe"))
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1
    model.get_layer("probe").set_weights([kernel])
    image = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    np.testing.assert_array_equal(model(image).numpy()[0, ..., 0], image[0, ::2, ::2, 0])


def test_cnn_depth_and_width_come_from_config():
    spec = backbone_config("cnn", input_size=32, widths=[8, 16], convs_per_stage=3, dense=24)
    model = build_extractor(Backbone.from_spec(spec))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [8, 8, 8, 16, 16, 16]
    assert model.output_shape == (None, 24)


@pytest.mark.parametrize("size", [32, 48, 96])
def test_both_networks_take_any_size_from_32(size):
    for spec in (npr_spec(input_size=size), backbone_config("cnn", input_size=size)):
        model = build_extractor(Backbone.from_spec(spec))
        images = np.zeros((2, size, size, 3), np.uint8)
        assert model(images).shape[0] == 2


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("npr", {"input_size": 8}, "input_size must be at least 16"),
        ("cnn", {"input_size": 4}, "input_size must be at least 8"),
        ("npr", {"weights": "imagenet"}, "no pretrained weights exist"),
        ("cnn", {"widths": []}, "widths must be a list"),
        ("cnn", {"convs_per_stage": 0}, "convs_per_stage"),
    ],
)
def test_bad_network_settings_are_refused(name, values, message):
    with pytest.raises(ConfigError, match=message):
        Backbone.from_spec(backbone_config(name, **values))


def with_training(name, **values):
    spec = backbone_config(name)
    return {**spec, "training": {**spec["training"], **values}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (with_training("npr", mode="distill"), "allowed values: 'frozen', 'finetune', 'scratch'"),
        (with_training("npr", learning_rate=0), "learning_rate is 0: it must be a number above 0"),
        (with_training("npr", epochs=0), "epochs is 0: it must be a whole number >= 1"),
        (with_training("vgg16", unfreeze="most"), "unfreeze is 'most'.*or 'all'"),
        (with_training("cnn", workers=0), "workers is 0"),
        (with_training("cnn", schedule="step"), "schedule is 'step'; allowed values"),
        (with_training("cnn", shuffle=True), "training key is 'shuffle'; allowed values"),
        (with_training("cnn", augment={"flip": 0.5}), "augment lacks crop"),
        (
            with_training(
                "cnn",
                augment={**backbone_config("cnn")["training"]["augment"], "jpeg_quality": [90, 30]},
            ),
            "jpeg_quality is \\[90, 30\\]: give a \\[low, high\\] pair",
        ),
        (
            {**backbone_config("spectrum"), "training": {"mode": "scratch"}},
            "spectrum.training.mode is 'scratch'; allowed values: 'frozen'",
        ),
    ],
)
def test_bad_training_settings_fail_before_any_work(spec, message):
    with pytest.raises(ConfigError, match=message):
        Backbone.from_spec(spec)


def test_every_trainable_backbone_of_the_configs_has_a_complete_training_section():
    for name in ("inceptionv3", "vgg16", "npr", "cnn"):
        Backbone.from_spec(backbone_config(name, weights=None))
