"""Oversampling a training set: shared by the balance stage and the cross-generator stage, which
balances each of its training sets the same way."""

from __future__ import annotations

from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE
from sklearn.utils.class_weight import compute_class_weight

from pipeline.core.choices import BALANCE_METHODS
from pipeline.core.errors import not_one_of
from pipeline.data.images import LABELS


def balance(
    features: np.ndarray,
    labels: np.ndarray,
    method: str,
    seed: int,
    k_neighbors: int = 5,
    sampling_strategy: Any = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Oversample the minority class of a training set (`method`: smote; class_weight and none
    leave it as it is: class_weight weighs the loss instead, see class_weights)."""
    if method in ("none", "class_weight"):
        return features, labels
    if method != "smote":
        raise not_one_of("balance.method", method, BALANCE_METHODS)
    minority = int(np.bincount(labels, minlength=len(LABELS)).min())
    if minority <= k_neighbors:
        raise ValueError(
            f"SMOTE needs more than k_neighbors={k_neighbors} training images in each class, "
            f"the smallest class has {minority}: lower balance.k_neighbors or add images"
        )
    if minority == np.bincount(labels).max():
        return features, labels  # already balanced: SMOTE would add nothing
    sampler = SMOTE(sampling_strategy=sampling_strategy, k_neighbors=k_neighbors, random_state=seed)
    return sampler.fit_resample(features, labels)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Weight of each class id in the loss, inversely proportional to its frequency, so that both
    classes weigh alike (scikit-learn's "balanced": rows / (classes * rows of the class)), as an
    array indexed by class id: the head's datasets look each row's weight up in it."""
    counts = np.bincount(labels, minlength=len(LABELS))
    if not counts.all():  # scikit-learn's own error would not name the missing label
        missing = [LABELS[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"class_weight needs training images of each class; none of {missing}")
    classes = np.arange(len(LABELS))
    return compute_class_weight("balanced", classes=classes, y=labels).astype(np.float32)
