"""Stage `balance`: SMOTE on the training features only; validation and test stay untouched.

`python -m pipeline.balance <backbone>` writes data/balanced/<backbone>/train.npz (features,
labels) and reports/balance/<backbone>.json (class counts before and after).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE

from pipeline.features import load_features
from pipeline.images import LABELS
from pipeline.io import atomic_path, write_json
from pipeline.params import load_params
from pipeline.paths import BALANCED_DIR, FEATURES_DIR

REPORT_DIR = Path("reports/balance")


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
        raise SystemExit(f"balance.method must be smote or none, got {method!r}")
    minority = int(np.bincount(labels, minlength=len(LABELS)).min())
    if minority <= k_neighbors:
        raise SystemExit(
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
    features, labels, _ = load_features(FEATURES_DIR / args.backbone, "train")
    balanced, balanced_labels = balance(features, labels, seed=params["seed"], **config)
    with atomic_path(BALANCED_DIR / args.backbone) as out:
        out.mkdir()
        np.savez(out / "train.npz", features=balanced, labels=balanced_labels)
    report = {
        "method": config["method"],
        "before": class_counts(labels),
        "after": class_counts(balanced_labels),
    }
    write_json(REPORT_DIR / f"{args.backbone}.json", report)
    print(f"balance {args.backbone}: {report['before']} -> {report['after']}")


if __name__ == "__main__":
    main()
