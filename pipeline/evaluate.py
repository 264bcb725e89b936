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
from scipy.stats import rankdata
from sklearn import metrics

from pipeline.calibrate import Calibration, apply_calibration, load_calibration
from pipeline.features import FEATURES_DIR, load_features
from pipeline.head import MODELS_DIR, head_scores, load_head
from pipeline.images import LABELS
from pipeline.io import atomic_path, read_json, write_json
from pipeline.params import load_params
from pipeline.prepare import CONFOUNDS, SPLITS
from pipeline.robustness import PERTURBATIONS, ROBUSTNESS_DIR, summarize

METRICS_DIR = Path("metrics")
EVAL_DIR = Path("eval")
CONFOUND_WARNING_AUC = 0.75
SIZE_BANDS = ((0, "under 64 px"), (64, "64-255 px"), (256, "256-1023 px"), (1024, "1024 px and up"))
BOOTSTRAP_SAMPLES = 1000


def expected_calibration_error(labels: np.ndarray, p_real: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width bins of P(real): mean |observed real rate - mean score|,
    weighted by the share of images in each bin."""
    return float(
        sum(
            row["images"] * abs(row["observed_real_rate"] - row["mean_score"])
            for row in reliability_rows(labels, p_real, bins)
        )
        / len(labels)
    )


def bootstrap_ci(
    labels: np.ndarray,
    p_real: np.ndarray,
    threshold: float,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals for accuracy, balanced accuracy and ROC-AUC.

    Resamples that hold a single class (possible on tiny test sets) are left out.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), (samples, len(labels)))
    y, p = labels[rows], p_real[rows]
    positives = y.sum(axis=1)
    both = (positives > 0) & (positives < len(labels))
    y, p, positives = y[both], p[both], positives[both]
    negatives = len(labels) - positives
    correct = (p >= threshold).astype(int) == y
    recall_real = (correct & (y == 1)).sum(axis=1) / positives
    recall_ai = (correct & (y == 0)).sum(axis=1) / negatives
    # ROC-AUC as the Mann-Whitney U statistic, from average ranks (ties count one half)
    ranks = rankdata(p, axis=1)
    auc = ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    scores = {
        "accuracy": correct.mean(axis=1),
        "balanced_accuracy": (recall_real + recall_ai) / 2,
        "roc_auc": auc,
    }
    return {
        name: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
        for name, values in scores.items()
        if len(values)
    }


def classification_metrics(labels: np.ndarray, p_real: np.ndarray, threshold: float) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, ROC-AUC, AP, confusion matrix,
    calibration (ECE, Brier, log-loss) and bootstrap 95 % intervals."""
    predicted = (p_real >= threshold).astype(int)
    report = metrics.classification_report(
        labels, predicted, labels=range(len(LABELS)), target_names=LABELS, output_dict=True,
        zero_division=0,
    )  # fmt: skip
    both_classes = len(np.unique(labels)) == len(LABELS)
    return {
        "images": len(labels),
        "threshold": threshold,
        "accuracy": metrics.accuracy_score(labels, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
        "roc_auc": metrics.roc_auc_score(labels, p_real) if both_classes else None,
        "average_precision": metrics.average_precision_score(labels, p_real),
        **calibration_quality(labels, p_real),
        "ci95": bootstrap_ci(labels, p_real, threshold),
        "per_class": {
            name: {key: report[name][key] for key in ("precision", "recall", "f1-score", "support")}
            for name in LABELS
        },
        "confusion_matrix": {
            "labels": list(LABELS),  # rows: true label, columns: predicted label
            "matrix": metrics.confusion_matrix(labels, predicted, labels=range(len(LABELS)))
            .astype(int)
            .tolist(),
        },
    }


def calibration_quality(labels: np.ndarray, p_real: np.ndarray) -> dict[str, float]:
    return {
        "ece": expected_calibration_error(labels, p_real),
        "brier": metrics.brier_score_loss(labels, p_real),
        "log_loss": metrics.log_loss(labels, np.clip(p_real, 1e-7, 1 - 1e-7), labels=[0, 1]),
    }


def reliability_rows(labels: np.ndarray, p_real: np.ndarray, bins: int = 15) -> list:
    """Reliability diagram points: mean score against observed share of real images, per bin."""
    bin_of = np.minimum((p_real * bins).astype(int), bins - 1)
    return [
        {
            "mean_score": float(p_real[bin_of == b].mean()),
            "observed_real_rate": float(labels[bin_of == b].mean()),
            "images": int((bin_of == b).sum()),
        }
        for b in np.unique(bin_of)
    ]


def size_band(width: int, height: int) -> str:
    return [name for lowest, name in SIZE_BANDS if min(width, height) >= lowest][-1]


def breakdowns(
    images: pd.DataFrame, labels: np.ndarray, p_real: np.ndarray, threshold: float
) -> dict[str, dict[str, dict]]:
    """Metrics per source, image format and size band, so that a one-source result shows."""
    frame = images.assign(
        size_band=[size_band(w, h) for w, h in zip(images["width"], images["height"], strict=True)],
        correct=(p_real >= threshold).astype(int) == labels,
        label_id=labels,
        p_real=p_real,
    )
    result: dict[str, dict[str, dict]] = {}
    for column in ("source_name", "format", "size_band"):
        result[column] = {}
        for group, rows in frame.groupby(column):
            both = rows["label_id"].nunique() == len(LABELS)
            result[column][str(group)] = {
                "images": len(rows),
                "real": int(rows["label_id"].sum()),
                "accuracy": float(rows["correct"].mean()),
                "roc_auc": float(metrics.roc_auc_score(rows["label_id"], rows["p_real"]))
                if both
                else None,
            }
    return result


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
