"""`aiic evaluate DIR_OR_CSV`: the exported model measured on a person's own labelled images.

DIR is laid out as the local source is (real/ and ai/, optionally nested by source: real/coco/,
ai/sd14/ ...); a CSV has columns path,label and optionally source (paths relative to the CSV).
Every image is scored exactly as `aiic predict` scores it; the report gives the images used and
skipped (with reasons), then accuracy, balanced accuracy, real and AI accuracy at the model's
threshold, ROC-AUC, average precision, ECE and Brier, each with a bootstrap 95 % interval, for
all images and per source, and the reliability table.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.entry import run
from pipeline.core.io import atomic_path, json_text, read_json
from pipeline.core.paths import EXPORT_DIR, INFO_FILE
from pipeline.core.tables import markdown_table
from pipeline.data.images import IMAGE_SUFFIXES, LABELS, folder_source
from pipeline.models.metrics import bootstrap_ci, point_metrics, reliability_rows
from pipeline.serving.predict import predict

METRICS = ("accuracy", "balanced_accuracy", "real_accuracy", "ai_accuracy", "roc_auc")
METRICS += ("average_precision", "ece", "brier")
ALL = "all"


def labelled_images(source: Path) -> pd.DataFrame:
    """path, label and source of every image in a real/ + ai/ folder or a path,label[,source]
    CSV; an image directly in real/ or ai/ (or a CSV row without a source) takes the name of the
    folder or CSV as its source."""
    if source.is_dir():
        rows = [
            {"path": str(path), "label": label, "source": folder_source(source / label, path)}
            for label in LABELS
            for path in image_files(source / label)
        ]
        if not rows:
            raise ValueError(f"{source}: no images under {source}/real or {source}/ai")
    elif source.is_file():
        rows = csv_rows(source)
    else:
        raise FileNotFoundError(
            f"{source} does not exist: give a folder with real/ and ai/ or a CSV"
        )
    frame = pd.DataFrame(rows)
    frame["source"] = frame["source"].replace("", source.stem)
    return frame


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted, through symbolic links to folders too: a benchmark is
    often linked into the real/ai layout rather than copied."""
    found = []
    for parent, _, names in os.walk(folder, followlinks=True):
        found += [Path(parent) / name for name in names]
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def csv_rows(table: Path) -> list[dict[str, str]]:
    rows = []
    with open(table, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not {"path", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{table}: needs columns path,label (and optionally source)")
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if label not in LABELS:
                raise ValueError(f"{table}:{line}: label must be one of {LABELS}, got {label!r}")
            path = Path(row["path"].strip())
            rows.append(
                {
                    "path": str(path if path.is_absolute() else table.parent / path),
                    "label": label,
                    "source": (row.get("source") or "").strip(),
                }
            )
    return rows


def measured(labels: np.ndarray, p_real: np.ndarray, threshold: float) -> dict[str, Any]:
    """point_metrics with a bootstrap 95 % interval for each."""
    return {
        **point_metrics(labels, p_real, threshold),
        "ci95": bootstrap_ci(labels, p_real, threshold),
    }


def assess(images: pd.DataFrame, p_real: np.ndarray, reasons: list[str], threshold: float) -> dict:
    """The report of labelled `images` (path, label, source) and their scores (NaN and a reason
    where an image was skipped)."""
    used = np.array([reason == "" for reason in reasons], dtype=bool)
    labels = images["label"].map(LABELS.index).to_numpy(dtype=np.int64)
    y, p, sources = labels[used], p_real[used], images["source"].to_numpy()[used]
    return {
        "threshold": threshold,
        "images": {
            "listed": len(images),
            "used": int(used.sum()),
            "used_per_label": {name: int((y == i).sum()) for i, name in enumerate(LABELS)},
            "skipped": int((~used).sum()),
            "skipped_reasons": dict(Counter(r for r in reasons if r)),
        },
        "skipped": [
            {"path": path, "reason": reason}
            for path, reason in zip(images["path"], reasons, strict=True)
            if reason
        ],
        ALL: measured(y, p, threshold),
        "per_source": {
            name: measured(y[sources == name], p[sources == name], threshold)
            for name in sorted(set(sources.tolist()))
        },
        "reliability": reliability_rows(y, p) if len(y) else [],
    }


def evaluate_images(source: Path, model_dir: Path, batch_size: int = 32) -> dict[str, Any]:
    """Score every labelled image under `source` with the exported model as `aiic predict` does,
    and measure the scores against the model's threshold."""
    images = labelled_images(source)
    rows = predict(images["path"].tolist(), model_dir, batch_size)
    info = read_json(model_dir / INFO_FILE)
    p_real = np.array([np.nan if row["p_real"] is None else row["p_real"] for row in rows])
    report = assess(images, p_real, [row["reason"] for row in rows], info["threshold"])
    return {
        "input": str(source),
        "model": str(model_dir),
        "backbone": info.get("backbone"),
        **report,
    }


def cell(values: dict[str, Any], name: str) -> str:
    value, interval = values.get(name), values.get("ci95", {}).get(name)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def tables(report: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) pairs of the report, for the table and markdown formats. A single source's
    row would repeat the "all" row, so sources get rows only where there are several."""
    per_source = report["per_source"] if len(report["per_source"]) > 1 else {}
    groups = {ALL: report[ALL], **per_source}
    metrics = pd.DataFrame(
        [
            {
                "source": name,
                "images": v["images"],
                "real": v["real"],
                **{m.replace("_", " "): cell(v, m) for m in METRICS},
            }
            for name, v in groups.items()
        ]
    )
    counts = report["images"]
    used = pd.DataFrame(
        [
            {"listed": counts["listed"], "used": counts["used"], "skipped": counts["skipped"]}
            | {f"skipped: {reason}": n for reason, n in counts["skipped_reasons"].items()}
        ]
    )
    reliability = pd.DataFrame(report["reliability"])
    return [
        ("Images", used),
        (f"Metrics at threshold {report['threshold']:.4f} (95 % bootstrap intervals)", metrics),
        (
            "Reliability (calibrated P(real) per bin against the observed share of real images)",
            reliability,
        ),
    ]


def render(report: dict[str, Any], output_format: str) -> str:
    if output_format == "json":
        return json_text(report)
    header = f"{report['input']} scored by {report['model']} ({report['backbone']})"
    parts = [f"# {header}" if output_format == "markdown" else header]
    for title, frame in tables(report):
        if output_format == "markdown":
            rows = [
                [f"{v:.4f}" if isinstance(v, float) else v for v in row]
                for row in frame.itertuples(index=False)
            ]
            parts += [f"## {title}", markdown_table(frame.columns, rows)]
        else:
            parts += [title, frame.to_string(index=False, float_format="{:.4f}".format)]
    if report["skipped"]:
        listing = [f"{row['path']}: {row['reason']}" for row in report["skipped"]]
        parts += ["Skipped images", "\n".join(f"- {line}" for line in listing)]
    return "\n\n".join(parts) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments, declared once for its own parser and `aiic evaluate`'s
    sub-parser, so that `aiic evaluate --help` lists every option main() reads."""
    parser.add_argument(
        "source",
        type=Path,
        metavar="DIR_OR_CSV",
        help="a folder of real/ and ai/ (optionally nested by source), or a CSV of "
        "path,label[,source]",
    )
    parser.add_argument(
        "--model", type=Path, default=EXPORT_DIR, metavar="DIR", help="exported model folder"
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "markdown"),
        default="table",
        help="how the report is written",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write the report here instead of stdout"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default %(default)s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aiic evaluate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    text = render(evaluate_images(args.source, args.model, args.batch_size), args.format)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"aiic evaluate: wrote {args.out}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    run(main, "aiic evaluate")
