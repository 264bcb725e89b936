"""Calibration: make P(real) honest on the validation split, and choose the threshold there.

The train stage fits a calibrator (temperature scaling by default, Platt scaling or isotonic
regression by config) to the trained head's validation scores, picks the decision threshold on
the calibrated validation scores, and writes both to models/heads/<backbone>/calibration.json.
Neither sees the test split. The same Calibration layer turns the head's test scores into p-scores
in the train stage, and is part of the exported inference model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from pipeline.errors import not_one_of
from pipeline.params import CALIBRATION_METHODS, THRESHOLD_RULES

EPSILON = 1e-7


def _logit(p: Any) -> Any:
    p = keras.ops.clip(p, EPSILON, 1 - EPSILON)
    return keras.ops.log(p) - keras.ops.log1p(-p)


@keras.saving.register_keras_serializable(package="aiic")
class Calibration(keras.layers.Layer):
    """Maps the head's P(real) to a calibrated P(real): the one implementation, numpy and Keras."""

    def __init__(self, method: str = "none", parameters: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.parameters = parameters or {}

    def call(self, p_real: Any) -> Any:
        p_real = keras.ops.cast(p_real, "float32")
        if self.method == "temperature":
            return keras.ops.sigmoid(_logit(p_real) / self.parameters["temperature"])
        if self.method == "platt":
            slope, intercept = self.parameters["slope"], self.parameters["intercept"]
            return keras.ops.sigmoid(slope * _logit(p_real) + intercept)
        if self.method == "isotonic":
            return _interpolate(p_real, self.parameters["x"], self.parameters["y"])
        return p_real

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "parameters": self.parameters}


def _interpolate(p: Any, xs: list[float], ys: list[float]) -> Any:
    """Piecewise-linear interpolation of p over the isotonic fit's (x, y) knots, clipped."""
    x = keras.ops.convert_to_tensor(np.asarray(xs, np.float32))
    y = keras.ops.convert_to_tensor(np.asarray(ys, np.float32))
    shape = keras.ops.shape(p)
    flat = keras.ops.clip(keras.ops.reshape(p, (-1,)), xs[0], xs[-1])
    right = keras.ops.clip(keras.ops.searchsorted(x, flat, side="right"), 1, len(xs) - 1)
    x0, x1 = keras.ops.take(x, right - 1), keras.ops.take(x, right)
    y0, y1 = keras.ops.take(y, right - 1), keras.ops.take(y, right)
    weight = keras.ops.clip((flat - x0) / keras.ops.maximum(x1 - x0, EPSILON), 0.0, 1.0)
    return keras.ops.reshape(y0 + weight * (y1 - y0), shape)


def fit_calibration(labels: np.ndarray, p_real: np.ndarray, method: str) -> Calibration:
    """A Calibration fitted on (validation) labels and scores."""
    logits = keras.ops.convert_to_numpy(_logit(p_real.astype(np.float32))).astype(np.float64)
    if method == "temperature":

        def negative_log_likelihood(log_temperature: float) -> float:
            q = 1 / (1 + np.exp(-logits / np.exp(log_temperature)))
            q = np.clip(q, EPSILON, 1 - EPSILON)
            return -np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q))

        best = minimize_scalar(negative_log_likelihood, bounds=(-5, 5), method="bounded")
        return Calibration("temperature", {"temperature": float(np.exp(best.x))})
    if method == "platt":
        model = LogisticRegression(C=1e6).fit(logits[:, None], labels)
        return Calibration(
            "platt", {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}
        )
    if method == "isotonic":
        model = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p_real, labels)
        return Calibration(
            "isotonic",
            {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()},
        )
    if method == "none":
        return Calibration("none")
    raise not_one_of("calibration.method", method, CALIBRATION_METHODS)


def apply_calibration(calibration: Calibration, p_real: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(calibration(p_real.astype(np.float32))).astype(np.float64)


def choose_threshold(
    labels: np.ndarray, p_real: np.ndarray, rule: str, target_fpr_real: float = 0.05
) -> float:
    """The decision threshold on P(real), from validation scores only.

    balanced_accuracy: the score cut with the best balanced accuracy (ties: closest to 0.5).
    fpr_real: the cut that calls at most `target_fpr_real` of real images AI-generated.
    """
    if rule == "fpr_real":
        return float(np.quantile(p_real[labels == 1], target_fpr_real, method="lower"))
    if rule != "balanced_accuracy":
        raise not_one_of("calibration.threshold", rule, THRESHOLD_RULES)
    candidates = np.unique(np.append(p_real, 0.5))
    ai, real = np.sort(p_real[labels == 0]), np.sort(p_real[labels == 1])
    ai_correct = np.searchsorted(ai, candidates, side="left")  # AI images scored below the cut
    real_correct = len(real) - np.searchsorted(real, candidates, side="left")
    # balanced accuracy times 2 * len(ai) * len(real): integers, so that equal ones tie exactly
    scores = ai_correct * max(len(real), 1) + real_correct * max(len(ai), 1)
    best = candidates[scores == scores.max()]
    return float(best[np.argmin(np.abs(best - 0.5))])


def calibrate(labels: np.ndarray, p_real: np.ndarray, config: dict[str, Any]) -> dict[str, Any]:
    """Fit the `calibration` params' method to (validation) labels and head scores, and choose
    the threshold on the calibrated scores: the record calibration.json holds."""
    calibration = fit_calibration(labels, p_real, config["method"])
    calibrated = apply_calibration(calibration, p_real)
    return {
        "method": calibration.method,
        "parameters": calibration.parameters,
        "threshold": choose_threshold(
            labels, calibrated, config["threshold"], config["target_fpr_real"]
        ),
        "threshold_rule": config["threshold"],
    }
