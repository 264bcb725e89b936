"""Image degradations, in memory: the robustness grid (`robustness` params) applied to test
images, and CNNDetection's training-time blur + JPEG augmentation (`augment` params) applied to
training images. Shared by the robustness and features stages; no image is ever written."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from pipeline.data.images import LABELS, UnreadableImage, decode, shape_for_model
from pipeline.models.backbones import Backbone
from pipeline.models.runtime import compiled

Degradation = Callable[[Image.Image], Image.Image]


def jpeg(quality: int) -> Degradation:
    return reencode("JPEG", quality)


def reencode(image_format: str, quality: int) -> Degradation:
    def encode(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, quality=quality)
        return Image.open(buffer).convert("RGB")

    return encode


def blur(sigma: float) -> Degradation:
    return lambda image: image.filter(ImageFilter.GaussianBlur(sigma))


def downscale(share: float) -> Degradation:
    """Down to `share` of each side, then back up to the image's own size: detail is lost, the
    size the model sees is not."""

    def shrink_and_restore(image: Image.Image) -> Image.Image:
        small = (max(1, round(image.width * share)), max(1, round(image.height * share)))
        return image.resize(small, Image.Resampling.BILINEAR).resize(
            image.size, Image.Resampling.BILINEAR
        )

    return shrink_and_restore


def center_crop(share: float) -> Degradation:
    def crop(image: Image.Image) -> Image.Image:
        width, height = round(image.width * share), round(image.height * share)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))

    return crop


def grid(config: dict[str, Any]) -> dict[str, Degradation]:
    """The `robustness` params as named degradations, in order: <kind>_<level>."""
    levels: dict[str, Degradation] = {}
    levels |= {f"jpeg_{q}": jpeg(q) for q in config.get("jpeg_quality") or ()}
    levels |= {f"blur_{s}": blur(s) for s in config.get("blur_sigma") or ()}
    levels |= {f"downscale_{s}": downscale(s) for s in config.get("downscale") or ()}
    levels |= {f"center_crop_{s}": center_crop(s) for s in config.get("center_crop") or ()}
    if config.get("reencode"):
        encoding = config["reencode"]
        name = f"reencode_{encoding['format'].lower()}{encoding['quality']}"
        levels[name] = reencode(encoding["format"], encoding["quality"])
    return levels


def augment(image: Image.Image, rng: np.random.Generator, config: dict[str, Any]) -> Image.Image:
    """CNNDetection's augmentation: blur, then JPEG, each with probability `p`."""
    if rng.random() < config["p"]:
        image = blur(float(rng.uniform(*config["blur_sigma"])))(image)
    if rng.random() < config["p"]:
        low, high = config["jpeg_quality"]
        image = jpeg(int(rng.integers(low, high + 1)))(image)
    return image


def copy_rng(seed: int, row: int, copy: int) -> np.random.Generator:
    """The random draws of one copy of one image: the same whatever the batching or order."""
    return np.random.default_rng([seed, row, copy])


def augmented_outputs(
    forward: Callable,
    paths: list[str],
    size: int,
    mode: str,
    config: dict[str, Any],
    seed: int,
    batch_images: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs of `config['copies']` augmented copies of each image, and the index in
    `paths` each row comes from; an image that cannot be used gives no row."""
    outputs, sources = [], []
    for start in range(0, len(paths), batch_images):
        inputs = []
        for row, path in enumerate(paths[start : start + batch_images], start=start):
            try:
                image = decode(path)
                for copy in range(config["copies"]):
                    augmented = augment(image, copy_rng(seed, row, copy), config)
                    inputs.append(shape_for_model(augmented, size, mode, path))
                    sources.append(row)
            except UnreadableImage:
                continue
        if inputs:
            outputs.append(np.asarray(forward(np.stack(inputs))))
    features = np.concatenate(outputs).astype(np.float32) if outputs else np.empty((0, 0))
    return features, np.array(sources, dtype=np.int64)


def write_augmented(
    model: Any,
    backbone: Backbone,
    train: pd.DataFrame,
    config: dict[str, Any],
    seed: int,
    out: Path,
) -> None:
    """The features stage's augmented.npz: features, class ids and image ids of the augmented
    copies of the `train` rows of splits.csv (never of validation or test images)."""
    features, rows = augmented_outputs(
        compiled(model),
        train["path"].tolist(),
        backbone.input_size,
        backbone.input_mode,
        config,
        seed,
        backbone.batch_size,
    )
    labels = train["label"].map(LABELS.index).to_numpy(dtype=np.int64)[rows]
    np.savez(out, features=features, labels=labels, ids=train["id"].to_numpy(dtype=str)[rows])
    print(f"features {backbone.name}: {len(rows)} augmented copies of training images")
