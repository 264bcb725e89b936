"""The dense classification head trained on cached backbone features: built, fitted and scored
here, so that every stage that trains one (train, crossgen, and a network's first phase of
fine-tuning) trains it the same way.

The head outputs a logit, not a probability: the loss takes it as such, and calibration
(pipeline.models.calibrate) works on it directly, so that no score is ever recovered from a clipped
sigmoid. The sigmoid comes last, inside the calibration."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.models import backend


def build_head(input_dim: int, units: int, dropout: float, **_: Any) -> keras.Model:
    """Features in, the logit of P(real) out. Extra head params (epochs, learning_rate...) are
    ignored here.

    `units: 0` leaves out the hidden layer: the head is one logistic unit on the features, the
    linear probe of UnivFD (Ojha et al., CVPR 2023). Negative units are refused."""
    if not isinstance(units, int) or isinstance(units, bool) or units < 0:
        raise ConfigError(f"head.units must be a whole number of 0 or more, got {units!r}")
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Dropout(dropout)(inputs)
    if units:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="head")


def head_logits(model: keras.Model, features: np.ndarray) -> np.ndarray:
    """The head's logit of P(real) for each feature row (pipeline.models.calibrate turns it into P).

    One direct call, not `model.predict`, which builds a dataset and traces a function on every
    call: the train stage's eight calls per head cost about a third of a second that way."""
    if not len(features):
        return np.empty(0)
    logits = model(features, training=False)
    return keras.ops.convert_to_numpy(logits)[:, 0].astype(np.float64)


def logit_loss() -> keras.losses.Loss:
    """Binary cross-entropy on the logit: Keras computes it stably, with no clipped sigmoid."""
    return keras.losses.BinaryCrossentropy(from_logits=True)


def logit_metrics() -> list[keras.metrics.Metric]:
    """Accuracy of logits: P(real) >= 0.5 is a logit >= 0, named as Keras names "accuracy"."""
    return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]


def seed_everything(seed: int) -> None:
    """Same data and params give the same weights on CPU (pipeline.models.backend.deterministic)."""
    backend.deterministic(seed)


def feature_batches(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int = 0,
    *,
    shuffle: bool = False,
    class_weight: np.ndarray | None = None,
) -> Any:
    """What `fit` takes: (features, labels) or, given a weight per class id, (features, labels,
    each row's weight) in batches, shuffled each epoch from `seed` where `shuffle`. On TensorFlow
    a tf.data pipeline (pipeline.models.backend.tensorflow_batches): from arrays Keras builds a new
    input pipeline every epoch, which took over a third of a small head's fit time, and a Python
    dataset twice what tf.data takes (BENCHMARKS.md); on the other backends a FeatureBatches."""
    if backend.name() == backend.TENSORFLOW:
        columns = (features, labels.astype("float32"))
        if class_weight is not None:
            columns += (class_weight[labels].astype("float32"),)
        return backend.tensorflow_batches(columns, batch_size, seed if shuffle else None)
    return FeatureBatches(
        features, labels, batch_size, seed, shuffle=shuffle, class_weight=class_weight
    )


class FeatureBatches(keras.utils.PyDataset):
    """(features, labels) or (features, labels, each row's weight) in batches, in an order drawn
    anew each epoch from the seed where `shuffle`, else as given: batches that depend on the seed
    and the epoch alone."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: bool = False,
        class_weight: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.features, self.labels = features, labels.astype("float32")
        self.weights = None if class_weight is None else class_weight[labels].astype("float32")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        count = len(self.labels)
        shuffled = np.random.default_rng([self.seed, epoch]).permutation(count)
        self.order = shuffled if self.shuffle else np.arange(count)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        columns = (self.features[rows], self.labels[rows])
        return columns if self.weights is None else (*columns, self.weights[rows])

    def on_epoch_end(self) -> None:
        self.start_epoch(self.epoch + 1)


def train_head(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    head: dict[str, Any],
    seed: int,
    callbacks: list[keras.callbacks.Callback] = (),
    class_weight: np.ndarray | None = None,
) -> keras.Model:
    """Fit the head with Adam and binary cross-entropy, each training row weighted by its class
    where `class_weight` (one weight per class id) is given; the best val-loss weights are kept."""
    seed_everything(seed)
    model = build_head(train[0].shape[1], **head)
    model.compile(
        optimizer=keras.optimizers.Adam(head["learning_rate"]),
        loss=logit_loss(),
        metrics=logit_metrics(),
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=head["patience"], restore_best_weights=True
    )
    batch_size = head["batch_size"]
    model.fit(
        feature_batches(*train, batch_size, seed, shuffle=True, class_weight=class_weight),
        validation_data=feature_batches(*val, batch_size),
        epochs=head["epochs"],
        callbacks=[early_stopping, *callbacks],
        shuffle=False,  # the dataset shuffles itself; Keras warns that it ignores shuffle=True
        verbose=2,
    )
    return model
