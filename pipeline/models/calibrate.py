"""Calibration: make P(real) honest on the validation split, and choose the threshold there.

The train stage fits a calibrator (temperature scaling by default, Platt scaling or isotonic
regression by config) to the trained head's validation logits, picks the decision threshold on
the calibrated validation scores, and writes both to models/heads/<backbone>/calibration.json.
Neither sees the test split. The same Calibration layer turns the head's test logits into
p-scores in the train stage, and is the last layer of the exported inference model: heads and
trained networks output logits, so calibration works on them directly and never on a clipped
probability.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from pipeline.core.choices import CALIBRATION_METHODS, THRESHOLD_RULES
from pipeline.core.errors import not_one_of


@keras.saving.register_keras_serializable(package="aiic")
class Calibration(keras.layers.Layer):
    """Maps the head's logit to a calibrated P(real): the one implementation, numpy and Keras.

    `none` is the plain sigmoid; temperature and Platt scaling rescale the logit before it;
    isotonic regression interpolates its fitted steps over the logit."""

    def __init__(self, method: str = "none", parameters: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.parameters = parameters or {}

    def call(self, logits: Any) -> Any:
        logits = keras.ops.cast(logits, "float32")
        if self.method == "temperature":
            return keras.ops.sigmoid(logits / self.parameters["temperature"])
        if self.method == "platt":
            slope, intercept = self.parameters["slope"], self.parameters["intercept"]
            return keras.ops.sigmoid(slope * logits + intercept)
        if self.method == "isotonic":
            return _interpolate(logits, self.parameters["x"], self.parameters["y"])
        return keras.ops.sigmoid(logits)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "parameters": self.parameters}


def _interpolate(z: Any, xs: list[float], ys: list[float]) -> Any:
    """Piecewise-linear interpolation of z over the isotonic fit's (x, y) knots, clipped at the
    ends (scikit-learn's out_of_bounds="clip")."""
    if len(xs) == 1:
        return keras.ops.full_like(keras.ops.cast(z, "float32"), ys[0])
    x = keras.ops.convert_to_tensor(np.asarray(xs, np.float32))
    y = keras.ops.convert_to_tensor(np.asarray(ys, np.float32))
    shape = keras.ops.shape(z)
    flat = keras.ops.clip(keras.ops.reshape(z, (-1,)), xs[0], xs[-1])
    right = keras.ops.clip(keras.ops.searchsorted(x, flat, side="right"), 1, len(xs) - 1)
    x0, x1 = keras.ops.take(x, right - 1), keras.ops.take(x, right)
    y0, y1 = keras.ops.take(y, right - 1), keras.ops.take(y, right)
    gap = x1 - x0
    weight = keras.ops.where(gap > 0, (flat - x0) / keras.ops.where(gap > 0, gap, 1.0), 1.0)
    return keras.ops.reshape(y0 + keras.ops.clip(weight, 0.0, 1.0) * (y1 - y0), shape)


def fit_calibration(labels: np.ndarray, logits: np.ndarray, method: str) -> Calibration:
    """A Calibration fitted on (validation) labels and the head's logits."""
    logits = np.asarray(logits, np.float64)
    if method == "temperature":

        def negative_log_likelihood(log_temperature: float) -> float:
            scaled = logits / np.exp(log_temperature)
            return -np.mean(labels * log_expit(scaled) + (1 - labels) * log_expit(-scaled))

        best = minimize_scalar(negative_log_likelihood, bounds=(-5, 5), method="bounded")
        return Calibration("temperature", {"temperature": float(np.exp(best.x))})
    if method == "platt":
        # C=inf: no penalty, as scikit-learn documents it (penalty=None is deprecated)
        model = LogisticRegression(C=np.inf).fit(logits[:, None], labels)
        return Calibration(
            "platt", {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}
        )
    if method == "isotonic":
        model = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(logits, labels)
        return Calibration(
            "isotonic",
            {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()},
        )
    if method == "none":
        return Calibration("none")
    raise not_one_of("calibration.method", method, CALIBRATION_METHODS)


def apply_calibration(calibration: Calibration, logits: np.ndarray) -> np.ndarray:
    """Calibrated P(real) of logits, as the exported model's last layer computes it."""
    return keras.ops.convert_to_numpy(calibration(logits.astype(np.float32))).astype(np.float64)


def uncalibrated(logits: np.ndarray) -> np.ndarray:
    """The head's own P(real): the sigmoid of its logit, in float64."""
    return expit(np.asarray(logits, np.float64))


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


def calibrate(labels: np.ndarray, logits: np.ndarray, config: dict[str, Any]) -> dict[str, Any]:
    """Fit the `calibration` params' method to (validation) labels and head logits, and choose
    the threshold on the calibrated scores: the record calibration.json holds."""
    calibration = fit_calibration(labels, logits, config["method"])
    calibrated = apply_calibration(calibration, logits)
    return {
        "method": calibration.method,
        "parameters": calibration.parameters,
        "threshold": choose_threshold(
            labels, calibrated, config["threshold"], config["target_fpr_real"]
        ),
        "threshold_rule": config["threshold"],
    }
