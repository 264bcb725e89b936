"""Stage `prepare`: validate, deduplicate and split the scraped images.

Writes data/prepared/splits.csv (one row per kept image), reports/prepare.json (kept and
dropped images per reason per label), reports/confounds.json and the dataset card
reports/dataset.md, all of them together or none (pipeline.core.io.atomic_outputs). It refuses the
data of a crawl that has not finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from tqdm import tqdm
from tqdm.contrib.concurrent import thread_map

from pipeline.core.entry import run
from pipeline.core.errors import StageFailed
from pipeline.core.io import atomic_outputs, json_text, read_json
from pipeline.core.paths import (
    CONFOUNDS,
    CRAWL_INCOMPLETE,
    DATASET_CARD,
    MANIFEST,
    NORMALIZED_DIR,
    SCRAPE_REPORT,
    SPLITS,
)
from pipeline.core.paths import PREPARE_REPORT as REPORT
from pipeline.core.tables import markdown_table
from pipeline.data.images import UnreadableImage, decode
from pipeline.stages.params import load_params

NORMALIZED_QUALITY = 90
CUES = ("format", "jpeg_quality", "exif", "width", "height", "bytes")
SPLIT_NAMES = ("train", "val", "test")


# The IJG (libjpeg) luminance table at quality 50, against which JPEG quality is estimated.
STANDARD_LUMINANCE_SUM = 3710


def jpeg_quality(image: Image.Image) -> int:
    """The IJG quality (1..100) a JPEG's luminance table corresponds to; -1 for other formats."""
    tables = getattr(image, "quantization", None)
    if not tables:
        return -1
    scale = 100 * sum(tables[0]) / STANDARD_LUMINANCE_SUM
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return int(np.clip(round(quality), 1, 100))


def inspect(path: Path, min_size: int, normalized: Path | None = None) -> dict[str, Any]:
    """Reason ('ok' or why the image cannot be used), perceptual hash and cheap file-level cues.

    With `normalized`, the decoded image is also re-encoded there the same way for every image.
    """
    try:
        image = decode(path)
    except UnreadableImage as error:
        return {"reason": error.reason, "phash": 0}
    with Image.open(path) as header:  # decodable, so its header reads
        cues = {"exif": int(bool(header.getexif())), "jpeg_quality": jpeg_quality(header)}
    if min(image.size) < min_size:
        return {"reason": "too_small", "phash": 0}
    if normalized is not None:
        image.save(normalized, format="JPEG", quality=NORMALIZED_QUALITY)
        with Image.open(normalized) as header:  # the cues of what the model will see
            cues = {
                "exif": int(bool(header.getexif())),
                "jpeg_quality": jpeg_quality(header),
                "format": "JPEG",
                "bytes": normalized.stat().st_size,
            }
    return {"reason": "ok", "phash": int(str(imagehash.phash(image)), 16), **cues}


