"""Stage `balance`: SMOTE on the training features only; validation and test stay untouched.

`python -m pipeline balance <backbone>` writes data/balanced/<backbone>/train.npz (features,
labels) and reports/balance/<backbone>.json (class counts before and after).
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
from pipeline.paths import BALANCE_REPORTS_DIR, balanced_file, features_dir
from pipeline.runtime import load_features


def balance(
    features: np.ndarray,
    labels: np.ndarray,
    method: str,
    seed: int,
    k_neighbors: int = 5,
    sampling_strategy: Any = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Oversample the minority class of a training set (`method`: smote or none)."""
    if method == "none":
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
    out_file = balanced_file(args.backbone)
    with atomic_path(out_file.parent) as out:
        out.mkdir()
        np.savez(out / out_file.name, features=balanced, labels=balanced_labels)
    report = {
        "method": config["method"],
        "before": class_counts(labels),
        "after": class_counts(balanced_labels),
    }
    write_json(BALANCE_REPORTS_DIR / f"{args.backbone}.json", report)
    print(f"balance {args.backbone}: {report['before']} -> {report['after']}")


if __name__ == "__main__":
    run(main, "balance")
