"""Stage `balance`: SMOTE on the training features only; validation and test stay untouched.

`python -m pipeline balance <backbone>` writes data/balanced/<backbone>/train.npz (features,
labels, and with method class_weight the weight of each class in the head's loss) and
reports/balance/<backbone>.json (class counts before and after).

SMOTE's neighbour search grows with the square of the minority class and its synthetic rows are
held in memory (BENCHMARKS.md, SMOTE at scale); class_weight adds no rows and costs nothing, so it
is the method for large training sets.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE

from pipeline.entry import run
from pipeline.errors import not_one_of
from pipeline.images import LABELS
from pipeline.io import atomic_path, write_json
from pipeline.params import BALANCE_METHODS, load_params
from pipeline.paths import BALANCE_REPORTS_DIR, CLASS_WEIGHT_KEY, balanced_file, features_dir
from pipeline.runtime import load_features


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
    classes weigh alike (scikit-learn's "balanced": rows / (classes * rows of the class))."""
    counts = np.bincount(labels, minlength=len(LABELS))
    if not counts.all():
        missing = [LABELS[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"class_weight needs training images of each class; none of {missing}")
    return (len(labels) / (len(LABELS) * counts)).astype(np.float32)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    config = dict(params["balance"])
    features, labels, _ = load_features(features_dir(args.backbone), "train")
    balanced, balanced_labels = balance(features, labels, seed=params["seed"], **config)
    weighted = config["method"] == "class_weight"
    weights = {CLASS_WEIGHT_KEY: class_weights(labels)} if weighted else {}
    out_file = balanced_file(args.backbone)
    with atomic_path(out_file.parent) as out:
        out.mkdir()
        np.savez(out / out_file.name, features=balanced, labels=balanced_labels, **weights)
    report = {
        "method": config["method"],
        "before": class_counts(labels),
        "after": class_counts(balanced_labels),
        **{key: dict(zip(LABELS, value.tolist(), strict=True)) for key, value in weights.items()},
    }
    write_json(BALANCE_REPORTS_DIR / f"{args.backbone}.json", report)
    print(f"balance {args.backbone}: {report['before']} -> {report['after']}")


if __name__ == "__main__":
    run(main, "balance")
