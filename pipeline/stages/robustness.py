"""Stage `robustness`: backbone features of perturbed test images, computed once per backbone.

`python -m pipeline robustness <backbone>` extracts features of the test images of both classes
under each level of the `robustness` params' grid (JPEG quality, Gaussian blur, downscaling and
back, a central crop, a same-format re-encode; pipeline.models.degradations), all in memory: no
perturbed image is written. Each image is decoded once and perturbed in turn. The features go to
data/robustness/<backbone>/features.npz; the train stage scores them with the trained head, so
that a head experiment re-runs no backbone.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.entry import run
from pipeline.core.io import atomic_path
from pipeline.core.paths import BACKBONE_WEIGHTS_FILE, SPLITS, features_dir, robustness_file
from pipeline.data.images import UnreadableImage, decode, shape_for_model
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.degradations import Degradation, grid
from pipeline.models.engines import leave_gpus_to_actors, map_images
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import backbone_spec, load_params

CHUNK = 64


def perturbed_outputs(
    forward: Callable,
    paths: list[str],
    size: int,
    mode: str,
    width: int,
    perturbations: dict[str, Degradation],
) -> dict[str, np.ndarray]:
    """Model outputs (len(paths) x width) per perturbation; NaN rows where an image is unusable,
    such as a crop under the spectrum's input size (it is never resampled up)."""
    outputs = {name: np.full((len(paths), width), np.nan, np.float32) for name in perturbations}
    for start in tqdm(range(0, len(paths), CHUNK), desc="robustness", unit="chunk"):
        chunk = []
        for path in paths[start : start + CHUNK]:
            try:
                chunk.append(decode(path))
            except UnreadableImage:
                chunk.append(None)
        for name, perturb in perturbations.items():
            rows, inputs = [], []
            for offset, image in enumerate(chunk):
                try:
                    if image is not None:
                        inputs.append(shape_for_model(perturb(image), size, mode))
                        rows.append(start + offset)
                except UnreadableImage:
                    continue
            if inputs:
                outputs[name][rows] = forward(np.stack(inputs))
    return outputs


def main() -> None:
    args = parse_arguments("robustness", __doc__.splitlines()[0])
    params = load_params()
    backbone = Backbone.from_spec(backbone_spec(params, args.backbone))
    leave_gpus_to_actors(params.get("engine"))
    extractor = build_extractor(dataclasses.replace(backbone, weights=None))
    extractor.load_weights(features_dir(args.backbone) / BACKBONE_WEIGHTS_FILE)
    test = pd.read_csv(SPLITS, dtype={"id": str}).query("split == 'test'")
    work = functools.partial(
        perturbed_outputs,
        size=backbone.input_size,
        mode=backbone.input_mode,
        width=extractor.output_shape[-1],
        perturbations=grid(params["robustness"]),
    )
    outputs = map_images(params.get("engine"), backbone, extractor, work, test["path"].tolist())
    out_file = robustness_file(args.backbone)
    with atomic_path(out_file.parent) as out:
        out.mkdir()
        np.savez(out / out_file.name, ids=test["id"].to_numpy(dtype=str), **outputs)
    print(f"robustness {args.backbone}: features of {len(test)} test images x {len(outputs)}")


if __name__ == "__main__":
    run(main, "robustness")
