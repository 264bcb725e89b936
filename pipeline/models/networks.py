"""Networks made to be trained on images rather than used frozen: NPR and a CIFAKE-size CNN.

Each is a Keras functional graph from RGB pixels (0..255) to one feature vector per image, with
its preprocessing inside, built by pipeline.models.backbones' extractors `npr` and `cnn` like any
other backbone; the training stage puts the head on top and trains the whole
(pipeline.models.training).

NPR (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network for
Generalizable Deepfake Detection", CVPR 2024), as the authors' code builds it
(chuangchuangtan/NPR-DeepfakeDetection, networks/resnet.py): the image normalised with
ImageNet's mean and standard deviation, minus its nearest-neighbour x0.5 then x2 resampling,
times 2/3, into ResNet-50's stem with a 3x3 stride-2 first convolution, max pooling and ResNet-50's
first two stages of bottleneck blocks only (3 and 4 blocks, stride in the 3x3 convolution as
torchvision's ResNet v1.5), global average pooling: 512 features. docs/trained-networks.md lists
what matches their code and what does not.

The CNN is the small convolutional network of the CIFAKE paper's kind (Bird & Lotfi, IEEE Access
2024: two 3x3 convolutions of 32 filters with max pooling, a dense layer), with its widths and
depth from config, batch normalisation, and global average pooling so that any input size from
its minimum up gives the same features.
"""

from __future__ import annotations

from typing import Any

import keras

# ImageNet's statistics of RGB in 0..1, as the authors' data pipeline normalises (torchvision's
# transforms.Normalize in data/datasets.py)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NPR_SCALE = 2.0 / 3.0  # the authors' `self.conv1(NPR*2.0/3.0)`
NPR_STAGES = ((64, 3, 1), (128, 4, 2))  # ResNet-50's layer1 and layer2: width, blocks, stride
EXPANSION = 4  # a bottleneck block's output is four times its width
# PyTorch's BatchNorm2d defaults (momentum 0.1 of the new statistic, eps 1e-5), which the authors'
# network trains with; Keras' momentum is the share of the old statistic.
BATCH_NORM = {"momentum": 0.9, "epsilon": 1e-5}
# torchvision's ResNet initialises convolutions with kaiming_normal_(mode="fan_out", relu)
CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


@keras.saving.register_keras_serializable(package="aiic")
class NeighbourResidual(keras.layers.Layer):
    """NPR's input: the normalised image minus its nearest-neighbour x0.5 then x2 resampling,
    times 2/3. PyTorch's nearest x0.5 keeps the top-left pixel of every 2x2 cell and x2 repeats
    it, so each pixel becomes its difference from the top-left pixel of its cell. An odd side's
    last row or column forms a cell of its own (the authors' code requires even sides)."""

    def call(self, images: Any) -> Any:
        mean = keras.ops.convert_to_tensor(IMAGENET_MEAN)
        std = keras.ops.convert_to_tensor(IMAGENET_STD)
        x = (keras.ops.cast(images, "float32") / 255.0 - mean) / std
        height, width = x.shape[1], x.shape[2]
        anchors = x[:, ::2, ::2, :]
        repeated = keras.ops.repeat(keras.ops.repeat(anchors, 2, axis=1), 2, axis=2)
        return (x - repeated[:, :height, :width, :]) * NPR_SCALE

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


def _conv(x: Any, filters: int, size: int, stride: int, name: str) -> Any:
    """A bias-free convolution padded as PyTorch pads it (size // 2 on every side): Keras' "same"
    pads a stride-2 convolution on the bottom and right only, which shifts its grid by a pixel."""
    if stride > 1 and size > 1:
        x = keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters,
        size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INIT,
        name=name,
    )(x)


def _batch_norm(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(**BATCH_NORM, name=name)(x)


def _bottleneck(x: Any, width: int, stride: int, name: str) -> Any:
    """ResNet-50's bottleneck block, stride in the 3x3 convolution (torchvision's v1.5)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != width * EXPANSION:
        shortcut = _conv(x, width * EXPANSION, 1, stride, f"{name}_down")
        shortcut = _batch_norm(shortcut, f"{name}_down_bn")
    y = keras.layers.ReLU()(_batch_norm(_conv(x, width, 1, 1, f"{name}_conv1"), f"{name}_bn1"))
    y = keras.layers.ReLU()(_batch_norm(_conv(y, width, 3, stride, f"{name}_conv2"), f"{name}_bn2"))
    y = _batch_norm(_conv(y, width * EXPANSION, 1, 1, f"{name}_conv3"), f"{name}_bn3")
    return keras.layers.ReLU()(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def npr(inputs: Any) -> Any:
    """NPR's features (512) of RGB pixels in 0..255."""
    x = NeighbourResidual(name="npr_residual")(inputs)
    x = keras.layers.ReLU()(_batch_norm(_conv(x, 64, 3, 2, "stem_conv"), "stem_bn"))
    # PyTorch pads max pooling with -inf; after the ReLU every value is >= 0, so zeros are alike
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, (width, blocks, stride) in enumerate(NPR_STAGES, start=1):
        for block in range(blocks):
            x = _bottleneck(x, width, stride if block == 0 else 1, f"layer{stage}_{block}")
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


NPR_MIN_SIZE = 16  # the stem and the second stage divide each side by 8: a 2x2 map at least


def cnn(inputs: Any, widths: list[int], convs_per_stage: int, dense: int) -> Any:
    """A small VGG-style network: per width, `convs_per_stage` 3x3 convolutions with batch
    normalisation and ReLU, then 2x2 max pooling; global average pooling; a dense ReLU layer of
    `dense` units (0: none). Its features: the pooled or dense output."""
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    for stage, width in enumerate(widths, start=1):
        for conv in range(convs_per_stage):
            x = _conv(x, width, 3, 1, f"stage{stage}_conv{conv + 1}")
            x = keras.layers.ReLU()(_batch_norm(x, f"stage{stage}_bn{conv + 1}"))
        x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dense:
        x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    return x


def cnn_min_size(widths: list[int]) -> int:
    """Each stage halves both sides: the smallest input that leaves a 1x1 map."""
    return 2 ** len(widths)
