"""The dense classification head trained on cached backbone features."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from pipeline.errors import ConfigError


def build_head(input_dim: int, units: int, dropout: float, **_: Any) -> keras.Model:
    """Features in, P(real) out. Extra head params (epochs, learning_rate...) are ignored here.

    `units: 0` leaves out the hidden layer: the head is one logistic unit on the features, the
    linear probe of UnivFD (Ojha et al., CVPR 2023). Negative units are refused."""
    if not isinstance(units, int) or isinstance(units, bool) or units < 0:
        raise ConfigError(f"head.units must be a whole number of 0 or more, got {units!r}")
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Dropout(dropout)(inputs)
    if units:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_real")(x)
    return keras.Model(inputs, outputs, name="head")


def head_scores(model: keras.Model, features: np.ndarray) -> np.ndarray:
    """Uncalibrated P(real) of feature rows.

    One direct call, not `model.predict`, which builds a dataset and traces a function on every
    call: the train stage's eight calls per head cost about a third of a second that way."""
    if not len(features):
        return np.empty(0)
    p_real = model(features, training=False)
    return keras.ops.convert_to_numpy(p_real)[:, 0].astype(np.float64)
