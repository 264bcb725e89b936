"""Stage `prepare`: validate, deduplicate and split the scraped images.

Writes data/prepared/splits.csv (one row per kept image) and reports/prepare.json (kept and
dropped images per reason per label).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from pipeline.images import UnreadableImage, decode
from pipeline.io import atomic_path, write_json
from pipeline.params import load_params

MANIFEST = Path("data/raw/manifest.csv")
SPLITS = Path("data/prepared/splits.csv")
REPORT = Path("reports/prepare.json")
SPLIT_NAMES = ("train", "val", "test")


def inspect(path: Path, min_size: int) -> tuple[str, int]:
    """('ok', 64-bit perceptual hash) or (reason, 0) for an image that cannot be used."""
    try:
        image = decode(path)
    except UnreadableImage as error:
        return error.reason, 0
    if min(image.size) < min_size:
        return "too_small", 0
    return "ok", int(str(imagehash.phash(image)), 16)


def inspect_all(paths: list[Path], min_size: int, workers: int = 4) -> tuple[list[str], np.ndarray]:
    # Pillow releases the GIL while decoding, so threads overlap the work.
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            tqdm(
                pool.map(lambda path: inspect(path, min_size), paths),
                total=len(paths),
                desc="prepare",
                unit="img",
            )
        )
    reasons = [reason for reason, _ in results]
    return reasons, np.array([phash for _, phash in results], dtype=np.uint64)


def near_duplicate_groups(hashes: np.ndarray, max_distance: int, block: int = 1024) -> np.ndarray:
    """Group id per hash: connected components of 'Hamming distance <= max_distance'."""
    n = len(hashes)
    rows, cols = [], []
    for start in range(0, n, block):
        distance = np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= max_distance)
        rows.append(i + start)
        cols.append(j)
    graph = coo_matrix(
        (np.ones(sum(map(len, rows)), dtype=np.int8), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
    )
    return connected_components(graph, directed=False)[1]


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int
) -> np.ndarray:
    """Split name per row: every group in one split, each label close to the wanted fractions.

    Groups are visited in a seeded random order, each going to the split that lacks most of the
    group's labels relative to its target.
    """
    names = list(fractions)
    share = np.array([fractions[name] for name in names])
    label_values = np.unique(labels)
    targets = share[:, None] * np.array([(labels == v).sum() for v in label_values])[None, :]
    filled = np.zeros_like(targets)
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    members = pd.Series(np.arange(len(groups))).groupby(groups).apply(list)
    assignment = np.empty(len(labels), dtype=object)
    for group in order:
        rows = members[group]
        counts = np.array([(labels[rows] == v).sum() for v in label_values])
        deficit = ((targets - filled) / np.maximum(targets, 1)) @ (counts > 0)
        chosen = int(np.argmax(deficit))
        filled[chosen] += counts
        assignment[rows] = names[chosen]
    return assignment


def drop_duplicate_ids(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One row per image id; reasons for the dropped rows ('duplicate' or 'label_conflict')."""
    labels_per_id = manifest.groupby("id")["label"].nunique()
    conflicted = manifest["id"].isin(labels_per_id[labels_per_id > 1].index)
    duplicate = manifest.duplicated("id") & ~conflicted
    reasons = pd.Series(np.where(conflicted, "label_conflict", "duplicate"), index=manifest.index)
    return manifest[~conflicted & ~duplicate], reasons[conflicted | duplicate]


def keep_one_per_group_and_label(frame: pd.DataFrame) -> pd.Series:
    """True for the image kept from each near-duplicate group and label: the largest, then by id."""
    ranked = frame.assign(pixels=frame["width"] * frame["height"]).sort_values(
        ["pixels", "id"], ascending=[False, True]
    )
    return ~ranked.duplicated(["group", "label"]).reindex(frame.index)


def prepare(
    manifest: pd.DataFrame, raw_dir: Path, params: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The kept images with their split and near-duplicate group, and the report."""
    dropped: list[pd.DataFrame] = []
    unique, duplicate_reasons = drop_duplicate_ids(manifest)
    dropped.append(manifest.loc[duplicate_reasons.index].assign(reason=duplicate_reasons))

    reasons, hashes = inspect_all([raw_dir / p for p in unique["path"]], params["min_size"])
    unique = unique.assign(reason=reasons, phash=hashes)
    usable = unique["reason"] == "ok"
    dropped.append(unique[~usable])
    images = unique[usable].drop(columns="reason").reset_index(drop=True)

    images["group"] = near_duplicate_groups(images["phash"].to_numpy(), params["max_hamming"])
    kept = keep_one_per_group_and_label(images)
    dropped.append(images[~kept].assign(reason="near_duplicate"))
    images = images[kept].reset_index(drop=True)

    fractions = {"train": 1 - params["split"]["val"] - params["split"]["test"], **params["split"]}
    images["split"] = stratified_group_split(
        images["label"].to_numpy(), images["group"].to_numpy(), fractions, seed
    )
    images["phash"] = images["phash"].map(lambda h: f"{h:016x}")
    images = images.sort_values(["split", "id"]).reset_index(drop=True)
    return images, _report(manifest, images, pd.concat(dropped))


def _report(manifest: pd.DataFrame, kept: pd.DataFrame, dropped: pd.DataFrame) -> dict[str, Any]:
    by_reason: dict[str, dict[str, int]] = {}
    for (reason, label), count in dropped.groupby(["reason", "label"]).size().items():
        by_reason.setdefault(reason, {})[label] = int(count)
    return {
        "manifest_rows": len(manifest),
        "kept": len(kept),
        "kept_per_label": kept["label"].value_counts().sort_index().to_dict(),
        "kept_per_split": {
            split: kept.loc[kept["split"] == split, "label"].value_counts().sort_index().to_dict()
            for split in SPLIT_NAMES
        },
        "dropped": dict(sorted(by_reason.items())),
        "near_duplicate_groups_in_several_labels": int(
            (kept.groupby("group")["label"].nunique() > 1).sum()
        ),
    }


def main() -> None:
    params = load_params()
    manifest = pd.read_csv(MANIFEST, dtype={"id": str})
    images, report = prepare(manifest, MANIFEST.parent, params["data"], params["seed"])
    columns = ["id", "path", "label", "split", "group", "phash", "source_name", "format"]
    with atomic_path(SPLITS) as tmp:
        images.assign(path=[str(MANIFEST.parent / p) for p in images["path"]])[
            columns + ["width", "height", "bytes"]
        ].to_csv(tmp, index=False)
    write_json(REPORT, report)
    for reason, counts in report["dropped"].items():
        print(f"prepare: dropped {sum(counts.values())} image(s): {reason} {counts}")
    print(f"prepare: kept {report['kept']} image(s): {report['kept_per_split']}")


if __name__ == "__main__":
    main()
