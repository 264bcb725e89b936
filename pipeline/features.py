"""Stage `features`: frozen-backbone features of every prepared image, streamed to disk.

`python -m pipeline features <backbone>` writes data/features/<backbone>/: features.npy (float32,
one row per image of splits.csv), index.csv (id, label, split, ok, reason),
backbone.weights.h5 (the exact extractor used, so that the export reproduces these features bit
for bit) and, with `augment.copies` above 0, augmented.npz: features of augmented copies of the
training images only (pipeline.degradations).
"""

from __future__ import annotations

import argparse
from typing import Any

import keras
import pandas as pd

from pipeline.backbones import extractor_from_spec
from pipeline.degradations import write_augmented
from pipeline.engines import extract, leave_gpus_to_actors
from pipeline.entry import run
from pipeline.io import atomic_path
from pipeline.params import backbone_spec, load_params
from pipeline.paths import (
    AUGMENTED_FILE,
    BACKBONE_WEIGHTS_FILE,
    FEATURES_FILE,
    INDEX_FILE,
    SPLITS,
    features_dir,
)


def featurize(
    spec: dict[str, Any],
    splits: pd.DataFrame,
    seed: int,
    engine: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
) -> None:
    """Write one backbone's features of every image in `splits` into data/features/<name>/, on
    the engine `engine` (params.yaml's `engine`; None: this process), and of `augment['copies']`
    augmented copies of each training image."""
    keras.utils.set_random_seed(seed)
    leave_gpus_to_actors(engine)
    # Built before any image is read: a missing weights file fails here, having done no work.
    model = extractor_from_spec(spec)
    with atomic_path(features_dir(spec["name"])) as out:
        out.mkdir()
        reasons = extract(engine, spec, model, splits["path"].tolist(), out / FEATURES_FILE)
        index = splits[["id", "label", "split"]].assign(ok=reasons == "", reason=reasons)
        index.to_csv(out / INDEX_FILE, index=False)
        model.save_weights(out / BACKBONE_WEIGHTS_FILE)
        if augment and augment["copies"]:
            train = splits[splits["split"] == "train"]
            write_augmented(model, spec, train, augment, seed, out / AUGMENTED_FILE)
    skipped = int((reasons != "").sum())
    print(f"features {spec['name']}: {len(reasons) - skipped} image(s), {skipped} skipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    featurize(
        backbone_spec(params, args.backbone),
        pd.read_csv(SPLITS, dtype={"id": str}),
        params["seed"],
        params.get("engine"),
        params.get("augment"),
    )


if __name__ == "__main__":
    run(main, "features")
