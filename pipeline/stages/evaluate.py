"""Stage `evaluate`: test-split metrics of every backbone's calibrated head, from its scores.

`python -m pipeline evaluate` reads, for each backbone <b> in params.yaml's `backbones`, the
per-image test scores that the train stage wrote to data/scores/<b>.csv, and writes
metrics/<b>.json (discrimination with bootstrap intervals, calibration before and after,
breakdowns per source, format and size band), metrics/<b>_robustness.json (the same metrics under
each perturbation), metrics/<b>_faithfulness.json (the deletion check of the explanation maps,
from the explain stage's curves in data/explanations/<b>/), metrics/<b>_blend.json (P(real) of
partly AI-made composites against their AI area fraction, and whether maps find the AI region,
from the blend stage's data/blends/<b>/), and through DVCLive the ROC, precision-recall,
confusion-matrix, reliability, robustness, deletion and blend plots in eval/
(pipeline.core.paths.plot_file: one folder per kind of plot, which dvc.yaml declares, and one file
per backbone).

Its start-up is part of every head experiment, so it imports no TensorFlow, and one process
evaluates every backbone: importing pandas and scikit-learn takes longer than the work
(BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.core.entry import run
from pipeline.core.io import atomic_path, read_json, write_json
from pipeline.core.paths import (
    BLEND_DIRECTIONS,
    BLEND_MAPS_FILE,
    BLEND_MASKS,
    BLEND_PLOT,
    CALIBRATION_FILE,
    COMPOSITES_FILE,
    CONFOUNDS,
    CUSTOM_PLOT_KINDS,
    DELETION_FILE,
    DELETION_PLOT,
    EVAL_DIR,
    HEADS_DIR,
    METRICS_DIR,
    SPLITS,
    blends_dir,
    explanations_dir,
    metrics_file,
    plot_name,
    scores_file,
)
from pipeline.core.tracking import open_live
from pipeline.data.images import LABELS
from pipeline.models.metrics import (
    CONFOUND_WARNING_AUC,
    PERTURBED_PREFIX,
    RELIABILITY_BINS,
    blend_metrics,
    breakdowns,
    calibration_quality,
    classification_metrics,
    faithfulness,
    kind_and_level,
    map_localisation,
    robustness_metrics,
)
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import load_params

if TYPE_CHECKING:
    from dvclive import Live


def warn_about_confounds(path: Path) -> None:
    if not path.is_file():
        return
    auc = read_json(path)["all_cues"]["roc_auc"]
    if auc is not None and auc >= CONFOUND_WARNING_AUC:
        print(
            f"WARNING: trivial cues alone (format, JPEG quality, EXIF, size) separate the classes "
            f"with ROC-AUC {auc:.2f} (see {path}): the model may be learning them, not the images."
        )


def log_plots(
    live: Live,
    name: str,
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    threshold: float,
    robustness: dict[str, dict],
) -> None:
    """Backbone `name`'s plots through DVCLive: the curves and the confusion matrix of its
    calibrated scores, reliability diagrams of `scores` ("uncalibrated", "calibrated") and its
    robustness grid, by accuracy and by ROC-AUC."""
    p_real = scores["calibrated"]
    live.log_sklearn_plot("roc", labels, p_real, name=plot_name("roc", name))
    live.log_sklearn_plot(
        "precision_recall", labels, p_real, name=plot_name("precision_recall", name)
    )
    names = np.array(LABELS)
    verdicts = names[(p_real >= threshold).astype(int)]
    live.log_sklearn_plot(
        "confusion_matrix", names[labels], verdicts, name=plot_name("confusion_matrix", name)
    )
    for kind, values in scores.items():
        live.log_sklearn_plot(
            "calibration",
            labels,
            values,
            name=plot_name(f"reliability_{kind}", name),
            n_bins=RELIABILITY_BINS,
        )
    rows = []
    for perturbation, values in robustness.items():
        kind, level = kind_and_level(perturbation)
        rows.append({"perturbation": perturbation, "kind": kind, "level": level, **values})
    for plot, x in zip(CUSTOM_PLOT_KINDS, ("accuracy", "roc_auc"), strict=True):
        live.log_plot(plot_name(plot, name), rows, x=x, y="perturbation", template="bar_horizontal")


def evaluate_maps(name: str, metrics_dir: Path, live: Live) -> dict:
    """metrics/<name>_faithfulness.json and the deletion plot (the mean curve of the maps' order
    and of random orders), from the explain stage's deletion curves."""
    with np.load(explanations_dir(name) / DELETION_FILE) as curves:
        covered, by_map, by_chance = (curves[k] for k in ("covered", "map_curves", "random_curves"))
    results = faithfulness(covered, by_map, by_chance)
    write_json(metrics_dir / metrics_file(name, "faithfulness").name, results)
    rows = [
        {"covered": float(share), "map": float(a), "random": float(b)}
        for share, a, b in zip(
            covered, by_map.mean(axis=0), by_chance.mean(axis=(0, 1)), strict=True
        )
    ]
    live.log_plot(plot_name(DELETION_PLOT, name), rows, x="covered", y=["map", "random"])
    return results


