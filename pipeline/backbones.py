"""Frozen keras.applications backbones, each with its own preprocess_input inside the model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras


@dataclass(frozen=True)
class Application:
    build: Any
    preprocess: Any
    notop_weights_file: str  # the file name Keras caches ImageNet weights under
    min_size: int


APPLICATIONS: dict[str, Application] = {
    "inceptionv3": Application(
        keras.applications.InceptionV3,
        keras.applications.inception_v3.preprocess_input,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        75,
    ),
    "vgg16": Application(
        keras.applications.VGG16,
        keras.applications.vgg16.preprocess_input,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        32,
    ),
}

OFFLINE_ENV = "AIIC_OFFLINE"


class MissingWeights(SystemExit):
    """ImageNet weights are neither cached nor downloadable: a one-paragraph explanation."""


@keras.saving.register_keras_serializable(package="aiic")
class Preprocess(keras.layers.Layer):
    """Applies the backbone's own `preprocess_input` to RGB pixels in 0..255."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, images: Any) -> Any:
        return APPLICATIONS[self.backbone].preprocess(keras.ops.cast(images, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def _application(name: str) -> Application:
    if name not in APPLICATIONS:
        raise SystemExit(f"Unknown backbone {name!r}; known: {', '.join(APPLICATIONS)}.")
    return APPLICATIONS[name]


def _missing_weights(name: str, cause: object) -> MissingWeights:
    file = _application(name).notop_weights_file
    return MissingWeights(
        f"Cannot load the ImageNet weights of {name}: the file {file} is not in Keras' cache "
        f"folder {keras_cache_dir()} and could not be downloaded ({cause}). Copy that file into "
        f"{keras_cache_dir()}/ (from any machine where keras.applications has downloaded it), or "
        f"set backbones.{name}.weights to the path of a local .h5 file, or set it to null to run "
        "with random weights (for tests and smoke runs: features from a random network are far "
        "weaker)."
    )


def _resolve_weights(name: str, weights: str | None) -> str | None:
    if weights is None:
        return None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise SystemExit(f"backbones.{name}.weights: no such weights file: {weights}")
        return weights
    cached = keras_cache_dir() / _application(name).notop_weights_file
    if not cached.is_file() and os.environ.get(OFFLINE_ENV):
        raise _missing_weights(name, f"{OFFLINE_ENV} is set")
    return "imagenet"


def build_extractor(name: str, input_size: int, weights: str | None) -> keras.Model:
    """Frozen backbone without its top, global-average pooled: RGB 0..255 in, one vector out."""
    application = _application(name)
    if input_size < application.min_size:
        raise SystemExit(f"{name} needs input_size >= {application.min_size}, got {input_size}")
    resolved = _resolve_weights(name, weights)
    try:
        backbone = application.build(
            include_top=False,
            weights=resolved,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
        )
    except Exception as error:  # Keras raises a bare Exception when a download fails
        if resolved == "imagenet" and "fetch failure" in str(error).lower():
            raise _missing_weights(name, error) from error
        raise
    backbone.trainable = False
    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    features = backbone(Preprocess(name)(inputs), training=False)
    return keras.Model(inputs, features, name=f"{name}_features")
