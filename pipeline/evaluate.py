"""Stage `evaluate`: test-split metrics of one backbone's calibrated head, from its scores.

`python -m pipeline.evaluate <backbone>` reads the per-image test scores that the train stage
wrote to data/scores/<backbone>.csv and writes metrics/<backbone>.json (discrimination with
bootstrap intervals, calibration before and after, breakdowns per source, format and size band),
metrics/<backbone>_robustness.json (the same metrics under each perturbation), ROC,
precision-recall and confusion-matrix plots through DVCLive, and reliability and robustness plots
in eval/<backbone>/plots/. It imports no TensorFlow: its start-up is part of every head
experiment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live

from pipeline.images import LABELS
from pipeline.io import atomic_path, read_json, write_json
from pipeline.metrics import (
    HEADS_DIR,
    METRICS_DIR,
    PERTURBED_PREFIX,
    SCORES_DIR,
    breakdowns,
    calibration_quality,
    classification_metrics,
    reliability_rows,
    robustness_metrics,
)
from pipeline.prepare import CONFOUNDS, SPLITS

EVAL_DIR = Path("eval")
CONFOUND_WARNING_AUC = 0.75


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
    scores = pd.read_csv(SCORES_DIR / f"{args.backbone}.csv", dtype={"id": str})
    fitted = read_json(HEADS_DIR / args.backbone / "calibration.json")
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
    write_json(METRICS_DIR / f"{args.backbone}.json", results)
    perturbed = {
        column.removeprefix(PERTURBED_PREFIX): scores[column].to_numpy()
        for column in scores.columns
        if column.startswith(PERTURBED_PREFIX)
    }
    robust_results = robustness_metrics(labels, {"none": p_real} | perturbed, threshold)
    write_json(METRICS_DIR / f"{args.backbone}_robustness.json", robust_results)
    with atomic_path(EVAL_DIR / args.backbone) as out:
        out.mkdir()
        with Live(str(out), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            names = np.array(LABELS)
            live.log_sklearn_plot("roc", labels, p_real, name="roc.json")
            live.log_sklearn_plot("precision_recall", labels, p_real, name="precision_recall.json")
            live.log_sklearn_plot(
                "confusion_matrix", names[labels], names[(p_real >= threshold).astype(int)],
                name="confusion_matrix.json",
            )  # fmt: skip
        for name, values in (("uncalibrated", raw), ("calibrated", p_real)):
            write_json(out / "plots" / f"reliability_{name}.json", reliability_rows(labels, values))
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