def inspect_all(
    paths: list[Path], min_size: int, normalized: list[Path] | None = None, workers: int = 4
) -> pd.DataFrame:
    # Pillow releases the GIL while decoding, so threads overlap the work.
    targets = normalized or [None] * len(paths)
    results = thread_map(
        lambda job: inspect(job[0], min_size, job[1]),
        zip(paths, targets, strict=True),
        max_workers=workers,
        tqdm_class=tqdm,  # the plain bar, as the other stages draw it, even under Jupyter
        total=len(paths),
        desc="prepare",
        unit="img",
    )
    found = pd.DataFrame(results).reindex(
        columns=["reason", "phash", "exif", "jpeg_quality", "format", "bytes"]
    )
    return found.astype({"phash": np.uint64})


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
    manifest: pd.DataFrame,
    raw_dir: Path,
    params: dict[str, Any],
    seed: int,
    normalized_dir: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The kept images with their split and near-duplicate group, and the report.

    With `normalized_dir`, every usable image is re-encoded there as JPEG without metadata, and
    the kept rows point to those files.
    """
    # the scrape appends rows as downloads finish: sort, so that the split never depends on timing
    manifest = manifest.sort_values(["id", "source_url"] if "source_url" in manifest else ["id"])
    dropped: list[pd.DataFrame] = []
    unique, duplicate_reasons = drop_duplicate_ids(manifest)
    dropped.append(manifest.loc[duplicate_reasons.index].assign(reason=duplicate_reasons))

    normalized = [normalized_dir / f"{i}.jpg" for i in unique["id"]] if normalized_dir else None
    found = inspect_all([raw_dir / p for p in unique["path"]], params["min_size"], normalized)
    unique = unique.reset_index(drop=True)
    if normalized_dir:  # format and size as re-encoded; otherwise as scraped
        unique["path"] = [str(path) for path in normalized]
        unique[["format", "bytes"]] = found[["format", "bytes"]]
    unique = pd.concat([unique, found.drop(columns=["format", "bytes"])], axis=1)
    usable = unique["reason"] == "ok"
    dropped.append(unique[~usable])
    images = unique[usable].drop(columns="reason").reset_index(drop=True)
    images = images.astype({"exif": int, "jpeg_quality": int})
    if images.empty:
        reasons = pd.concat(dropped)["reason"].value_counts().to_dict()
        raise StageFailed(f"no usable image among {len(manifest)} ({reasons})")

    images["group"] = near_duplicate_groups(images["phash"].to_numpy(), params["max_hamming"])
    kept = keep_one_per_group_and_label(images)
    dropped.append(images[~kept].assign(reason="near_duplicate"))
    images = images[kept].reset_index(drop=True)

    fractions = {"train": 1 - params["split"]["val"] - params["split"]["test"], **params["split"]}
    images["split"] = stratified_group_split(
        images["label"].to_numpy(), images["group"].to_numpy(), fractions, seed
    )
    missing = [
        f"{split} has no {label}"
        for split in SPLIT_NAMES
        for label in ("real", "ai")
        if not ((images["split"] == split) & (images["label"] == label)).any()
    ]
    if missing:
        raise StageFailed(
            f"too few images to split: {', '.join(missing)} ({report_counts(images)})"
        )
    images["phash"] = images["phash"].map(lambda h: f"{h:016x}")
    images = images.sort_values(["split", "id"]).reset_index(drop=True)
    return images, _report(manifest, images, pd.concat(dropped))


def report_counts(images: pd.DataFrame) -> dict:
    return images.groupby(["split", "label"]).size().to_dict()


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


def confound_report(images: pd.DataFrame, seed: int) -> dict[str, Any]:
    """ROC-AUC on the test split of a small classifier fitted on the training split's trivial cues
    (file format, JPEG quality, EXIF present, width, height, file size), each alone and together."""
    cues = pd.get_dummies(images[list(CUES)], columns=["format"], dtype=int)
    labels = (images["label"] == "real").astype(int)
    train, test = images["split"] == "train", images["split"] == "test"

    def auc(columns: list[str]) -> float | None:
        if labels[train].nunique() < 2 or labels[test].nunique() < 2:
            return None
        classifier = HistGradientBoostingClassifier(max_depth=3, max_iter=100, random_state=seed)
        classifier.fit(cues.loc[train, columns], labels[train])
        return float(
            roc_auc_score(labels[test], classifier.predict_proba(cues.loc[test, columns])[:, 1])
        )

    per_cue = {
        cue: auc([c for c in cues.columns if c == cue or c.startswith(f"{cue}_")]) for cue in CUES
    }
    return {
        "what": "test ROC-AUC of a gradient-boosted classifier on the cues alone; 0.5 = no signal",
        "all_cues": {"roc_auc": auc(list(cues.columns))},
        "per_cue": per_cue,
    }


def frame_table(frame: pd.DataFrame) -> str:
    """A pipe table of a small frame (its index included)."""
    frame = frame.reset_index()
    return markdown_table(frame.columns, frame.itertuples(index=False))


def per_label(frame: pd.DataFrame, column: str) -> str:
    """Counts of each value of `column` per label, as a table."""
    if column not in frame or frame.empty:
        return "(not recorded)"
    values = frame[column].fillna("(none)").astype(str)
    table = pd.crosstab(values, frame["label"]).sort_values(
        list(frame["label"].unique())[0], ascending=False
    )
    table.index.name, table.columns.name = column, None
    return frame_table(table)


def dataset_card(
    manifest: pd.DataFrame,
    kept: pd.DataFrame,
    report: dict[str, Any],
    confounds: dict[str, Any],
    scrape_report: dict[str, Any] | None,
) -> str:
    """reports/dataset.md: what the two classes are made of, so that a person sees at a glance
    whether they differ in anything but their origin."""
    kept = kept.copy()
    extra = kept["extra"] if "extra" in kept else pd.Series("", index=kept.index)
    kept["category"] = [
        json.loads(value).get("category", "") if isinstance(value, str) and value else ""
        for value in extra
    ]
    raw = manifest.drop_duplicates("id").set_index("id")
    kept["scraped_format"] = kept["id"].map(raw["format"]) if "format" in raw else None
    splits = pd.crosstab(kept["label"], kept["split"]).reindex(columns=list(SPLIT_NAMES))
    splits.columns.name = None
    widths = kept.groupby("label")["width"].describe(percentiles=[0.1, 0.5, 0.9])
    widths = widths[["count", "min", "10%", "50%", "90%", "max"]].astype(int)
    sources = (
        kept.groupby(["label", "source_name", "category"]).size().rename("kept").to_frame()
        if "source_name" in kept
        else pd.DataFrame()
    )
    dropped = pd.DataFrame(report["dropped"]).T.fillna(0).astype(int)
    dropped.index.name = "reason"
    lines = [
        "# Dataset card",
        "",
        f"Written by `prepare` from {len(manifest)} manifest rows; {report['kept']} images kept. "
        "Everything below is per label: a difference between the two columns other than the "
        "images' origin is a shortcut a model can learn.",
        "",
        "## Images per label and split",
        "",
        frame_table(splits.fillna(0).astype(int)),
        "",
        "## Per source and sub-category",
        "",
        frame_table(sources) if not sources.empty else "(not recorded)",
        "",
        "## Licences",
        "",
        per_label(kept, "license"),
        "",
        "## File formats as scraped",
        "",
        per_label(kept, "scraped_format"),
        "",
        "## Widths (px)",
        "",
        frame_table(widths),
        "",
        "## JPEG quality of the files the model reads (-1: not a JPEG)",
        "",
        per_label(kept, "jpeg_quality"),
        "",
        "## Skipped by the scrape",
        "",
    ]
    skipped = (scrape_report or {}).get("skipped") or {}
    if skipped:
        table = pd.DataFrame(skipped).T.fillna(0).astype(int)
        table.index.name = "reason"
        lines.append(frame_table(table))
    else:
        lines.append("(nothing, or no reports/scrape.json)")
    for key, title in (
        ("stopped_sources", "Sources stopped early"),
        ("label_conflicts", "Files listed under both labels"),
    ):
        if (scrape_report or {}).get(key):
            lines += ["", f"{title}: {scrape_report[key]}"]
    lines += [
        "",
        "## Dropped by prepare",
        "",
        frame_table(dropped) if not dropped.empty else "(nothing)",
        "",
        "## Confounds",
        "",
        "Test ROC-AUC of a small classifier that sees only these cues (0.5: no signal; the "
        "further from 0.5, the more the classes differ in that cue alone):",
        "",
        f"- all cues together: {fmt_auc(confounds['all_cues']['roc_auc'])}",
        *(f"- {cue}: {fmt_auc(auc)}" for cue, auc in confounds["per_cue"].items()),
        "",
    ]
    return "\n".join(lines)


def fmt_auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def check_crawl_finished(raw_dir: Path) -> None:
    """StageFailed naming the interrupted crawl, and how to resume it, if raw_dir holds one."""
    marker = raw_dir / CRAWL_INCOMPLETE.name
    queue = raw_dir / ".jobdir"
    if marker.is_file() or (queue.is_dir() and any(queue.iterdir())):
        why = marker.read_text().strip() if marker.is_file() else "its queue is still there"
        raise StageFailed(
            f"{raw_dir} holds an interrupted crawl ({why}): its images are a partial, possibly "
            "one-sided, sample. Resume it with `dvc repro` (or `python -m pipeline.stages.scrape`) "
            "before preparing"
        )


def main() -> None:
    params = load_params()
    check_crawl_finished(MANIFEST.parent)
    manifest = pd.read_csv(MANIFEST, dtype={"id": str})
    scrape_report = read_json(SCRAPE_REPORT) if SCRAPE_REPORT.is_file() else None
    with atomic_outputs(SPLITS.parent, REPORT, CONFOUNDS, DATASET_CARD) as (
        out,
        report_tmp,
        confounds_tmp,
        card_tmp,
    ):
        out.mkdir()
        normalized = out / NORMALIZED_DIR.name if params["data"]["normalize"] else None
        if normalized:
            normalized.mkdir()
        images, report = prepare(
            manifest, MANIFEST.parent, params["data"], params["seed"], normalized
        )
        images["path"] = [
            str(NORMALIZED_DIR / Path(p).name) if normalized else str(MANIFEST.parent / p)
            for p in images["path"]
        ]
        for leftover in set(normalized.iterdir() if normalized else ()) - {
            out / NORMALIZED_DIR.name / Path(p).name for p in images["path"]
        }:
            leftover.unlink()  # re-encoded copies of images dropped later (duplicates)
        columns = ["id", "path", "label", "split", "group", "phash", "source_name"]
        images[columns + list(CUES)].to_csv(out / SPLITS.name, index=False)
        confounds = confound_report(images, params["seed"])
        report_tmp.write_text(json_text(report), encoding="utf-8")
        confounds_tmp.write_text(json_text(confounds), encoding="utf-8")
        card_tmp.write_text(
            dataset_card(manifest, images, report, confounds, scrape_report), encoding="utf-8"
        )
    print(f"prepare: trivial cues alone reach ROC-AUC {confounds['all_cues']['roc_auc']}")
    for reason, counts in report["dropped"].items():
        print(f"prepare: dropped {sum(counts.values())} image(s): {reason} {counts}")
    print(
        f"prepare: kept {report['kept']} image(s): {report['kept_per_split']}; "
        f"the dataset card is {DATASET_CARD}"
    )


if __name__ == "__main__":
    run(main, "prepare")
