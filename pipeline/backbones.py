"""Feature extractors: frozen keras.applications backbones and a weight-free frequency spectrum.

Each extractor is a Keras model from RGB pixels (0..255) to one feature vector per image, with its
preprocessing inside, so that the exported model is one self-contained file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

OFFLINE_ENV = "AIIC_OFFLINE"
RESIZE, CENTER_CROP = "resize", "center_crop"  # how an image becomes input_size x input_size
SPEC_KEYS = ("name", "weights", "input_size", "batch_size")  # the rest are extractor options


class MissingWeights(SystemExit):
    """ImageNet weights are neither cached nor downloadable: a one-paragraph explanation."""


@keras.saving.register_keras_serializable(package="aiic")
class Preprocess(keras.layers.Layer):
    """Applies a keras.applications backbone's own `preprocess_input` to RGB pixels in 0..255."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, images: Any) -> Any:
        return BACKBONES[self.backbone].preprocess(keras.ops.cast(images, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


def radial_bins(size: int, bins: int) -> np.ndarray:
    """(size*size, bins) matrix averaging an unshifted 2-D spectrum over rings of frequency.

    The DC term (mean brightness) is left out; rings run from the lowest frequency to the corner.
    """
    frequencies = np.fft.fftfreq(size) * size
    radius = np.hypot(frequencies[:, None], frequencies[None, :]).ravel()
    ring = np.minimum((radius / radius.max() * bins).astype(int), bins - 1)
    weights = np.zeros((size * size, bins), np.float32)
    weights[np.arange(size * size), ring] = radius > 0
    return weights / np.maximum(weights.sum(axis=0, keepdims=True), 1)


@keras.saving.register_keras_serializable(package="aiic")
class SpectrumFeatures(keras.layers.Layer):
    """Azimuthally averaged log power spectrum of the grayscale image, standardised per image.

    Up-sampling layers of image generators leave periodic traces that show up here (Durall et al.,
    CVPR 2020; Frank et al., ICML 2020; Corvi et al., ICASSP 2023).
    """

    def __init__(self, bins: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins

    def build(self, input_shape: tuple) -> None:
        self.size = int(input_shape[1])
        self.averaging = keras.ops.convert_to_tensor(radial_bins(self.size, self.bins))

    def call(self, images: Any) -> Any:
        luma = keras.ops.convert_to_tensor([0.299, 0.587, 0.114])
        gray = keras.ops.tensordot(keras.ops.cast(images, "float32"), luma, axes=1)
        real, imaginary = keras.ops.fft2((gray, keras.ops.zeros_like(gray)))
        log_power = keras.ops.log(real**2 + imaginary**2 + 1e-6)
        flat = keras.ops.reshape(log_power, (-1, self.size * self.size))
        profile = keras.ops.matmul(flat, self.averaging)
        mean = keras.ops.mean(profile, axis=1, keepdims=True)
        std = keras.ops.std(profile, axis=1, keepdims=True)
        return (profile - mean) / (std + 1e-6)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.bins)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bins": self.bins}


@dataclass(frozen=True)
class KerasApplication:
    constructor: Any
    preprocess: Any
    notop_weights_file: str  # the file name Keras caches ImageNet weights under
    min_size: int
    input_mode: str = RESIZE

    def features(self, name: str, inputs: Any, weights: str | None) -> Any:
        resolved = _resolve_weights(self, name, weights)
        try:
            backbone = self.constructor(
                include_top=False, weights=resolved, input_shape=inputs.shape[1:], pooling="avg"
            )
        except Exception as error:  # Keras raises a bare Exception when a download fails
            if resolved == "imagenet" and "fetch failure" in str(error).lower():
                raise _missing_weights(self, name, error) from error
            raise
        backbone.trainable = False
        return backbone(Preprocess(name)(inputs), training=False)


@dataclass(frozen=True)
class Spectrum:
    """Needs no weights and sees pixels at native resolution: resampling would smear the traces."""

    min_size: int = 8
    input_mode: str = CENTER_CROP

    def features(self, name: str, inputs: Any, weights: str | None, bins: int = 16) -> Any:
        if weights is not None:
            raise SystemExit(f"backbones.{name}.weights must be null: the spectrum has no weights")
        return SpectrumFeatures(bins)(inputs)


BACKBONES: dict[str, KerasApplication | Spectrum] = {
    "inceptionv3": KerasApplication(
        keras.applications.InceptionV3,
        keras.applications.inception_v3.preprocess_input,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        75,
    ),
    "vgg16": KerasApplication(
        keras.applications.VGG16,
        keras.applications.vgg16.preprocess_input,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        32,
    ),
    "spectrum": Spectrum(),
}


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def backbone(name: str) -> KerasApplication | Spectrum:
    if name not in BACKBONES:
        raise SystemExit(f"Unknown backbone {name!r}; known: {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def _missing_weights(application: KerasApplication, name: str, cause: object) -> MissingWeights:
    file, folder = application.notop_weights_file, keras_cache_dir()
    return MissingWeights(
        f"Cannot load the ImageNet weights of {name}: the file {file} is not in Keras' cache "
        f"folder {folder} and could not be downloaded ({cause}). Copy that file into {folder}/ "
        f"(from any machine where keras.applications has downloaded it), or set "
        f"backbones.{name}.weights to the path of a local .h5 file, or set it to null to run "
        "with random weights (for tests and smoke runs: features from a random network are far "
        "weaker)."
    )


def _resolve_weights(application: KerasApplication, name: str, weights: str | None) -> str | None:
    if weights is None:
        return None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise SystemExit(f"backbones.{name}.weights: no such weights file: {weights}")
        return weights
    cached = keras_cache_dir() / application.notop_weights_file
    if not cached.is_file() and os.environ.get(OFFLINE_ENV):
        raise _missing_weights(application, name, f"{OFFLINE_ENV} is set")
    return "imagenet"


PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # precision -> Keras policy


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Layers created inside get `policy` (keras.applications constructors take no dtype)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_extractor(
    name: str, input_size: int, weights: str | None, precision: str = "float32", **options: Any
) -> keras.Model:
    """RGB pixels (input_size x input_size, 0..255) in, one float32 feature vector per image out.

    precision bfloat16 computes in bfloat16 with float32 weights (Keras' mixed_bfloat16 policy):
    1.6x to 2x as fast on this project's AVX512-BF16 CPU (BENCHMARKS.md).
    """
    kind = backbone(name)
    if input_size < kind.min_size:
        raise SystemExit(f"{name} needs input_size >= {kind.min_size}, got {input_size}")
    if precision not in PRECISIONS or (precision != "float32" and isinstance(kind, Spectrum)):
        raise SystemExit(
            f"backbones.{name}.precision must be float32"
            f"{'' if isinstance(kind, Spectrum) else ' or bfloat16'}, got {precision!r}"
        )
    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    with dtype_policy(PRECISIONS[precision]):
        features = kind.features(name, inputs, weights, **options)
    features = keras.layers.Activation("linear", dtype="float32", name="float32_features")(features)
    return keras.Model(inputs, features, name=f"{name}_features")


def extractor_from_spec(spec: dict[str, Any]) -> keras.Model:
    """build_extractor for one entry of params.yaml's `backbones`."""
    options = {key: value for key, value in spec.items() if key not in SPEC_KEYS}
    return build_extractor(spec["name"], spec["input_size"], spec["weights"], **options)
