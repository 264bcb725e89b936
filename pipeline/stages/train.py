"""Stage `train`: for every backbone, the dense head on (balanced) training features, early-stopped
on validation, calibrated on validation, and the test split scored.

`python -m pipeline train` writes, for each backbone <b> in params.yaml's `backbones`:
- models/heads/<b>/head.weights.h5 and models/heads/<b>/calibration.json (the calibrator and the
  decision threshold, see pipeline.models.calibrate);
- through DVCLive, into models/heads/history/: loss and accuracy on train and validation per
  epoch (plots/metrics/<b>/{train,eval}/<metric>.tsv, dvc.yaml's training-curve plots) and each
  backbone's last values (metrics.json);
- data/scores/<b>.csv: each test image's uncalibrated (p_raw) and calibrated (p_real) P(real),
  and its calibrated P(real) after each of the robustness stage's perturbations (p_real_<name>,
  empty where the perturbed image could not be scored).

One process trains every head: a head trains faster than TensorFlow imports (BENCHMARKS.md), so
a head experiment pays that import once, and the evaluate stage, which only reads scores, needs no
TensorFlow at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd
from dvclive.utils import standardize_metric_name

from pipeline.core.entry import run
from pipeline.core.io import atomic_path, write_json
from pipeline.core.paths import (
    CALIBRATION_FILE,
    CLASS_WEIGHT_KEY,
    HEAD_WEIGHTS_FILE,
    HEADS_DIR,
    HISTORY_DIR,
    SCORES_DIR,
    balanced_file,
    features_dir,
    robustness_file,
    scores_file,
)
from pipeline.core.tracking import open_live
from pipeline.models.calibrate import Calibration, apply_calibration, calibrate, uncalibrated
from pipeline.models.head import head_logits, train_head
from pipeline.models.metrics import PERTURBED_PREFIX
from pipeline.models.runtime import load_features
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import load_params

if TYPE_CHECKING:
    from dvclive import Live


class CurvesToLive(keras.callbacks.Callback):
    """One backbone's training curves into the stage's Live, as <backbone>/train/<metric> and
    <backbone>/eval/<metric> from step 0. DVCLive's own Keras callback (DVCLiveCallback) names
    them alike but without the backbone, and ends its Live after one fit: it logs one model per
    Live, and this stage fits one per backbone."""

    def __init__(self, live: Live, backbone: str) -> None:
        super().__init__()
        self.live, self.backbone = live, backbone

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.live.step = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for metric, value in (logs or {}).items():
            split_metric = standardize_metric_name(metric, "dvclive.keras")
            self.live.log_metric(f"{self.backbone}/{split_metric}", value)
        self.live.next_step()


def perturbed_features(path: Path, ids: pd.Series) -> dict[str, np.ndarray]:
    """The robustness stage's features per perturbation, rows aligned to `ids`."""
    with np.load(path) as stored:
        position = {image_id: row for row, image_id in enumerate(stored["ids"])}
        rows = [position[image_id] for image_id in ids]
        return {name: stored[name][rows] for name in stored.files if name != "ids"}


def score_test_split(
    model: keras.Model,
    calibration: Calibration,
    features: np.ndarray,
    index: pd.DataFrame,
    perturbed: dict[str, np.ndarray],
) -> pd.DataFrame:
    """One row per test image: id, label, p_raw (the head's own sigmoid), p_real (calibrated)
    and p_real_<perturbation> (NaN where the perturbed image gave no features)."""
    logits = head_logits(model, features)
    scores = index[["id", "label"]].assign(
        p_raw=uncalibrated(logits), p_real=apply_calibration(calibration, logits)
    )
    for name, rows in perturbed.items():
        usable = ~np.isnan(rows).any(axis=1)
        column = np.full(len(rows), np.nan)
        column[usable] = apply_calibration(calibration, head_logits(model, rows[usable]))
        scores[PERTURBED_PREFIX + name] = column
    return scores


def train_backbone(
    name: str, params: dict[str, Any], heads: Path, scores: Path, live: Live
) -> None:
    """Train, calibrate and score one backbone's head, writing into `heads` (in place of
    models/heads/) and `scores` (in place of data/scores/), its curves into `live`."""
    with np.load(balanced_file(name)) as balanced:
        train = (balanced["features"], balanced["labels"])
        class_weight = balanced.get(CLASS_WEIGHT_KEY)
    val_features, val_labels, _ = load_features(features_dir(name), "val")
    (heads / name).mkdir()
    model = train_head(
        train,
        (val_features, val_labels),
        params["head"],
        params["seed"],
        callbacks=[CurvesToLive(live, name)],
        class_weight=class_weight,
    )
    fitted = calibrate(val_labels, head_logits(model, val_features), params["calibration"])
    model.save_weights(heads / name / HEAD_WEIGHTS_FILE)
    write_json(
        heads / name / CALIBRATION_FILE,
        {**fitted, "fitted_on": "val", "val_images": len(val_labels)},
    )
    test_features, _, test_index = load_features(features_dir(name), "test")
    score_test_split(
        model,
        Calibration(fitted["method"], fitted["parameters"]),
        test_features,
        test_index,
        perturbed_features(robustness_file(name), test_index["id"]),
    ).to_csv(scores / scores_file(name).name, index=False)
    print(f"train {name}: calibration {fitted['method']}, threshold {fitted['threshold']:.4f}")


def main() -> None:
    # every backbone in params.yaml, always: a backbone name here is refused, not ignored
    parse_arguments("train", __doc__.splitlines()[0])
    params = load_params()
    with atomic_path(HEADS_DIR) as heads, atomic_path(SCORES_DIR) as scores:
        heads.mkdir()
        scores.mkdir()
        with open_live(heads / HISTORY_DIR.relative_to(HEADS_DIR)) as live:
            for name in params["backbones"]:
                train_backbone(name, params, heads, scores, live)


if __name__ == "__main__":
    run(main, "train")
