"""Stage `balance`: SMOTE on the training features only; validation and test stay untouched.

`python -m pipeline balance <backbone>` writes data/balanced/<backbone>/train.npz (features,
labels, and with method class_weight the weight of each class in the head's loss) and
reports/balance/<backbone>.json (class counts before and after).

SMOTE's neighbour search grows with the square of the minority class and its synthetic rows are
held in memory (BENCHMARKS.md, SMOTE at scale); class_weight adds no rows and costs nothing, so it
is the method for large training sets. The training set is the training images' features plus
those of their augmented copies, where the features stage made some (`augment.copies`).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.entry import run
from pipeline.core.io import atomic_path, write_json
from pipeline.core.paths import BALANCE_REPORTS_DIR, CLASS_WEIGHT_KEY, balanced_file, features_dir
from pipeline.data.images import LABELS
from pipeline.data.oversample import balance, class_weights
from pipeline.models.runtime import load_augmented, load_features
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import load_params


def class_counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def main() -> None:
    args = parse_arguments("balance", __doc__.splitlines()[0])
    params = load_params()
    config = dict(params["balance"])
    features, labels, _ = load_features(features_dir(args.backbone), "train")
    augmented = load_augmented(features_dir(args.backbone))
    if augmented is not None:  # copies of training images only: the features stage makes sure
        features = np.concatenate([features, augmented[0]])
        labels = np.concatenate([labels, augmented[1]])
    balanced, balanced_labels = balance(features, labels, seed=params["seed"], **config)
    weighted = config["method"] == "class_weight"
    weights = {CLASS_WEIGHT_KEY: class_weights(labels)} if weighted else {}
    out_file = balanced_file(args.backbone)
    with atomic_path(out_file.parent) as out:
        out.mkdir()
        np.savez(out / out_file.name, features=balanced, labels=balanced_labels, **weights)
    report = {
        "method": config["method"],
        "augmented_copies": 0 if augmented is None else len(augmented[1]),
        "before": class_counts(labels),
        "after": class_counts(balanced_labels),
        **{key: dict(zip(LABELS, value.tolist(), strict=True)) for key, value in weights.items()},
    }
    write_json(BALANCE_REPORTS_DIR / f"{args.backbone}.json", report)
    print(f"balance {args.backbone}: {report['before']} -> {report['after']}")


if __name__ == "__main__":
    run(main, "balance")
