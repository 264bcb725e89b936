"""Stage `explain`: occlusion maps of test images, and the deletion check of their faithfulness.

For each backbone <b> in params.yaml's `backbones`, its full model as the pipeline trained it
(pipeline.stages.trained: RGB pixels to calibrated P(real)) maps (pipeline.models.occlusion):
- the gallery: per kind (most confident real, most confident AI, worst misclassified) the
  `explain.gallery` test images of data/scores/<b>.csv, drawn over the images into
  data/explanations/<b>/gallery/ and listed in gallery.csv;
- a seeded sample of `explain.images` test images, whose cells are then covered in the map's order
  and in `explain.random_orders` random orders: the deletion curves, in deletion.npz, which the
  evaluate stage turns into the faithfulness metrics.

Every map and curve goes through the compiled forward pass, the backbone's batch_size images at a
time. One process for every backbone, as in train; its cost is bounded by the `explain` settings,
not by the data, since it re-runs on every head experiment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.entry import run
from pipeline.core.io import atomic_path, read_json
from pipeline.core.paths import (
    CALIBRATION_FILE,
    DELETION_FILE,
    EXPLANATIONS_DIR,
    GALLERY_DIR,
    GALLERY_FILE,
    GALLERY_KINDS,
    HEADS_DIR,
    SPLITS,
    scores_file,
)
from pipeline.data.images import INPUT_MODES, decode, shape_for_model
from pipeline.data.overlay import save_map
from pipeline.models.backbones import Backbone
from pipeline.models.occlusion import (
    Occlusion,
    cell_edges,
    covered_counts,
    deletion_copies,
    deletion_curves,
    deletion_orders,
    occlusion_maps,
    scored,
)
from pipeline.serving.inference import forward
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import backbone_spec, load_params
from pipeline.stages.trained import trained_model


def gallery_rows(scores: pd.DataFrame, threshold: float, count: int) -> pd.DataFrame:
    """kind, rank and the score's columns of `count` test images per kind: the correctly called
    real images with the highest P(real), the correctly called AI images with the lowest, and the
    misclassified images furthest from the threshold. A kind with no such image has no row."""
    called_real = scores["p_real"] >= threshold
    correct = called_real == (scores["label"] == "real")
    miss = (scores["p_real"] - threshold).abs()
    picks = {
        "most_confident_real": scores[correct & called_real].nlargest(count, "p_real"),
        "most_confident_ai": scores[correct & ~called_real].nsmallest(count, "p_real"),
        "worst_misclassified": scores[~correct].loc[miss[~correct].nlargest(count).index],
    }
    return pd.concat(
        [rows.assign(kind=kind, rank=range(1, len(rows) + 1)) for kind, rows in picks.items()],
        ignore_index=True,
    )


def deletion_check(
    score: Any,
    inputs: list[np.ndarray],
    p_real: np.ndarray,
    maps: np.ndarray,
    towards_real: np.ndarray,
    occlusion: Occlusion,
    settings: dict[str, Any],
    batch_size: int,
    seed: int,
) -> np.ndarray:
    """(images, 1 + random_orders, steps + 1): the probability of each image's verdict as its
    cells are covered, in the map's order first, then in random orders."""
    rng = np.random.default_rng(seed)
    steps, random_orders = settings["steps"], settings["random_orders"]
    orders = [
        deletion_orders(heat, real, random_orders, rng)
        for heat, real in zip(maps, towards_real, strict=True)
    ]
    stacks = (
        deletion_copies(image, occlusion, order, steps)
        for image, order in zip(inputs, orders, strict=True)
    )
    return np.stack(
        [
            deletion_curves(p, scores, 1 + random_orders, steps, real)
            for p, scores, real in zip(
                p_real, scored(score, stacks, batch_size), towards_real, strict=True
            )
        ]
    )


