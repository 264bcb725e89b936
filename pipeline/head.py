"""The dense classification head trained on cached backbone features."""

from __future__ import annotations

from typing import Any

import keras


def build_head(input_dim: int, units: int, dropout: float, **_: Any) -> keras.Model:
    """Features in, P(real) out. Extra head params (epochs, learning_rate...) are ignored here."""
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Dropout(dropout)(inputs)
    x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_real")(x)
    return keras.Model(inputs, outputs, name="head")
