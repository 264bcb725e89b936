"""Stage `blend`: what each backbone's p-score says about a partly AI-made image, measured on
composites of test images with known masks.

For each backbone <b> in params.yaml's `backbones`, `blend.composites` seeded pairs of one real
and one AI test image (from data/scores/<b>.csv, the images its model scored), both shaped for the
model (pipeline.data.images), are blended through a mask: a rectangle (hard) and the same rectangle
feathered with a Gaussian blur (soft), at a seeded position, in both directions (BLEND_DIRECTIONS:
an AI region in a real photograph, and a real region in an AI image), at each AI area fraction of
`blend.fractions`. Every composite, fractions 0 and 1 included, is re-encoded alike
(`blend.encode`) and decoded again through pipeline.data.images before the full model
(pipeline.stages.trained) scores it, so that the format is the same at every fraction and no cue of
its own. Into data/blends/<b>/:
- composites.csv: each composite's pair, direction, mask, nominal and exact AI area fraction, its
  rectangle and feather (from which mask() rebuilds its mask exactly), and its P(real);
- maps.npz: the occlusion maps (explain.grid, explain.fill) of the first `blend.maps` pairs per
  fraction, direction and mask (fractions 0 and 1 left out: no region to find), and the share of
  each map cell that is AI-made, for the pointing game.
The evaluate stage turns them into metrics/<b>_blend.json and the blend plot.

One process for every backbone, as in explain; its cost is bounded by the `blend` settings: a
forward pass per composite, and explain.grid² + 1 per map.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.core.entry import run
from pipeline.core.errors import StageFailed
from pipeline.core.io import atomic_path
from pipeline.core.paths import (
    BLEND_DIRECTIONS,
    BLEND_MAPS_FILE,
    BLEND_MASKS,
    BLENDS_DIR,
    COMPOSITES_FILE,
    SPLITS,
    scores_file,
)
from pipeline.data.images import LABELS, decode, shape_for_model
from pipeline.models.backbones import Backbone
from pipeline.models.occlusion import Occlusion, cell_edges, occlusion_maps, scored
from pipeline.serving.inference import forward
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import backbone_spec, load_params
from pipeline.stages.trained import trained_model

ASPECTS = (0.5, 2.0)  # height / width of the rectangles: no strips, whatever the draw
Rectangle = tuple[int, int, int, int]  # top, left, height, width, in pixels


def rectangle(size: int, area: float, draws: np.ndarray) -> Rectangle:
    """A rectangle covering the share `area` of a size x size image as exactly as whole pixels
    allow (its aspect ratio within ASPECTS, the nearest to one drawn log-uniformly among the
    exact fits), at a uniformly drawn position; `draws` are three numbers in [0, 1)."""
    target = area * size * size
    if target < 0.5:
        return (0, 0, 0, 0)
    heights, widths = np.meshgrid(np.arange(1, size + 1), np.arange(1, size + 1), indexing="ij")
    aspect = heights / widths
    allowed = (aspect >= ASPECTS[0]) & (aspect <= ASPECTS[1])
    error = np.where(allowed, np.abs(heights * widths - target), np.inf)
    low, high = np.log(ASPECTS)
    drawn = low + draws[0] * (high - low)
    shape_error = np.where(error <= error.min() + 1e-9, np.abs(np.log(aspect) - drawn), np.inf)
    best = np.unravel_index(np.argmin(shape_error), shape_error.shape)
    height, width = int(heights[best]), int(widths[best])
    top = int(draws[1] * (size - height + 1))
    left = int(draws[2] * (size - width + 1))
    return (top, left, height, width)


def mask(size: int, box: Rectangle, feather: float) -> np.ndarray:
    """The size x size weights of the pasted region, 0 to 1: the rectangle `box`, feathered with
    a Gaussian of `feather` pixels (0: a hard mask). The blur reflects at the image's edges, so
    that it keeps the mask's sum: a soft mask's mean is its rectangle's area fraction."""
    weights = np.zeros((size, size), np.float64)
    top, left, height, width = box
    weights[top : top + height, left : left + width] = 1.0
    if feather > 0:
        weights = np.clip(gaussian_filter(weights, feather, mode="reflect"), 0.0, 1.0)
    return weights


