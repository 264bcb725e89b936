"""CLIP's image tower from KerasHub as a frozen backbone: the features of UnivFD (Ojha et al.,
CVPR 2023), which a linear probe on CLIP ViT-L/14 made the strongest detector of images from
generators it never saw.

The feature is CLIP's image embedding, as KerasHub's `CLIPBackbone.get_vision_embeddings` computes
it and as OpenAI's `encode_image` does: the final layer-normalised class token of the vision
encoder, through the (bias-free) vision projection; 768-d for ViT-L/14.

KerasHub (the `clip` extra) is imported only when a CLIP model is built, so that the rest of the
project runs without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import keras
import numpy as np

KERAS_HUB = "keras_hub"
PRESET_FILES = ("config.json", "model.weights.h5")  # what CLIPBackbone.from_preset reads
# OpenAI CLIP's normalisation of RGB in 0..1 (clip/clip.py `_transform`; KerasHub's CLIP presets
# store the same as their image converter's scale and offset).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The vision towers of KerasHub's OpenAI CLIP presets, so that `weights: null` builds one without
# downloading the preset's config.json. Hyperparameters from Radford et al. 2021 ("Learning
# Transferable Visual Models From Natural Language Supervision", table 20: embedding dimension,
# width, layers, heads, patch size; the MLP is four times the width) and the `vision_config` of
# Hugging Face's openai/clip-vit-{base-patch32,base-patch16,large-patch14,large-patch14-336}
# config.json, whose fields KerasHub's CLIP converter maps one to one. Loading a preset's weights
# into these shapes checks them.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "clip_vit_base_patch32": {
        "patch_size": 32,
        "hidden_dim": 768,
        "num_layers": 12,
        "num_heads": 12,
        "intermediate_dim": 3072,
        "projection_dim": 512,
        "image_size": 224,
    },
    "clip_vit_base_patch16": {
        "patch_size": 16,
        "hidden_dim": 768,
        "num_layers": 12,
        "num_heads": 12,
        "intermediate_dim": 3072,
        "projection_dim": 512,
        "image_size": 224,
    },
    "clip_vit_large_patch14": {
        "patch_size": 14,
        "hidden_dim": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "intermediate_dim": 4096,
        "projection_dim": 768,
        "image_size": 224,
    },
    "clip_vit_large_patch14_336": {
        "patch_size": 14,
        "hidden_dim": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "intermediate_dim": 4096,
        "projection_dim": 768,
        "image_size": 336,
    },
}
ACTIVATION = "quick_gelu"  # OpenAI CLIP's, for every preset above
# Keys a test or smoke run may change in `architecture:` (random weights only): a tiny model of
# the same classes.
ARCHITECTURE_KEYS = (
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "intermediate_dim",
    "projection_dim",
)


def keras_hub_installed() -> bool:
    return importlib.util.find_spec(KERAS_HUB) is not None


@keras.saving.register_keras_serializable(package="aiic")
class ClipImageEmbedding(keras.layers.Layer):
    """RGB pixels (0..255, image_size x image_size) in, CLIP's image embedding out.

    CLIP's normalisation (mean and std of its training images) is inside, so that the exported
    model needs nothing but pixels. The config holds the hyperparameters, not a preset name: a
    saved model rebuilds the same KerasHub layers offline and loads its own weights into them
    (safe mode: no code in the file, only this registered class and KerasHub's layers).
    """

    def __init__(
        self,
        patch_size: int,
        hidden_dim: int,
        num_layers: int,
        num_heads: int,
        intermediate_dim: int,
        projection_dim: int,
        image_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from keras_hub.models import CLIPVisionEncoder

        self.architecture = {
            "patch_size": patch_size,
            "hidden_dim": hidden_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "intermediate_dim": intermediate_dim,
            "projection_dim": projection_dim,
            "image_size": image_size,
        }
        self.encoder = CLIPVisionEncoder(
            patch_size=patch_size,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            intermediate_activation=ACTIVATION,
            image_shape=(image_size, image_size, 3),
            dtype=self.dtype_policy,
            name="vision_encoder",
        )
        self.projection = keras.layers.Dense(
            projection_dim, use_bias=False, dtype=self.dtype_policy, name="vision_projection"
        )
        self.mean = np.asarray(CLIP_MEAN, np.float32) * 255
        self.std = np.asarray(CLIP_STD, np.float32) * 255

    def build(self, input_shape: tuple) -> None:
        self.projection.build((None, self.architecture["hidden_dim"]))

    def call(self, images: Any) -> Any:
        pixels = (keras.ops.cast(images, "float32") - self.mean) / self.std
        tokens = self.encoder({"images": pixels}, training=False)
        return self.projection(tokens[:, 0, :])  # the class token, as CLIPVisionPooler takes it

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.architecture["projection_dim"])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.architecture}


def architecture(preset: str, input_size: int, overrides: dict[str, Any] | None = None) -> dict:
    """The ClipImageEmbedding arguments of a preset at `input_size`, with test-only overrides."""
    return {**ARCHITECTURES[preset], **(overrides or {}), "image_size": input_size}


def kaggle_handle(preset: str) -> str:
    """The preset's versioned Kaggle model handle, from KerasHub's own preset registry."""
    from keras_hub.models import CLIPBackbone

    return CLIPBackbone.presets[preset]["kaggle_handle"].removeprefix("kaggle://")


def preset_cache(preset: str) -> tuple[Path, bool]:
    """The folder where kagglehub keeps the preset (under $KAGGLEHUB_CACHE, by default
    ~/.cache/kagglehub), and whether every file the weights need is there, complete."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    handle = parse_model_handle(kaggle_handle(preset))
    cache = Cache()
    complete = all(cache.load_from_cache(handle, file) for file in PRESET_FILES)
    return Path(cache.get_path(handle)), complete


def preset_weights(preset: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(vision encoder weights, vision projection weights) of a KerasHub CLIP preset, from
    kagglehub's cache or downloaded into it."""
    from keras_hub.models import CLIPBackbone

    clip = CLIPBackbone.from_preset(preset)
    return clip.vision_encoder.get_weights(), clip.vision_projection.get_weights()
