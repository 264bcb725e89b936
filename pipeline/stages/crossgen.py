"""Stage `crossgen`: does a head trained on one generator detect another? From cached features.

`python -m pipeline crossgen` writes, for each backbone <b> in params.yaml's `backbones`,
crossgen/<b>.json and the heatmap crossgen/heatmap/<b>.png. For each AI source A (its
`source_name`, such as the folder under ai/), a head with the main head's settings, balancing and
calibration is trained on the real training images plus A's, calibrated on the real validation
images plus A's, and scored on the real test images plus the test images of every AI source B:
rows trained on, columns tested on, each cell AI accuracy, AP and ROC-AUC with bootstrap 95 %
intervals. The leave-one-source-out row holds, for each B, the head trained on every AI source
but B, tested on B. With fewer than two AI sources the file says that the matrix does not apply.

No backbone runs here: the heads train on the features the features stage cached. For a
backbone trained on images, that stage also trained one network per set of AI sources a row
needs (crossgen/ in its features folder), and each head here trains and tests on the features of
the network trained on its own set, so that no cell tests a network on a generator it saw. One
process serves every backbone, as in train.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.entry import run
from pipeline.core.figures import draw_crossgen_heatmap
from pipeline.core.io import atomic_path, write_json
from pipeline.core.paths import (
    CROSSGEN_DIR,
    CROSSGEN_HEATMAP_DIR,
    FEATURES_FILE,
    INDEX_FILE,
    SPLITS,
    crossgen_file,
    crossgen_heatmap,
    features_dir,
)
from pipeline.data.oversample import balance, class_weights
from pipeline.models.calibrate import Calibration, apply_calibration, calibrate
from pipeline.models.head import head_logits, train_head
from pipeline.models.metrics import ALL_AI_SOURCES, bootstrap_ci, point_metrics
from pipeline.models.runtime import load_augmented, load_crossgen_features
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import load_params

CELL_METRICS = ("ai_accuracy", "average_precision", "roc_auc")

Scorer = Callable[[np.ndarray], np.ndarray]


def fit_scorer(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], params: dict
) -> tuple[Scorer, float]:
    """A head trained as the train stage trains the main one (balancing, early stopping,
    calibration and threshold on `val`): calibrated P(real) of feature rows, and the threshold."""
    features, labels = balance(*train, seed=params["seed"], **params["balance"])
    weighted = params["balance"]["method"] == "class_weight"
    class_weight = class_weights(labels) if weighted else None
    model = train_head(
        (features, labels), val, params["head"], params["seed"], class_weight=class_weight
    )
    fitted = calibrate(val[1], head_logits(model, val[0]), params["calibration"])
    calibration = Calibration(fitted["method"], fitted["parameters"])
    return (lambda rows: apply_calibration(calibration, head_logits(model, rows))), fitted[
        "threshold"
    ]


def cell(labels: np.ndarray, p_real: np.ndarray, threshold: float) -> dict[str, Any]:
    """The metrics of one (trained on, tested on) pair with their 95 % intervals."""
    point = point_metrics(labels, p_real, threshold)
    intervals = bootstrap_ci(labels, p_real, threshold)
    return {
        "images": point["images"],
        "real_accuracy": point["real_accuracy"],
        **{name: point[name] for name in CELL_METRICS},
        "ci95": {
            name: intervals[name] for name in ("real_accuracy", *CELL_METRICS) if name in intervals
        },
    }


def cross_generator_matrix(
    features: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray,
    sources: np.ndarray,
    params: dict[str, Any],
    augmented: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    features_by_set: dict[tuple[str, ...], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The matrix from one backbone's features (rows aligned with `labels`, `splits` and
    `sources`: the source name of each image); `params` holds balance, head, calibration, seed.
    `augmented` (features, labels, sources) are augmented copies of training images, added to
    each head's training set as the balance stage adds them to the main head's.
    `features_by_set`, for a trained backbone: the features (rows as `features`) by the network
    trained on each set of AI sources; a head then uses those of its own set only."""
    real = labels == 1
    ai_sources = sorted(set(sources[~real].tolist()))
    if len(ai_sources) < 2:
        return {
            "applicable": False,
            "reason": f"the matrix needs at least two AI sources; the data has {len(ai_sources)}"
            + (f" ({', '.join(ai_sources)})" if ai_sources else ""),
            "ai_sources": ai_sources,
        }

    def rows(split: str, trained_on: tuple[str, ...]) -> np.ndarray:
        return (splits == split) & (real | np.isin(sources, trained_on))

    scorers: dict[tuple[str, ...], tuple[Scorer, float] | str] = {}

    def features_for(trained_on: tuple[str, ...]) -> np.ndarray | None:
        if features_by_set is None:
            return features
        return features_by_set.get(trained_on)

    def scorer(trained_on: tuple[str, ...]) -> tuple[Scorer, float] | str:
        """A trained head, or why none could be trained (too few images for SMOTE)."""
        if trained_on not in scorers:
            own = features_for(trained_on)
            if own is None:
                scorers[trained_on] = (
                    f"no network was trained on {', '.join(trained_on)} alone (the backbone's "
                    "training.crossgen is off)"
                )
                return scorers[trained_on]
            train, val = rows("train", trained_on), rows("val", trained_on)
            train_set = (own[train], labels[train])
            if augmented is not None:
                copies = (augmented[1] == 1) | np.isin(augmented[2], trained_on)
                train_set = (
                    np.concatenate([train_set[0], augmented[0][copies]]),
                    np.concatenate([train_set[1], augmented[1][copies]]),
                )
            try:
                scorers[trained_on] = fit_scorer(train_set, (own[val], labels[val]), params)
            except ValueError as error:
                scorers[trained_on] = str(error)
        return scorers[trained_on]

    def scored(trained_on: tuple[str, ...], tested_on: tuple[str, ...]) -> dict[str, Any]:
        fitted = scorer(trained_on)
        test = rows("test", tested_on)
        if isinstance(fitted, str):
            return {"not_applicable": fitted}
        if not (test & ~real).any():
            return {"not_applicable": f"no test images of {', '.join(tested_on)}"}
        score, threshold = fitted
        return cell(labels[test], score(features_for(trained_on)[test]), threshold)

    trained = {}
    for source in ai_sources:
        fitted = scorer((source,))
        trained[source] = {
            "threshold": None if isinstance(fitted, str) else fitted[1],
            "train_images": int(rows("train", (source,)).sum()),
            "tested_on": {tested: scored((source,), (tested,)) for tested in ai_sources}
            | {ALL_AI_SOURCES: scored((source,), tuple(ai_sources))},
        }
    return {
        "applicable": True,
        "ai_sources": ai_sources,
        "test_images": {
            name: int(((splits == "test") & (sources == name) & ~real).sum()) for name in ai_sources
        }
        | {"real": int(((splits == "test") & real).sum())},
        "trained_on": trained,
        "leave_one_out": {
            source: scored(tuple(s for s in ai_sources if s != source), (source,))
            for source in ai_sources
        },
    }


