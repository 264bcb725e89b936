"""Stage `robustness`: backbone features of perturbed test images, computed once per backbone.

`python -m pipeline robustness <backbone>` extracts features of the test images after JPEG
re-compression (quality 90, 75, 50), downscaling to half size, a central crop and a Gaussian
blur, all in memory: no perturbed image is written. Each image is decoded once and perturbed in
turn. The features go to data/robustness/<backbone>/features.npz; the train stage scores them
with the trained head, so that a head experiment re-runs no backbone.
"""

from __future__ import annotations

import argparse
import functools
import io
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from tqdm import tqdm

from pipeline.backbones import check_spec, extractor_from_spec
from pipeline.engines import leave_gpus_to_actors, map_images
from pipeline.entry import run
from pipeline.images import UnreadableImage, decode, shape_for_model
from pipeline.io import atomic_path
from pipeline.params import backbone_spec, load_params
from pipeline.paths import BACKBONE_WEIGHTS_FILE, SPLITS, features_dir, robustness_file

CHUNK = 64


def jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def recompress(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(buffer).convert("RGB")

    return recompress


def center_crop(share: float) -> Callable[[Image.Image], Image.Image]:
    def crop(image: Image.Image) -> Image.Image:
        width, height = round(image.width * share), round(image.height * share)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))

    return crop


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_90": jpeg(90),
    "jpeg_75": jpeg(75),
    "jpeg_50": jpeg(50),
    "downscale_0.5": lambda image: image.resize(
        (max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR
    ),
    "center_crop_0.75": center_crop(0.75),
    "gaussian_blur_1": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
}


def perturbed_outputs(
    forward: Callable, paths: list[str], size: int, mode: str, width: int
) -> dict[str, np.ndarray]:
    """Model outputs (len(paths) x width) per perturbation; NaN rows where an image is unusable,
    such as a crop under the spectrum's input size (it is never resampled up)."""
    outputs = {name: np.full((len(paths), width), np.nan, np.float32) for name in PERTURBATIONS}
    for start in tqdm(range(0, len(paths), CHUNK), desc="robustness", unit="chunk"):
        chunk = []
        for path in paths[start : start + CHUNK]:
            try:
                chunk.append(decode(path))
            except UnreadableImage:
                chunk.append(None)
        for name, perturb in PERTURBATIONS.items():
            rows, inputs = [], []
            for offset, image in enumerate(chunk):
                try:
                    if image is not None:
                        inputs.append(shape_for_model(perturb(image), size, mode))
                        rows.append(start + offset)
                except UnreadableImage:
                    continue
            if inputs:
                outputs[name][rows] = forward(np.stack(inputs)).numpy()
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    spec = backbone_spec(params, args.backbone)
    leave_gpus_to_actors(params.get("engine"))
    extractor = extractor_from_spec({**spec, "weights": None})
    extractor.load_weights(features_dir(args.backbone) / BACKBONE_WEIGHTS_FILE)
    test = pd.read_csv(SPLITS, dtype={"id": str}).query("split == 'test'")
    work = functools.partial(
        perturbed_outputs,
        size=spec["input_size"],
        mode=check_spec(spec).input_mode,
        width=extractor.output_shape[-1],
    )
    outputs = map_images(params.get("engine"), spec, extractor, work, test["path"].tolist())
    out_file = robustness_file(args.backbone)
    with atomic_path(out_file.parent) as out:
        out.mkdir()
        np.savez(out / out_file.name, ids=test["id"].to_numpy(dtype=str), **outputs)
    print(f"robustness {args.backbone}: features of {len(test)} test images x {len(outputs)}")


if __name__ == "__main__":
    run(main, "robustness")