def draw_gallery(
    gallery: pd.DataFrame,
    originals: dict[str, Any],
    explained: dict[str, tuple[float, np.ndarray]],
    region: Any,
    size: int,
    out: Path,
) -> None:
    """Each gallery image's map drawn over it into `out`/gallery/, and gallery.csv listing them
    with the full model's P(real)."""
    (out / GALLERY_DIR).mkdir()
    files = []
    for row in gallery.itertuples():
        (p_real, heat), image = explained[row.id], originals[row.id]
        file = f"{GALLERY_DIR}/{row.kind}-{row.rank}.png"
        title = f"{GALLERY_KINDS[row.kind]}: {row.label} image, p-score {p_real:.3f}"
        save_map(out / file, image, heat, region(image.width, image.height, size), title)
        files.append(file)
    gallery.assign(p_real=[explained[i][0] for i in gallery["id"]], file=files)[
        ["kind", "rank", "id", "label", "p_real", "file"]
    ].to_csv(out / GALLERY_FILE, index=False)


def explain_backbone(name: str, params: dict[str, Any], splits: pd.DataFrame, out: Path) -> None:
    """Backbone `name`'s gallery and deletion curves, into the folder `out`."""
    settings, backbone = params["explain"], Backbone.from_spec(backbone_spec(params, name))
    occlusion = Occlusion.from_settings(settings)
    size, mode = backbone.input_size, backbone.input_mode
    threshold = read_json(HEADS_DIR / name / CALIBRATION_FILE)["threshold"]
    scores = pd.read_csv(scores_file(name), dtype={"id": str})[["id", "label", "p_real"]]
    scores = scores.merge(splits[["id", "path"]], on="id")
    gallery = gallery_rows(scores, threshold, settings["gallery"])
    sample = scores.sample(min(settings["images"], len(scores)), random_state=params["seed"])
    ids = list(dict.fromkeys([*gallery["id"], *sample["id"]]))
    paths = scores.set_index("id")["path"]
    originals = {i: decode(paths[i]) for i in gallery["id"]}
    inputs = {
        i: shape_for_model(originals[i] if i in originals else decode(paths[i]), size, mode, i)
        for i in ids
    }
    model, _ = trained_model(params, backbone)
    score = forward(model)
    p_real, maps = occlusion_maps(score, [inputs[i] for i in ids], occlusion, backbone.batch_size)
    explained = {i: (p, heat) for i, p, heat in zip(ids, p_real, maps, strict=True)}

    out.mkdir(parents=True)
    draw_gallery(gallery, originals, explained, INPUT_MODES[mode].region, size, out)
    sampled = list(sample["id"])
    sample_p = np.array([explained[i][0] for i in sampled])
    towards_real = sample_p >= threshold
    curves = deletion_check(
        score,
        [inputs[i] for i in sampled],
        sample_p,
        np.array([explained[i][1] for i in sampled]),
        towards_real,
        occlusion,
        settings,
        backbone.batch_size,
        params["seed"],
    )
    np.savez(
        out / DELETION_FILE,
        ids=np.array(sampled),
        labels=sample["label"].to_numpy(dtype=str),
        p_real=sample_p,
        towards_real=towards_real,
        covered=covered_counts(occlusion.cells, settings["steps"]) / occlusion.cells,
        map_curves=curves[:, 0],
        random_curves=curves[:, 1:],
    )


def main() -> None:
    # every backbone in params.yaml, always, as in train
    parse_arguments("explain", __doc__.splitlines()[0])
    params = load_params()
    occlusion = Occlusion.from_settings(params["explain"])  # settings checked before any work
    covered_counts(occlusion.cells, params["explain"]["steps"])
    for spec in params["backbones"].values():
        cell_edges(spec["input_size"], occlusion.grid)
    splits = pd.read_csv(SPLITS, dtype={"id": str})
    with atomic_path(EXPLANATIONS_DIR) as folder:
        folder.mkdir()
        for name in params["backbones"]:
            start = time.perf_counter()
            explain_backbone(name, params, splits, folder / name)
            seconds = time.perf_counter() - start
            print(f"explain {name}: gallery and deletion check in {seconds:.1f} s")


if __name__ == "__main__":
    run(main, "explain")
