"""`aiic predict`: score image files, folders and URLs with the exported model.

One row per image: the path or URL, P(real), the label, or the reason it was skipped. Unreadable
files, images smaller than prepare accepts and refused URLs are reported and skipped; the exit
status is non-zero only for usage errors or a missing model (whatever the inputs).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.entry import run
from pipeline.fetch import FetchRefused, fetch_image, shorten
from pipeline.images import IMAGE_SUFFIXES, UnreadableImage, shape_for_model
from pipeline.inference import RUNTIMES, load_exported, score_files, score_images, verdict
from pipeline.paths import EXPORT_DIR


def is_url(source: str) -> bool:
    return "://" in source


def expand(sources: list[str], recursive: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """Files to score (folders expanded to their images) and rows for the inputs that give none:
    a path that does not exist, a folder without images, and a folder whose images are in
    sub-folders that were not searched (the row says how many, and to add --recursive)."""
    files, notes = [], []
    for source in sources:
        path = Path(source)
        if is_url(source) or path.is_file():
            files.append(source)
        elif path.is_dir():
            found = images_in(path, recursive)
            files.extend(found)
            nested = 0 if recursive else len(images_in(path, recursive=True)) - len(found)
            if nested:
                reason = f"{nested} image(s) in sub-folders not scored: add --recursive"
                notes.append(note(source, reason))
            elif not found:
                notes.append(note(source, "no images"))
        else:
            notes.append(note(source, "missing"))
    return files, notes


def images_in(folder: Path, recursive: bool) -> list[str]:
    """Image files in `folder`, and in its sub-folders where `recursive`, sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return [str(p) for p in sorted(found) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def note(source: str, reason: str) -> dict[str, Any]:
    """The row of an input that gives no image to score."""
    return {"source": source, "p_real": None, "label": None, "reason": reason}


def predict(
    sources: list[str], model_dir: Path, batch_size: int = 32, runtime: str = "keras"
) -> list[dict[str, Any]]:
    """Rows in input order, from the exported model in `model_dir`."""
    model, info = load_exported(model_dir, runtime)
    return score_sources(model, info, sources, batch_size)


def url_for_model(url: str, info: dict[str, Any]) -> np.ndarray:
    """The image at `url` fetched safely and shaped as model.json says; FetchRefused or
    UnreadableImage (whose message names the URL shortened) when it cannot be used."""
    image = fetch_image(url)
    min_size = info.get("min_size", 0)
    return shape_for_model(image, info["input_size"], info["input_mode"], shorten(url), min_size)


def score_sources(
    model: Any, info: dict[str, Any], sources: list[str], batch_size: int = 32
) -> list[dict[str, Any]]:
    """Rows in input order: files go through the same batched pipeline as the features stage."""
    size, mode, threshold = info["input_size"], info["input_mode"], info["threshold"]
    rows: dict[str, dict[str, Any]] = {}
    urls = [source for source in sources if is_url(source)]
    files = [source for source in sources if not is_url(source)]
    p_files, reasons = score_files(model, files, size, mode, batch_size, info.get("min_size", 0))
    for source, p_real, reason in zip(files, p_files, reasons, strict=True):
        rows[source] = {"p_real": None if reason else float(p_real), "reason": reason}
    fetched: dict[str, Any] = {}
    for url in urls:
        try:
            fetched[url] = url_for_model(url, info)
        except (FetchRefused, UnreadableImage) as error:
            rows[url] = {"p_real": None, "reason": str(error)}
    for url, p_real in zip(fetched, score_images(model, list(fetched.values())), strict=True):
        rows[url] = {"p_real": float(p_real), "reason": ""}
    return [
        {
            "source": source,
            "p_real": rows[source]["p_real"],
            "label": None
            if rows[source]["p_real"] is None
            else verdict(rows[source]["p_real"], threshold),
            "reason": rows[source]["reason"],
        }
        for source in sources
    ]


def write(rows: list[dict[str, Any]], output_format: str) -> None:
    if output_format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["source", "p_real", "label", "reason"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        width = max([len("source"), *(len(row["source"]) for row in rows)])
        print(f"{'source':<{width}}  {'p_real':>6}  {'label':<5}  reason")
        for row in rows:
            p_real = "" if row["p_real"] is None else f"{row['p_real']:.4f}"
            print(
                f"{row['source']:<{width}}  {p_real:>6}  {row['label'] or '':<5}  {row['reason']}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aiic predict", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="PATH_OR_URL")
    parser.add_argument("--model", type=Path, default=EXPORT_DIR, help="exported model folder")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--runtime",
        choices=tuple(RUNTIMES),
        default="keras",
        help="keras: model.keras with TensorFlow; litert: model.tflite with the LiteRT runtime",
    )
    args = parser.parse_args(argv)
    model, info = load_exported(args.model, args.runtime)  # a missing model fails, inputs or not
    files, notes = expand(args.sources, args.recursive)
    rows = score_sources(model, info, files, args.batch_size) if files else []
    write(rows + notes, args.format)


if __name__ == "__main__":
    run(main, "predict")
