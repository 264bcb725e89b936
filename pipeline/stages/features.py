"""Stage `features`: every prepared image's features by a backbone, streamed to disk; where the
backbone is trained rather than frozen (its `training.mode`), trained on the training images
first (pipeline.models.training).

`python -m pipeline features <backbone>` writes data/features/<backbone>/: features.npy (float32,
one row per image of splits.csv), index.csv (id, label, split, ok, reason),
backbone.weights.h5 (the exact extractor used, trained or not, so that the export reproduces
these features bit for bit) and, with `augment.copies` above 0, augmented.npz: features of
augmented copies of the training images only (pipeline.models.degradations). For a trained backbone
with two or more AI sources, crossgen/<i>.npy holds every image's features by a network trained
on the real images and the AI sources of set i only (crossgen.json lists the sets), so that the
cross-generator matrix never tests a network on a generator it saw.

It also writes models/networks/<backbone>/: metrics.json, the training's record (frozen
backbones: only that they are frozen), and DVCLive's training curves under plots/metrics/.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import pandas as pd

from pipeline.core.entry import run
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.paths import (
    AUGMENTED_FILE,
    BACKBONE_WEIGHTS_FILE,
    CHECKPOINTS_DIR,
    CROSSGEN_FEATURES,
    CROSSGEN_SETS_FILE,
    FEATURES_FILE,
    INDEX_FILE,
    NETWORK_RECORD_FILE,
    SPLITS,
    features_dir,
    network_dir,
)
from pipeline.core.tracking import open_live
from pipeline.models.backbones import FROZEN, Backbone, build_extractor
from pipeline.models.degradations import write_augmented
from pipeline.models.engines import extract, leave_gpus_to_actors
from pipeline.stages.arguments import parse_arguments
from pipeline.stages.params import backbone_spec, load_params

if TYPE_CHECKING:
    from dvclive import Live

MAIN_TRAINING = "network"  # the curves' prefix of the network trained on every training image


def crossgen_sets(splits: pd.DataFrame) -> list[list[str]]:
    """The sets of AI sources the cross-generator matrix trains on: each source alone and, for
    its leave-one-out row, every source but one (the same set twice is trained once). None with
    fewer than two sources, where the matrix does not apply."""
    train = splits[(splits["split"] == "train") & (splits["label"] == "ai")]
    sources = sorted(set(train.get("source_name", pd.Series(dtype=str)).fillna("").astype(str)))
    if len(sources) < 2:
        return []
    sets = [[source] for source in sources]
    sets += [[s for s in sources if s != left_out] for left_out in sources]
    return [list(unique) for unique in dict.fromkeys(tuple(s) for s in sets)]


def rows_of(splits: pd.DataFrame, split: str, ai_sources: list[str] | None = None) -> pd.DataFrame:
    """The rows of one split: every image, or the real ones and those of `ai_sources`."""
    rows = splits[splits["split"] == split]
    if ai_sources is None:
        return rows
    source = rows.get("source_name", pd.Series("", index=rows.index)).fillna("").astype(str)
    return rows[(rows["label"] == "real") | source.isin(ai_sources)]


def trained_extractor(
    backbone: Backbone,
    splits: pd.DataFrame,
    seed: int,
    live: Live,
    prefix: str,
    ai_sources: list[str] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """A fresh extractor of `backbone` trained on the training rows (of `ai_sources` only, where
    given) and the training's record; its checkpoint stays in checkpoint_dir() until the stage
    has written its outputs."""
    from pipeline.models.training import train_network

    extractor = build_extractor(backbone)
    record = train_network(
        extractor,
        backbone,
        rows_of(splits, "train", ai_sources),
        rows_of(splits, "val", ai_sources),
        seed,
        checkpoint_dir(backbone.name, prefix),
        live,
        prefix,
    )
    return extractor, record


def checkpoint_dir(backbone: str, training: str) -> Path:
    return CHECKPOINTS_DIR / backbone / training


def featurize(
    backbone: Backbone,
    splits: pd.DataFrame,
    seed: int,
    engine: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
) -> None:
    """Write one backbone's features of every image in `splits` into data/features/<name>/ and
    its training record into models/networks/<name>/ (training it first unless it is frozen),
    on the engine `engine` (params.yaml's `engine`; None: this process), and of
    `augment['copies']` augmented copies of each training image."""
    keras.utils.set_random_seed(seed)
    leave_gpus_to_actors(engine)
    name, paths = backbone.name, splits["path"].tolist()
    # Built before any image is read: a missing weights file fails here, having done no work.
    model = build_extractor(backbone)
    with atomic_outputs(features_dir(name), network_dir(name)) as (out, record_dir):
        out.mkdir()
        trainings = []
        if backbone.training_mode == FROZEN:
            (record_dir / "plots" / "metrics").mkdir(parents=True)
            write_json(record_dir / NETWORK_RECORD_FILE, {"training": FROZEN})
        else:
            with open_live(record_dir) as live:
                model, record = trained_extractor(backbone, splits, seed, live, MAIN_TRAINING)
                trainings.append(MAIN_TRAINING)
                sets = crossgen_sets(splits) if backbone.settings["training"]["crossgen"] else []
                (out / CROSSGEN_FEATURES).mkdir()
                for i, ai_sources in enumerate(sets):
                    prefix = f"trained_on_{'+'.join(ai_sources)}"
                    network, _ = trained_extractor(backbone, splits, seed, live, prefix, ai_sources)
                    extract(engine, backbone, network, paths, out / CROSSGEN_FEATURES / f"{i}.npy")
                    trainings.append(prefix)
                write_json(out / CROSSGEN_SETS_FILE, {str(i): s for i, s in enumerate(sets)})
                live.summary["training"] = {**record, "crossgen_networks": len(sets)}
        reasons = extract(engine, backbone, model, paths, out / FEATURES_FILE)
        index = splits[["id", "label", "split"]].assign(ok=reasons == "", reason=reasons)
        index.to_csv(out / INDEX_FILE, index=False)
        model.save_weights(out / BACKBONE_WEIGHTS_FILE)
        if augment and augment["copies"]:
            train = splits[splits["split"] == "train"]
            write_augmented(model, backbone, train, augment, seed, out / AUGMENTED_FILE)
    clear_checkpoints([checkpoint_dir(name, training) for training in trainings])
    skipped = int((reasons != "").sum())
    print(f"features {name}: {len(reasons) - skipped} image(s), {skipped} skipped")


def clear_checkpoints(folders: list[Path]) -> None:
    """Once the stage's outputs are in place, its trainings' checkpoints have served."""
    from pipeline.models.training import clear_checkpoint

    for folder in folders:
        clear_checkpoint(folder)


def main() -> None:
    args = parse_arguments("features", __doc__.splitlines()[0])
    params = load_params()
    featurize(
        Backbone.from_spec(backbone_spec(params, args.backbone)),
        pd.read_csv(SPLITS, dtype={"id": str}),
        params["seed"],
        params.get("engine"),
        params.get("augment"),
    )


if __name__ == "__main__":
    run(main, "features")