def composite(base: np.ndarray, donor: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`donor` pasted into `base` through the mask `weights` (uint8 images of one shape)."""
    blended = weights[..., None] * donor + (1.0 - weights[..., None]) * base
    return np.rint(blended).astype(np.uint8)


def reencoded(image: np.ndarray, encode: str, jpeg_quality: int) -> Image.Image:
    """The image saved as PNG or JPEG (`encode`) and decoded again through pipeline.data.images, as
    a file a person brings would be."""
    buffer = io.BytesIO()
    options = {"quality": jpeg_quality} if encode == "jpeg" else {}
    Image.fromarray(image).save(buffer, format=encode.upper(), **options)
    return decode(buffer.getvalue())


def cell_shares(weights: np.ndarray, grid: int) -> np.ndarray:
    """grid x grid: the mean of `weights` in each cell of an explanation map's grid."""
    edges = cell_edges(weights.shape[0], grid)
    sums = np.add.reduceat(np.add.reduceat(weights, edges[:-1], axis=0), edges[:-1], axis=1)
    return sums / np.outer(np.diff(edges), np.diff(edges))


def plan(
    pairs: list[tuple[str, str]], settings: dict[str, Any], size: int, seed: int
) -> pd.DataFrame:
    """One row per composite: every pair (real id, AI id) at every fraction, in every direction,
    with either mask. The rectangle depends on the seed, the direction, the fraction and the
    pair only, so every backbone (at its own input size) sees the same layouts, and both masks
    share it."""
    rows = []
    for d, direction in enumerate(BLEND_DIRECTIONS):
        for f, fraction in enumerate(settings["fractions"]):
            pasted = fraction if direction == "ai_in_real" else 1 - fraction
            for pair, (real_id, ai_id) in enumerate(pairs):
                draws = np.random.default_rng([seed, d, f, pair]).random(3)
                top, left, height, width = rectangle(size, pasted, draws)
                share = height * width / size**2
                for kind in BLEND_MASKS:
                    rows.append(
                        {
                            "direction": direction,
                            "mask": kind,
                            "fraction": fraction,
                            "ai_fraction": share if direction == "ai_in_real" else 1 - share,
                            "pair": pair,
                            "real_id": real_id,
                            "ai_id": ai_id,
                            "top": top,
                            "left": left,
                            "height": height,
                            "width": width,
                            "feather": settings["feather"] * size if kind == "soft" else 0.0,
                        }
                    )
    return pd.DataFrame(rows)


def composites(
    rows: pd.DataFrame,
    images: dict[str, np.ndarray],
    settings: dict[str, Any],
    mode: str,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each row's composite as the model sees it, and its AI-made share per pixel, made only as
    they are needed."""
    for row in rows.itertuples():
        real, ai = images[row.real_id], images[row.ai_id]
        size = real.shape[0]
        weights = mask(size, (row.top, row.left, row.height, row.width), row.feather)
        base, donor = (real, ai) if row.direction == "ai_in_real" else (ai, real)
        image = reencoded(
            composite(base, donor, weights), settings["encode"], settings["jpeg_quality"]
        )
        shaped = shape_for_model(image, size, mode, f"composite {row.Index}")
        yield shaped, weights if row.direction == "ai_in_real" else 1.0 - weights


def pick_pairs(scores: pd.DataFrame, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` seeded (real id, AI id) pairs of test images; an image is drawn again only when
    its class has fewer than `count` images."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for label in LABELS:
        ids = sorted(scores.loc[scores["label"] == label, "id"])
        if not ids:
            raise StageFailed(
                f"the test split has no {label} image that the model scored: a composite needs "
                "one real and one AI image"
            )
        drawn[label] = rng.choice(ids, count, replace=len(ids) < count)
    return list(zip(drawn["real"].tolist(), drawn["ai"].tolist(), strict=True))


def blend_backbone(name: str, params: dict[str, Any], splits: pd.DataFrame, out: Path) -> None:
    """Backbone `name`'s composites.csv and maps.npz, into the folder `out`."""
    settings, backbone = params["blend"], Backbone.from_spec(backbone_spec(params, name))
    size, mode, batch = backbone.input_size, backbone.input_mode, backbone.batch_size
    scores = pd.read_csv(scores_file(name), dtype={"id": str})[["id", "label"]]
    scores = scores.merge(splits[["id", "path"]], on="id")
    pairs = pick_pairs(scores, settings["composites"], params["seed"])
    paths = scores.set_index("id")["path"]
    images = {i: shape_for_model(decode(paths[i]), size, mode, i) for pair in pairs for i in pair}
    rows = plan(pairs, settings, size, params["seed"])
    score = forward(trained_model(params, backbone)[0])
    stacks = (image[None] for image, _ in composites(rows, images, settings, mode))
    rows["p_real"] = np.concatenate(scored(score, stacks, batch))

    inner = (rows["fraction"] > 0) & (rows["fraction"] < 1)
    mapped = rows[inner & (rows["pair"] < settings["maps"])]
    occlusion = Occlusion.from_settings(params["explain"])
    made = list(composites(mapped, images, settings, mode))
    p_real, maps = occlusion_maps(score, [image for image, _ in made], occlusion, batch)
    out.mkdir(parents=True)
    rows.to_csv(out / COMPOSITES_FILE, index_label="composite")
    np.savez(
        out / BLEND_MAPS_FILE,
        composites=mapped.index.to_numpy(),
        p_real=p_real,
        maps=maps,
        ai_share=np.array([cell_shares(ai, occlusion.grid) for _, ai in made]).reshape(maps.shape),
    )


def main() -> None:
    # every backbone in params.yaml, always, as in explain
    parse_arguments("blend", __doc__.splitlines()[0])
    params = load_params()
    occlusion = Occlusion.from_settings(params["explain"])  # settings checked before any work
    if params["blend"]["maps"]:
        for spec in params["backbones"].values():
            cell_edges(spec["input_size"], occlusion.grid)
    splits = pd.read_csv(SPLITS, dtype={"id": str})
    with atomic_path(BLENDS_DIR) as folder:
        folder.mkdir()
        for name in params["backbones"]:
            start = time.perf_counter()
            blend_backbone(name, params, splits, folder / name)
            seconds = time.perf_counter() - start
            print(f"blend {name}: composites and their maps in {seconds:.1f} s")


if __name__ == "__main__":
    run(main, "blend")
