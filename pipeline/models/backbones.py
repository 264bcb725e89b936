"""Feature extractors, from a registry driven by config: any keras.applications model, a
weight-free frequency spectrum, CLIP's image tower (pipeline.models.clip), the networks made to be
trained (pipeline.models.networks: NPR, a CIFAKE-size CNN), and whatever else registers in
EXTRACTORS.

A backbone is one entry of params.yaml's `backbones` (one file in configs/backbones/): its
`extractor` kind (`keras_application` by default), that kind's options, and how it is trained
(`training`: frozen by default; pipeline.models.training runs the rest). A stage checks it once,
into a Backbone (Backbone.from_spec), and hands that down. Each extractor is a Keras model from
RGB pixels (0..255) to one feature vector per image, with its preprocessing inside, so that the
exported model is one self-contained file."""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from pipeline.core.errors import ConfigError, MissingWeights, not_one_of
from pipeline.models import backend, clip, networks

OFFLINE_ENV = "AIIC_OFFLINE"
# How an image becomes input_size x input_size: an input mode of pipeline.data.images.INPUT_MODES
RESIZE, CENTER_CROP, RESIZE_CROP = "resize", "center_crop", "resize_crop"
SPEC_KEYS = ("name", "extractor", "weights", "input_size", "batch_size", "precision", "training")
# How a backbone is trained (its `training.mode`): frozen (features only, the head trains on
# them), finetune (Keras' two phases: the head on frozen features, then the top layers with it
# at a low learning rate, batch normalisation in inference mode) or scratch (every layer, batch
# normalisation in training mode, one phase)
FROZEN, FINETUNE, SCRATCH = TRAINING_MODES = ("frozen", "finetune", "scratch")
DEFAULT_EXTRACTOR = "keras_application"
# precision -> Keras policy: float32, bfloat16 (fast on CPUs with AVX512-BF16/AMX) or
# mixed_float16 (fast on NVIDIA GPUs' tensor cores)
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}
GPU_PRECISIONS = ("mixed_float16",)


def application_names() -> list[str]:
    """Every model constructor keras.applications offers."""
    return sorted(name for name in dir(keras.applications) if name[:1].isupper())


def application(name: str) -> Callable[..., keras.Model]:
    constructor = getattr(keras.applications, str(name), None)
    if not name or not str(name)[:1].isupper() or not callable(constructor):
        raise not_one_of("application", name, application_names())
    return constructor


def preprocess_input(application_name: str) -> Callable[[Any], Any]:
    """The application's own `preprocess_input`, from the module that defines it."""
    return importlib.import_module(application(application_name).__module__).preprocess_input


