"""Stage `robustness`: how each backbone's calibrated model holds up on perturbed test images.

`python -m pipeline.robustness <backbone>` scores the test images after JPEG re-compression (quality
90, 75, 50), downscaling to half size, a central crop and a Gaussian blur, all in memory (nothing
is written but the results): metrics/<backbone>_robustness.json and robustness/<backbone>.json
(plot rows). Each image is decoded once and perturbed in turn.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from sklearn import metrics
from tqdm import tqdm

from pipeline.backbones import backbone
from pipeline.evaluate import METRICS_DIR
from pipeline.export import trained_model
from pipeline.features import compiled
from pipeline.images import LABELS, UnreadableImage, decode, shape_for_model
from pipeline.io import write_json
from pipeline.params import backbone_spec, load_params
from pipeline.prepare import SPLITS

PLOTS_DIR = Path("robustness")
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
    "none": lambda image: image,
    "jpeg_90": jpeg(90),
    "jpeg_75": jpeg(75),
    "jpeg_50": jpeg(50),
    "downscale_0.5": lambda image: image.resize(
        (max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR
    ),
    "center_crop_0.75": center_crop(0.75),
    "gaussian_blur_1": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
}


def perturbed_scores(
    forward: Callable, paths: list[str], size: int, mode: str
) -> dict[str, np.ndarray]:
    """P(real) per perturbation and image (NaN where the perturbed image cannot be used)."""
    scores = {name: np.full(len(paths), np.nan) for name in PERTURBATIONS}
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
                if image is None:
                    continue
                try:
                    inputs.append(shape_for_model(perturb(image), size, mode))
                    rows.append(start + offset)
                except UnreadableImage:
                    pass  # e.g. a crop under the spectrum's input size
            if inputs:
                scores[name][rows] = forward(np.stack(inputs)).numpy()[:, 0]
    return scores


def summarize(labels: np.ndarray, scores: dict[str, np.ndarray], threshold: float) -> dict:
    results = {}
    for name, p_real in scores.items():
        usable = ~np.isnan(p_real)
        y, p = labels[usable], p_real[usable]
        results[name] = {
            "images": int(usable.sum()),
            "skipped": int((~usable).sum()),
            "accuracy": float(((p >= threshold).astype(int) == y).mean()) if len(y) else None,
            "roc_auc": float(metrics.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    spec = backbone_spec(params, args.backbone)
    model, threshold = trained_model(params, args.backbone)
    test = pd.read_csv(SPLITS, dtype={"id": str}).query("split == 'test'")
    labels = test["label"].map(LABELS.index).to_numpy()
    scores = perturbed_scores(
        compiled(model),
        test["path"].tolist(),
        spec["input_size"],
        backbone(args.backbone).input_mode,
    )
    results = summarize(labels, scores, threshold)
    write_json(METRICS_DIR / f"{args.backbone}_robustness.json", results)
    write_json(
        PLOTS_DIR / f"{args.backbone}.json",
        [{"perturbation": name, **values} for name, values in results.items()],
    )
    for name, values in results.items():
        print(f"robustness {args.backbone} {name}: {values}")


if __name__ == "__main__":
    main()
