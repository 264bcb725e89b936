"""Stage `train`: the dense head on (balanced) training features, early-stopped on validation,
then calibrated on validation.

`python -m pipeline.train <backbone>` writes models/<backbone>/head.weights.h5, the calibrator and
decision threshold in models/<backbone>/calibration.json (see pipeline.calibrate), and the
training curves through DVCLive's Keras callback in dvclive/train/<backbone>/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from pipeline.balance import BALANCED_DIR
from pipeline.calibrate import calibrate
from pipeline.features import FEATURES_DIR, load_features
from pipeline.head import MODELS_DIR, build_head, head_scores
from pipeline.io import atomic_path, write_json
from pipeline.params import load_params

LIVE_DIR = Path("dvclive/train")


def seed_everything(seed: int) -> None:
    """Same data and params give the same weights on CPU."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def dataset(features: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((features, labels.astype("float32")))


def train_head(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    head: dict[str, Any],
    seed: int,
    callbacks: list[keras.callbacks.Callback] = (),
) -> keras.Model:
    """Fit the head with Adam and binary cross-entropy; the best val-loss weights are kept."""
    seed_everything(seed)
    model = build_head(train[0].shape[1], **head)
    model.compile(
        optimizer=keras.optimizers.Adam(head["learning_rate"]),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=head["patience"], restore_best_weights=True
    )
    # Datasets, not arrays: from arrays, Keras builds a new input pipeline every epoch, which
    # took over a third of a small head's fit time (BENCHMARKS.md).
    model.fit(
        dataset(*train).shuffle(len(train[0]), seed=seed).batch(head["batch_size"]),
        validation_data=dataset(*val).batch(head["batch_size"]),
        epochs=head["epochs"],
        callbacks=[early_stopping, *callbacks],
        shuffle=False,  # the dataset shuffles itself; Keras warns that it ignores shuffle=True
        verbose=2,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    with np.load(BALANCED_DIR / args.backbone / "train.npz") as balanced:
        train = (balanced["features"], balanced["labels"])
    val_features, val_labels, _ = load_features(FEATURES_DIR / args.backbone, "val")
    with Live(str(LIVE_DIR / args.backbone), dvcyaml=False, save_dvc_exp=False) as live:
        model = train_head(
            train,
            (val_features, val_labels),
            params["head"],
            params["seed"],
            callbacks=[DVCLiveCallback(live=live)],
        )
    calibration = calibrate(val_labels, head_scores(model, val_features), params["calibration"])
    with atomic_path(MODELS_DIR / args.backbone / "head.weights.h5") as tmp:
        model.save_weights(tmp)
    write_json(
        MODELS_DIR / args.backbone / "calibration.json",
        {**calibration, "fitted_on": "val", "val_images": len(val_labels)},
    )
    print(
        f"train {args.backbone}: calibration {calibration['method']}, "
        f"threshold {calibration['threshold']:.4f}"
    )


if __name__ == "__main__":
    main()
