"""Stage `evaluate`: test-split metrics of every backbone's calibrated head, from its scores.

`python -m pipeline.evaluate` reads, for each backbone <b> in params.yaml's `backbones`, the
per-image test scores that the train stage wrote to data/scores/<b>.csv, and writes
metrics/<b>.json (discrimination with bootstrap intervals, calibration before and after,
breakdowns per source, format and size band), metrics/<b>_robustness.json (the same metrics under
each perturbation), and the data of the ROC, precision-recall, confusion-matrix, reliability and
robustness plots in eval/<b>/plots/.

Its start-up is part of every head experiment, so it imports no TensorFlow, and one process
evaluates every backbone: importing pandas and scikit-learn takes longer than the work
(BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.images import LABELS
from pipeline.io import atomic_path, read_json, write_json
from pipeline.metrics import (
    PERTURBED_PREFIX,
    breakdowns,
    calibration_quality,
    classification_metrics,
    curve_rows,
    reliability_rows,
    robustness_metrics,
)
from pipeline.params import load_params
from pipeline.paths import CONFOUNDS, HEADS_DIR, METRICS_DIR, SCORES_DIR, SPLITS

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


def evaluate_backbone(name: str, metrics_dir: Path, eval_dir: Path) -> None:
    """Write `metrics_dir`/<name>.json, `metrics_dir`/<name>_robustness.json and `eval_dir`/<name>/
    from data/scores/<name>.csv and the calibration record."""
    scores = pd.read_csv(SCORES_DIR / f"{name}.csv", dtype={"id": str})
    fitted = read_json(HEADS_DIR / name / "calibration.json")
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
    write_json(metrics_dir / f"{name}.json", results)
    perturbed = {
        column.removeprefix(PERTURBED_PREFIX): scores[column].to_numpy()
        for column in scores.columns
        if column.startswith(PERTURBED_PREFIX)
    }
    robust_results = robustness_metrics(labels, {"none": p_real} | perturbed, threshold)
    write_json(metrics_dir / f"{name}_robustness.json", robust_results)
    plots = eval_dir / name / "plots"
    plots.mkdir(parents=True)
    for stem, rows in curve_rows(labels, p_real, threshold).items():
        write_json(plots / f"{stem}.json", rows)
    for kind, values in (("uncalibrated", raw), ("calibrated", p_real)):
        write_json(plots / f"reliability_{kind}.json", reliability_rows(labels, values))
    write_json(
        plots / "robustness.json",
        [{"perturbation": kind, **values} for kind, values in robust_results.items()],
    )
    print(
        f"evaluate {name}: accuracy {results['accuracy']:.4f}, ROC-AUC "
        f"{results['roc_auc']}, ECE {results['calibration']['before']['ece']:.4f} -> "
        f"{results['ece']:.4f}, on {results['images']} test image(s)"
    )


def main() -> None:
    # every backbone in params.yaml, always: a backbone name here is refused, not ignored
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    params = load_params()
    with atomic_path(METRICS_DIR) as metrics_dir, atomic_path(EVAL_DIR) as eval_dir:
        metrics_dir.mkdir()
        eval_dir.mkdir()
        for name in params["backbones"]:
            evaluate_backbone(name, metrics_dir, eval_dir)
    warn_about_confounds(CONFOUNDS)


if __name__ == "__main__":
    main()