def backbone_matrix(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """cross_generator_matrix of one backbone's cached features, every usable image."""
    index = pd.read_csv(features_dir(name) / INDEX_FILE, dtype={"id": str})
    source_of = pd.read_csv(SPLITS, dtype={"id": str}).set_index("id")["source_name"]
    named = index.assign(source_name=index["id"].map(source_of))
    usable = index["ok"].to_numpy(dtype=bool)
    by_set = load_crossgen_features(features_dir(name))
    # a trained backbone's augmented copies come from its main network, not the per-set ones
    augmented = None if by_set is not None else load_augmented(features_dir(name))
    features = np.load(features_dir(name) / FEATURES_FILE, mmap_mode="r")[usable]
    return cross_generator_matrix(
        np.asarray(features, dtype=np.float32),
        (index.loc[usable, "label"] == "real").to_numpy(dtype=np.int64),
        index.loc[usable, "split"].to_numpy(),
        named.loc[usable, "source_name"].fillna("").astype(str).to_numpy(),
        params,
        None if augmented is None else (*augmented[:2], source_of.reindex(augmented[2]).to_numpy()),
        None
        if by_set is None
        else {key: np.asarray(values[usable], np.float32) for key, values in by_set.items()},
    )


def write_matrix(name: str, matrix: dict[str, Any], out: Path) -> None:
    write_json(out / crossgen_file(name).relative_to(CROSSGEN_DIR), matrix)
    if matrix["applicable"]:
        draw_crossgen_heatmap(
            matrix,
            out / crossgen_heatmap(name).relative_to(CROSSGEN_DIR),
            f"{name}: AI accuracy across generators",
        )
        print(f"crossgen {name}: {len(matrix['ai_sources'])} AI sources")
    else:
        print(f"crossgen {name}: not applicable: {matrix['reason']}")


def main() -> None:
    # every backbone in params.yaml, always: a backbone name here is refused, not ignored
    parse_arguments("crossgen", __doc__.splitlines()[0])
    params = load_params()
    with atomic_path(CROSSGEN_DIR) as out:
        (out / CROSSGEN_HEATMAP_DIR.relative_to(CROSSGEN_DIR)).mkdir(parents=True)
        for name in params["backbones"]:
            write_matrix(name, backbone_matrix(name, params), out)


if __name__ == "__main__":
    run(main, "crossgen")
