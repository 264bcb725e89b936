"""Stage `evaluate`: test-split metrics of one backbone's head.

`python -m pipeline.evaluate <backbone>` writes metrics/<backbone>.json, the per-image scores in
eval/<backbone>/predictions.csv, and ROC, precision-recall and confusion-matrix plots through
DVCLive in eval/<backbone>/plots/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from dvclive import Live
from scipy.stats import rankdata
from sklearn import metrics

from pipeline.features import FEATURES_DIR, load_features
from pipeline.head import build_head
from pipeline.images import LABELS
from pipeline.io import atomic_path, write_json
from pipeline.params import load_params
from pipeline.train import MODELS_DIR

METRICS_DIR = Path("metrics")
EVAL_DIR = Path("eval")
THRESHOLD = 0.5  # score >= threshold means "real"
BOOTSTRAP_SAMPLES = 1000


def expected_calibration_error(labels: np.ndarray, p_real: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width bins of P(real): mean |observed real rate - mean score|."""
    bin_of = np.minimum((p_real * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(bin_of):
        members = bin_of == b
        error += members.mean() * abs(labels[members].mean() - p_real[members].mean())
    return float(error)


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
    """Accuracy, balanced accuracy, per-class precision/recall/F1, ROC-AUC, AP, confusion matrix."""
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
        "ece": expected_calibration_error(labels, p_real),
        "brier": metrics.brier_score_loss(labels, p_real),
        "log_loss": metrics.log_loss(labels, np.clip(p_real, 1e-7, 1 - 1e-7), labels=[0, 1]),
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


def predict_head(backbone_dir: Path, weights: Path, head: dict[str, Any], split: str):  # noqa: ANN201
    """(labels, P(real), index rows) of one split through the trained head."""
    features, labels, index = load_features(backbone_dir, split)
    model = build_head(features.shape[1], **head)
    model.load_weights(weights)
    p_real = model.predict(features, batch_size=1024, verbose=0)[:, 0]
    return labels, p_real.astype(np.float64), index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    labels, p_real, index = predict_head(
        FEATURES_DIR / args.backbone,
        MODELS_DIR / args.backbone / "head.weights.h5",
        params["head"],
        "test",
    )
    results = classification_metrics(labels, p_real, THRESHOLD)
    write_json(METRICS_DIR / f"{args.backbone}.json", results)
    with atomic_path(EVAL_DIR / args.backbone) as out:
        out.mkdir()
        index[["id", "label"]].assign(p_real=p_real).to_csv(out / "predictions.csv", index=False)
        with Live(str(out), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            names = np.array(LABELS)
            live.log_sklearn_plot("roc", labels, p_real, name="roc.json")
            live.log_sklearn_plot("precision_recall", labels, p_real, name="precision_recall.json")
            live.log_sklearn_plot(
                "confusion_matrix", names[labels], names[(p_real >= THRESHOLD).astype(int)],
                name="confusion_matrix.json",
            )  # fmt: skip
    print(
        f"evaluate {args.backbone}: accuracy {results['accuracy']:.4f}, "
        f"ROC-AUC {results['roc_auc']}, on {results['images']} test image(s)"
    )


if __name__ == "__main__":
    main()