def blend_results(folder: Path, threshold: float) -> dict:
    """The blend metrics of one backbone's blend-stage `folder` (composites.csv, maps.npz): the
    curves, rho and flip fraction against `threshold`, and the maps' pointing game and IoU."""
    composites = pd.read_csv(folder / COMPOSITES_FILE)
    results = blend_metrics(composites, threshold)
    with np.load(folder / BLEND_MAPS_FILE) as stored:
        maps, ai_share, mapped = stored["maps"], stored["ai_share"], stored["composites"]
    directions = composites["direction"].to_numpy()[mapped]
    results["maps"] = {
        "all": map_localisation(maps, ai_share),
        **{
            d: map_localisation(maps[directions == d], ai_share[directions == d])
            for d in BLEND_DIRECTIONS
        },
    }
    return results


def evaluate_blends(name: str, threshold: float, metrics_dir: Path, live: Live) -> dict:
    """metrics/<name>_blend.json and the blend plot (mean P(real) per AI area fraction, one
    column per direction and mask), from the blend stage's composites and maps."""
    results = blend_results(blends_dir(name), threshold)
    write_json(metrics_dir / metrics_file(name, "blend").name, results)
    columns = [f"{d}_{m}" for d in BLEND_DIRECTIONS for m in BLEND_MASKS]
    curves = results["curves"]
    rows = [
        {
            "ai_fraction": point["fraction"],
            **{
                f"{d}_{m}": curves[d][m]["points"][i]["p_real"]
                for d in BLEND_DIRECTIONS
                for m in BLEND_MASKS
            },
        }
        for i, point in enumerate(curves["ai_in_real"]["hard"]["points"])
    ]
    live.log_plot(plot_name(BLEND_PLOT, name), rows, x="ai_fraction", y=columns)
    return results


def evaluate_backbone(name: str, metrics_dir: Path, live: Live) -> None:
    """Write <name>.json and <name>_robustness.json into `metrics_dir`, and log the plots into
    `live`, from data/scores/<name>.csv and the calibration record."""
    scores = pd.read_csv(scores_file(name), dtype={"id": str})
    fitted = read_json(HEADS_DIR / name / CALIBRATION_FILE)
    threshold = fitted["threshold"]
    labels = scores["label"].map(LABELS.index).to_numpy(dtype=np.int64)
    raw, p_real = scores["p_raw"].to_numpy(), scores["p_real"].to_numpy()
    results = classification_metrics(labels, p_real, threshold)
    results["calibration"] = {
        "method": fitted["method"],
        "fitted_on": fitted["fitted_on"],
        "before": calibration_quality(labels, raw),
        "after": calibration_quality(labels, p_real),
    }
    images = scores[["id"]].merge(pd.read_csv(SPLITS, dtype={"id": str}), on="id")
    results["breakdown"] = breakdowns(images, labels, p_real, threshold)
    write_json(metrics_dir / metrics_file(name).name, results)
    perturbed = {
        column.removeprefix(PERTURBED_PREFIX): scores[column].to_numpy()
        for column in scores.columns
        if column.startswith(PERTURBED_PREFIX)
    }
    robust_results = robustness_metrics(labels, {"none": p_real} | perturbed, threshold)
    write_json(metrics_dir / metrics_file(name, "robustness").name, robust_results)
    calibrated = {"uncalibrated": raw, "calibrated": p_real}
    log_plots(live, name, labels, calibrated, threshold, robust_results)
    maps = evaluate_maps(name, metrics_dir, live)
    blends = evaluate_blends(name, threshold, metrics_dir, live)["curves"]["ai_in_real"]["hard"]
    print(
        f"evaluate {name}: accuracy {results['accuracy']:.4f}, ROC-AUC "
        f"{results['roc_auc']}, ECE {results['calibration']['before']['ece']:.4f} -> "
        f"{results['ece']:.4f}, on {results['images']} test image(s); explanation maps "
        f"{maps['verdict']} on {maps['images']}; an AI region in a real photograph flips the "
        f"verdict {blends['flip']}"
    )


def main() -> None:
    # every backbone in params.yaml, always: a backbone name here is refused, not ignored
    parse_arguments("evaluate", __doc__.splitlines()[0])
    params = load_params()
    with atomic_path(METRICS_DIR) as metrics_dir, atomic_path(EVAL_DIR) as eval_dir:
        metrics_dir.mkdir()
        with open_live(eval_dir) as live:
            for name in params["backbones"]:
                evaluate_backbone(name, metrics_dir, live)
    warn_about_confounds(CONFOUNDS)


if __name__ == "__main__":
    run(main, "evaluate")
