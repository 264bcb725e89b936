"""Stage `evaluate`: test-split metrics of one backbone's calibrated head.

`python -m pipeline.evaluate <backbone>` writes metrics/<backbone>.json (discrimination with
bootstrap intervals, calibration before and after, breakdowns per source, format and size band),
metrics/<backbone>_robustness.json (the same head on the robustness stage's perturbed-image
features), the per-image scores in eval/<backbone>/predictions.csv, ROC, precision-recall and
confusion-matrix plots through DVCLive, and reliability and robustness plots in
eval/<backbone>/plots/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from dvclive import Live

from pipeline.calibrate import Calibration, apply_calibration, load_calibration
from pipeline.features import FEATURES_DIR, load_features
from pipeline.head import MODELS_DIR, head_scores, load_head
from pipeline.images import LABELS
from pipeline.io import atomic_path, read_json, write_json
from pipeline.metrics import (
    METRICS_DIR,
    breakdowns,
    calibration_quality,
    classification_metrics,
    reliability_rows,
)
from pipeline.params import load_params
from pipeline.prepare import CONFOUNDS, SPLITS
from pipeline.robustness import PERTURBATIONS, ROBUSTNESS_DIR, summarize

EVAL_DIR = Path("eval")
CONFOUND_WARNING_AUC = 0.75


def perturbed_scores(
    path: Path, ids: pd.Series, head: keras.Model, calibration: Calibration
) -> dict[str, np.ndarray]:
    """Calibrated P(real) of the robustness stage's perturbed-image features, aligned to `ids`."""
    with np.load(path) as stored:
        position = {image_id: row for row, image_id in enumerate(stored["ids"])}
        rows = [position[image_id] for image_id in ids]
        perturbed = {name: stored[name][rows] for name in PERTURBATIONS}
    scores = {}
    for name, features in perturbed.items():
        usable = ~np.isnan(features).any(axis=1)
        scores[name] = np.full(len(rows), np.nan)
        scores[name][usable] = apply_calibration(calibration, head_scores(head, features[usable]))
    return scores


def warn_about_confounds(path: Path) -> None:
    if not path.is_file():
        return
    auc = read_json(path)["all_cues"]["roc_auc"]
    if auc is not None and auc >= CONFOUND_WARNING_AUC:
        print(
            f"WARNING: trivial cues alone (format, JPEG quality, EXIF, size) separate the classes "
            f"with ROC-AUC {auc:.2f} (see {path}): the model may be learning them, not the images."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    models = MODELS_DIR / args.backbone
    features, labels, index = load_features(FEATURES_DIR / args.backbone, "test")
    head = load_head(models / "head.weights.h5", features.shape[1], params["head"])
    raw = head_scores(head, features)
    calibration, threshold = load_calibration(models / "calibration.json")
    p_real = apply_calibration(calibration, raw)
    results = classification_metrics(labels, p_real, threshold)
    results["calibration"] = {
        "method": calibration.method,
        "fitted_on": "val",
        "before": calibration_quality(labels, raw),
        "after": calibration_quality(labels, p_real),
    }
    images = index.merge(pd.read_csv(SPLITS, dtype={"id": str}).drop(columns="label"), on="id")
    results["breakdown"] = breakdowns(images, labels, p_real, threshold)
    write_json(METRICS_DIR / f"{args.backbone}.json", results)
    robustness = {"none": p_real} | perturbed_scores(
        ROBUSTNESS_DIR / args.backbone / "features.npz", index["id"], head, calibration
    )
    robust_results = summarize(labels, robustness, threshold)
    write_json(METRICS_DIR / f"{args.backbone}_robustness.json", robust_results)
    with atomic_path(EVAL_DIR / args.backbone) as out:
        out.mkdir()
        index[["id", "label"]].assign(p_raw=raw, p_real=p_real).to_csv(
            out / "predictions.csv", index=False
        )
        with Live(str(out), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            names = np.array(LABELS)
            live.log_sklearn_plot("roc", labels, p_real, name="roc.json")
            live.log_sklearn_plot("precision_recall", labels, p_real, name="precision_recall.json")
            live.log_sklearn_plot(
                "confusion_matrix", names[labels], names[(p_real >= threshold).astype(int)],
                name="confusion_matrix.json",
            )  # fmt: skip
        for name, scores in (("uncalibrated", raw), ("calibrated", p_real)):
            write_json(out / "plots" / f"reliability_{name}.json", reliability_rows(labels, scores))
        write_json(
            out / "plots" / "robustness.json",
            [{"perturbation": name, **values} for name, values in robust_results.items()],
        )
    print(
        f"evaluate {args.backbone}: accuracy {results['accuracy']:.4f}, ROC-AUC "
        f"{results['roc_auc']}, ECE {results['calibration']['before']['ece']:.4f} -> "
        f"{results['ece']:.4f}, on {results['images']} test image(s)"
    )
    warn_about_confounds(CONFOUNDS)


if __name__ == "__main__":
    main()