@keras.saving.register_keras_serializable(package="aiic")
class Preprocess(keras.layers.Layer):
    """Applies a keras.applications model's own `preprocess_input` to RGB pixels in 0..255."""

    def __init__(self, application: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.preprocess = preprocess_input(application)

    def call(self, images: Any) -> Any:
        return self.preprocess(keras.ops.cast(images, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "application": self.application}


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


def keras_cache_dir() -> Path:
    """Where keras.applications keeps downloaded weights (Keras' `cache_subdir="models"`)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def missing_weights(name: str, file: str, cause: object) -> MissingWeights:
    folder = keras_cache_dir()
    return MissingWeights(
        f"Cannot load the ImageNet weights of backbone {name}: the file {file} is not in Keras' "
        f"cache folder {folder} and could not be downloaded ({cause}). Copy that file into "
        f"{folder}/ (from any machine where keras.applications has downloaded it), or set "
        f"backbones.{name}.weights to the path of a local .h5 file, or set it to null to run "
        "with random weights (for tests and smoke runs: features from a random network are far "
        "weaker)."
    )


# The file each keras.applications module keeps a model's ImageNet weights without its top in,
# in Keras' cache folder (the name it gives Keras' get_file, cache_subdir="models"; see
# keras/src/applications/<module>.py), from the model's default `name`, the input size `rows`
# it has weights for, and MobileNetV3's `model_type`; alpha is always its default, 1.0.
NOTOP_WEIGHTS_FILES = {
    "convnext": "{name}_notop.h5",
    "densenet": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnet": "{name}_notop.h5",
    "efficientnet_v2": "{name}_notop.h5",
    "inception_resnet_v2": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenet": "mobilenet_1_0_{rows}_tf_no_top.h5",
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    "mobilenet_v3": "weights_mobilenet_v3_{model_type}_224_1.0_float_no_top_v2.h5",
    "nasnet": "{name}_no_top.h5",
    "resnet": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet_v2": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg19": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "xception": "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
# The input sizes MobileNet and MobileNetV2 have weights for; at any other size they load 224's.
WEIGHTS_INPUT_SIZES = {"mobilenet": (128, 160, 192, 224), "mobilenet_v2": (96, 128, 160, 192, 224)}


def imagenet_weights_file(application_name: str, input_size: int) -> str | None:
    """The name of the file in which keras.applications keeps `application_name`'s ImageNet
    weights without its top, for inputs `input_size` px wide; None for a module of a newer Keras
    than NOTOP_WEIGHTS_FILES knows."""
    constructor = application(application_name)
    module = constructor.__module__.rsplit(".", 1)[-1]
    if module not in NOTOP_WEIGHTS_FILES:
        return None
    name = str(inspect.signature(constructor).parameters["name"].default)
    rows = input_size if input_size in WEIGHTS_INPUT_SIZES.get(module, ()) else 224
    model_type = name.removeprefix("MobileNetV3").lower()
    return NOTOP_WEIGHTS_FILES[module].format(name=name, rows=rows, model_type=model_type)


def imagenet_weights(name: str, application_name: str, input_size: int) -> tuple[str, str]:
    """(what to pass keras.applications as `weights`, the weights file's name) for weights
    `imagenet`: the file in Keras' cache folder by its path, so that nothing is downloaded, or
    `imagenet` (Keras downloads it); MissingWeights naming the file where downloads are off."""
    file = imagenet_weights_file(application_name, input_size)
    if file and (keras_cache_dir() / file).is_file():
        return str(keras_cache_dir() / file), file
    file = file or f"holding keras.applications.{application_name}'s ImageNet weights"
    if os.environ.get(OFFLINE_ENV):
        raise missing_weights(name, file, f"{OFFLINE_ENV} is set")
    return "imagenet", file


class KerasApplication:
    """Any keras.applications model (`application`: its name there), without its top and with
    global average pooling, behind its own preprocess_input; weights `imagenet`, a .h5 file, or
    null (random). It can be fine-tuned or trained from scratch (pipeline.models.training)."""

    options = ("application",)
    input_mode = RESIZE
    trainable = True

    def check(self, spec: dict[str, Any]) -> None:
        application(spec.get("application"))
        weights = spec.get("weights")
        if weights not in (None, "imagenet") and not Path(weights).is_file():
            raise ConfigError(f"backbones.{spec['name']}.weights: no such weights file: {weights}")

    def features(self, backbone: Backbone, inputs: Any) -> Any:
        name, weights, file = backbone.name, backbone.weights, None
        application_name = backbone.settings["application"]
        if weights == "imagenet":
            weights, file = imagenet_weights(name, application_name, inputs.shape[1])
        try:
            model = application(application_name)(
                include_top=False,
                weights=weights,
                input_shape=inputs.shape[1:],
                pooling="avg",
            )
        except ValueError as error:  # Keras' own checks, e.g. of the input size
            raise ConfigError(f"backbones.{name}: {error}") from error
        except Exception as error:  # Keras raises a bare Exception when a download fails
            if weights == "imagenet":
                raise missing_weights(name, file, error) from error
            raise
        model.trainable = False  # pipeline.models.training unfreezes what a training trains
        return model(Preprocess(application_name)(inputs))

    @staticmethod
    def core(extractor: keras.Model) -> keras.Model:
        """The keras.applications model inside the extractor: the layers fine-tuning counts."""
        return next(layer for layer in extractor.layers if isinstance(layer, keras.Model))


class Spectrum:
    """Needs no weights and sees pixels at native resolution: resampling would smear the traces."""

    options = ("bins",)
    input_mode = CENTER_CROP
    min_size = 8
    trainable = False

    def check(self, spec: dict[str, Any]) -> None:
        if spec.get("weights") is not None:
            raise ConfigError(
                f"backbones.{spec['name']}.weights must be null: the spectrum has no weights"
            )
        if spec["input_size"] < self.min_size:
            raise ConfigError(
                f"backbones.{spec['name']}.input_size must be at least {self.min_size}, "
                f"got {spec['input_size']}"
            )

    def features(self, backbone: Backbone, inputs: Any) -> Any:
        return SpectrumFeatures(backbone.settings.get("bins", 16))(inputs)


class Clip:
    """CLIP's frozen image tower from KerasHub (`preset`: a KerasHub CLIP preset name); weights
    `imagenet` (the preset's pretrained weights: the key is shared by every backbone) or null
    (random, the preset's architecture). `architecture` overrides its hyperparameters, with
    random weights only: a tiny CLIP for tests and smoke runs.

    Images are resized and centre-cropped as CLIP's own preprocessing does, so that pretrained
    weights see what they were trained on.
    """

    options = ("preset", "architecture")
    input_mode = RESIZE_CROP
    trainable = False

    def check(self, spec: dict[str, Any]) -> None:
        name, preset, weights = spec["name"], spec.get("preset"), spec.get("weights")
        if not clip.keras_hub_installed():
            raise ConfigError(
                f"backbones.{name} uses the clip extractor, which needs KerasHub: install the "
                "project with its clip extra (pip install -e '.[clip]')."
            )
        if preset not in clip.ARCHITECTURES:
            raise not_one_of(f"backbones.{name}.preset", preset, clip.ARCHITECTURES)
        if weights not in (None, "imagenet"):
            raise not_one_of(f"backbones.{name}.weights", weights, ["imagenet", None])
        overrides = spec.get("architecture") or {}
        for key in overrides:
            if key not in clip.ARCHITECTURE_KEYS:
                raise not_one_of(f"backbones.{name}.architecture key", key, clip.ARCHITECTURE_KEYS)
        if overrides and weights is not None:
            raise ConfigError(
                f"backbones.{name}.architecture changes the preset's shapes, so its weights "
                "cannot load: set weights to null, or remove architecture."
            )
        size, native = spec["input_size"], clip.ARCHITECTURES[preset]["image_size"]
        if weights is not None and size != native:
            raise ConfigError(
                f"backbones.{name}.input_size must be {native} for the pretrained {preset}: its "
                f"position embeddings are learnt for {native} x {native} pixels, got {size}"
            )
        patch = clip.architecture(preset, size, overrides)["patch_size"]
        if size % patch:
            raise ConfigError(
                f"backbones.{name}.input_size must be a multiple of the patch size {patch}, "
                f"got {size}"
            )

    def features(self, backbone: Backbone, inputs: Any) -> Any:
        name, preset = backbone.name, backbone.settings["preset"]
        # Fetched before the model is built: a missing preset fails at once, having done no work.
        pretrained = self.pretrained(name, preset) if backbone.weights == "imagenet" else None
        embedding = clip.ClipImageEmbedding(
            **clip.architecture(preset, backbone.input_size, backbone.settings.get("architecture")),
            name="clip_image_embedding",
        )
        embedding.trainable = False
        features = embedding(inputs)
        if pretrained:
            embedding.encoder.set_weights(pretrained[0])
            embedding.projection.set_weights(pretrained[1])
        return features

    @staticmethod
    def pretrained(name: str, preset: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        folder, cached = clip.preset_cache(preset)
        if cached:
            return clip.preset_weights(preset)
        if os.environ.get(OFFLINE_ENV):
            raise missing_preset(name, preset, folder, f"{OFFLINE_ENV} is set")
        try:
            return clip.preset_weights(preset)
        except Exception as error:  # kagglehub and KerasHub raise many kinds for a failed download
            raise missing_preset(name, preset, folder, error) from error


def missing_preset(name: str, preset: str, folder: Path, cause: object) -> MissingWeights:
    return MissingWeights(
        f"Cannot load the pretrained weights of backbone {name}: the KerasHub preset {preset} "
        f"is not in kagglehub's cache folder {folder} and could not be downloaded ({cause}). On "
        f'a connected machine with the clip extra, run python -c "import keras_hub; '
        f"keras_hub.models.CLIPBackbone.from_preset('{preset}')\", then copy the folder "
        f"{'/'.join(folder.parts[-6:-1])}/ of its kagglehub cache (~/.cache/kagglehub, or "
        f"$KAGGLEHUB_CACHE there), hidden .complete folder included, to {folder.parent}/ here "
        f"(or point KAGGLEHUB_CACHE at a copy of that cache); or set backbones.{name}.weights "
        "to null to run with random weights (for tests and smoke runs: features from a random "
        "network are far weaker)."
    )


class Network(abc.ABC):
    """A network of pipeline.models.networks, made to be trained on images: random weights (null) or
    a .h5 file of its own weights, such as the backbone.weights.h5 of an earlier training."""

    trainable = True
    options: tuple[str, ...] = ()
    input_mode = RESIZE

    def check(self, spec: dict[str, Any]) -> None:
        weights = spec.get("weights")
        if weights is not None and not (str(weights).endswith(".h5") and Path(weights).is_file()):
            raise ConfigError(
                f"backbones.{spec['name']}.weights must be null (random, to train) or the path "
                f"of a .h5 file of this network's weights, got {weights!r}: no pretrained "
                "weights exist to download"
            )
        smallest = self.min_size(spec)
        if spec["input_size"] < smallest:
            raise ConfigError(
                f"backbones.{spec['name']}.input_size must be at least {smallest} for this "
                f"network, got {spec['input_size']}"
            )

    @abc.abstractmethod
    def min_size(self, spec: dict[str, Any]) -> int:
        """The smallest input_size the network takes (each network says)."""

    @staticmethod
    def core(extractor: keras.Model) -> keras.Model:
        return extractor


class Npr(Network):
    """NPR (pipeline.models.networks.npr). It sees pixels at native resolution, as its residual is
    about neighbouring pixels that resampling would mix: a central crop at inference, a random
    one in training."""

    input_mode = CENTER_CROP

    def min_size(self, spec: dict[str, Any]) -> int:
        return networks.NPR_MIN_SIZE

    def features(self, backbone: Backbone, inputs: Any) -> Any:
        return networks.npr(inputs)


class Cnn(Network):
    """The CIFAKE-size CNN (pipeline.models.networks.cnn): `widths` (one stage each),
    `convs_per_stage` and `dense` units from config."""

    options = ("widths", "convs_per_stage", "dense")

    def check(self, spec: dict[str, Any]) -> None:
        name = spec["name"]
        widths = spec.get("widths")
        if not widths or not all(_whole(width, 1) for width in widths):
            raise ConfigError(f"backbones.{name}.widths must be a list of whole numbers >= 1")
        if not _whole(spec.get("convs_per_stage"), 1):
            raise ConfigError(f"backbones.{name}.convs_per_stage must be a whole number >= 1")
        if not _whole(spec.get("dense"), 0):
            raise ConfigError(f"backbones.{name}.dense must be a whole number >= 0")
        super().check(spec)

    def min_size(self, spec: dict[str, Any]) -> int:
        return networks.cnn_min_size(spec["widths"])

    def features(self, backbone: Backbone, inputs: Any) -> Any:
        settings = backbone.settings
        return networks.cnn(
            inputs, settings["widths"], settings["convs_per_stage"], settings["dense"]
        )


def _whole(value: Any, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


Extractor = KerasApplication | Spectrum | Clip | Network
EXTRACTORS: dict[str, Extractor] = {
    "keras_application": KerasApplication(),
    "spectrum": Spectrum(),
    "clip": Clip(),
    "npr": Npr(),
    "cnn": Cnn(),
}


def extractor_kind(spec: Mapping[str, Any]) -> Extractor:
    """The registered extractor a backbone spec names (`extractor`, default keras_application)."""
    kind = spec.get("extractor", DEFAULT_EXTRACTOR)
    if kind not in EXTRACTORS:
        raise not_one_of(f"backbones.{spec.get('name')}.extractor", kind, EXTRACTORS)
    return EXTRACTORS[kind]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One backbone's settings (an entry of params.yaml's `backbones`), checked once by
    Backbone.from_spec where a stage starts; every function below the stages takes it and trusts
    it. The fields are what the code reads, so that `dataclasses.replace(backbone, weights=None)`
    is the same backbone with random weights; `settings` keeps every setting as given, read-only,
    for what only one extractor kind reads (`application`, `bins`, `preset`, `widths`...) and for
    the `training` section."""

    name: str
    extractor: str  # the kind's key in EXTRACTORS
    input_size: int
    batch_size: int
    precision: str
    weights: str | None
    training_mode: str
    settings: Mapping[str, Any]

    def __post_init__(self) -> None:
        # read-only however the backbone was made: from_spec, dataclasses.replace or unpickling
        if not isinstance(self.settings, MappingProxyType):
            object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def __reduce__(self) -> tuple[type[Backbone], tuple[Any, ...]]:
        # A mappingproxy does not pickle, and Ray hands a backbone to its actors pickled: the
        # settings travel as a plain dict, which __post_init__ makes read-only again.
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return type(self), tuple({**values, "settings": dict(self.settings)}.values())

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Backbone:
        """Check a backbone spec (one entry of params.yaml's `backbones`) before any work: its
        keys, extractor and their values, and how it is trained."""
        kind = extractor_kind(spec)
        allowed = (*SPEC_KEYS, *kind.options)
        for key in spec:
            if key not in allowed:
                raise not_one_of(f"backbones.{spec.get('name')} key", key, allowed)
        precision = spec.get("precision", "float32")
        precisions = ["float32"] if isinstance(kind, Spectrum) else list(PRECISIONS)
        if precision not in precisions:
            raise not_one_of(f"backbones.{spec['name']}.precision", precision, precisions)
        kind.check(spec)
        if "training" in spec:
            check_training(spec["name"], spec["training"], kind.trainable)
        return cls(
            name=spec["name"],
            extractor=spec.get("extractor", DEFAULT_EXTRACTOR),
            input_size=spec["input_size"],
            batch_size=spec["batch_size"],
            precision=precision,
            weights=spec.get("weights"),
            training_mode=(spec.get("training") or {}).get("mode", FROZEN),
            # a copy: a caller that edits its spec afterwards leaves this one checked
            settings=copy.deepcopy(dict(spec)),
        )

    @property
    def kind(self) -> Extractor:
        return EXTRACTORS[self.extractor]

    @property
    def input_mode(self) -> str:
        """How an image becomes input_size x input_size (pipeline.data.images.INPUT_MODES)."""
        return self.kind.input_mode


# A backbone's `training` section (configs/backbones/*.yaml): every key below, each checked
TRAINING_KEYS = (
    "mode",
    "epochs",
    "batch_size",
    "learning_rate",
    "schedule",
    "patience",
    "unfreeze",
    "workers",
    "crossgen",
    "head",
    "augment",
)
TRAINING_HEAD_KEYS = ("units", "dropout", "learning_rate")
# the learning rate over a training: as given, or Keras' cosine decay from it to 0 over the epochs
SCHEDULES = ("constant", "cosine")
AUGMENT_KEYS = ("flip", "crop", "blur", "blur_sigma", "jpeg", "jpeg_quality")


def check_training(name: str, training: dict[str, Any], trainable: bool) -> None:
    """The `training` section of backbone `name`: its mode, then, the same for every mode so
    that a typo never waits for a mode switch, each key present, known and in range."""
    setting = f"backbones.{name}.training"
    if not isinstance(training, dict):
        raise ConfigError(f"{setting} must be a section of settings, got {training!r}")
    mode = training.get("mode")
    if mode not in TRAINING_MODES:
        raise not_one_of(f"{setting}.mode", mode, TRAINING_MODES)
    if mode != FROZEN and not trainable:
        raise not_one_of(f"{setting}.mode", mode, [FROZEN])
    if mode == FROZEN and set(training) == {"mode"}:
        return
    _check_keys(setting, training, TRAINING_KEYS)
    _check_number(f"{setting}.epochs", training["epochs"], 1, whole=True)
    _check_number(f"{setting}.batch_size", training["batch_size"], 1, whole=True)
    _check_number(f"{setting}.learning_rate", training["learning_rate"], 0, above=True)
    if training["schedule"] not in SCHEDULES:
        raise not_one_of(f"{setting}.schedule", training["schedule"], SCHEDULES)
    _check_number(f"{setting}.patience", training["patience"], 0, whole=True)
    if training["unfreeze"] != "all":
        _check_number(f"{setting}.unfreeze", training["unfreeze"], 1, whole=True, also="'all'")
    if training["workers"] is not None:
        _check_number(f"{setting}.workers", training["workers"], 1, whole=True, also="null")
    if not isinstance(training["crossgen"], bool):
        raise not_one_of(f"{setting}.crossgen", training["crossgen"], [True, False])
    head = training["head"]
    _check_keys(f"{setting}.head", head, TRAINING_HEAD_KEYS)
    _check_number(f"{setting}.head.units", head["units"], 0, whole=True)
    _check_number(f"{setting}.head.dropout", head["dropout"], 0, highest=0.99)
    _check_number(f"{setting}.head.learning_rate", head["learning_rate"], 0, above=True)
    augment = training["augment"]
    _check_keys(f"{setting}.augment", augment, AUGMENT_KEYS)
    for key in ("flip", "blur", "jpeg"):
        _check_number(f"{setting}.augment.{key}", augment[key], 0, highest=1)
    _check_number(f"{setting}.augment.crop", augment["crop"], 0, highest=1, above=True)
    for key, highest in (("blur_sigma", 100), ("jpeg_quality", 100)):
        pair = augment[key]
        lowest = 1 if key == "jpeg_quality" else 0
        if not (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and all(isinstance(v, int | float) and lowest <= v <= highest for v in pair)
            and pair[0] <= pair[1]
        ):
            raise ConfigError(
                f"{setting}.augment.{key} is {pair!r}: give a [low, high] pair of numbers from "
                f"{lowest} to {highest}"
            )


def _check_keys(setting: str, section: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{setting} must be a section with the keys {', '.join(keys)}")
    for key in section:
        if key not in keys:
            raise not_one_of(f"{setting} key", key, keys)
    missing = [key for key in keys if key not in section]
    if missing:
        raise ConfigError(f"{setting} lacks {', '.join(missing)}; its keys: {', '.join(keys)}")


def _check_number(
    setting: str,
    value: Any,
    lowest: float,
    *,
    highest: float | None = None,
    whole: bool = False,
    above: bool = False,
    also: str = "",
) -> None:
    """A number from `lowest` (excluded where `above`) to `highest`, whole where asked."""
    kinds = int if whole else int | float
    ok = (
        isinstance(value, kinds)
        and not isinstance(value, bool)
        and (value > lowest if above else value >= lowest)
        and (highest is None or value <= highest)
    )
    if not ok:
        kind = "a whole number" if whole else "a number"
        bound = f"above {lowest}" if above else f">= {lowest}"
        if highest is not None:
            bound += f" and <= {highest}"
        raise ConfigError(
            f"{setting} is {value!r}: it must be {kind} {bound}{' or ' + also if also else ''}"
        )


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Layers created inside get `policy` (keras.applications constructors take no dtype)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_extractor(backbone: Backbone) -> keras.Model:
    """RGB pixels (input_size x input_size, 0..255) in, one float32 feature vector per image out,
    for a checked backbone.

    precision bfloat16 computes in bfloat16 with float32 weights (Keras' mixed_bfloat16 policy),
    much faster on CPUs with AVX512-BF16 (BENCHMARKS.md); mixed_float16 likewise in float16, for
    GPUs. Without a GPU, mixed_float16 is warned about, not refused: a params.yaml written for a
    GPU machine still reproduces on a CPU, only slowly.
    """
    name, precision, size = backbone.name, backbone.precision, backbone.input_size
    if precision in GPU_PRECISIONS and not backend.gpus():
        warnings.warn(
            f"backbones.{name}.precision is {precision}, meant for a GPU's float16 "
            f"units, but Keras' {backend.name()} backend sees no GPU: it computes in float16 on "
            "the CPU. Install the backend's CUDA build on a machine with an NVIDIA GPU "
            '(docs/getting-started.md, "On a GPU"), or set the precision to float32 or bfloat16 '
            "(for CPUs with AVX512-BF16).",
            stacklevel=2,
        )
    inputs = keras.Input((size, size, 3), name="rgb")
    with dtype_policy(PRECISIONS[precision]):
        features = backbone.kind.features(backbone, inputs)
    features = keras.layers.Activation("linear", dtype="float32", name="float32_features")(features)
    model = keras.Model(inputs, features, name=f"{name}_features")
    if isinstance(backbone.kind, Network) and backbone.weights:
        model.load_weights(backbone.weights)
    return model
