"""`aiic predict`: score image files, folders and URLs with the exported model.

One row per image: the path or URL, P(real), the label, or the reason it was skipped. Unreadable
files, images smaller than prepare accepts and refused URLs are reported and skipped; the exit
status is non-zero only for usage errors or a missing model (whatever the inputs). With
`--explain DIR`, each scored image's occlusion map (pipeline.models.occlusion) is drawn over it into
DIR as <name>.map.png, and each row names its file."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from pipeline.core.entry import run
from pipeline.core.io import json_text
from pipeline.core.paths import EXPORT_DIR
from pipeline.data.images import (
    IMAGE_SUFFIXES,
    INPUT_MODES,
    UnreadableImage,
    decode,
    shape_for_model,
)
from pipeline.data.overlay import save_map
from pipeline.models.occlusion import Occlusion, occlusion_maps
from pipeline.serving.fetch import FetchRefused, decode_fetched, fetch, fetch_image, shorten
from pipeline.serving.inference import (
    RUNTIMES,
    forward,
    load_exported,
    score_files,
    score_images,
    verdict,
)

MAPS_AT_ONCE = 8  # images decoded and mapped together: memory stays bounded for any folder
TITLE_NAME = 32  # characters of a file's name in its map's title


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


def load_source(source: str, info: dict[str, Any]) -> tuple[Image.Image, np.ndarray]:
    """A file decoded, or a URL's image fetched safely, and shaped as model.json says;
    FetchRefused or UnreadableImage (whose message names a URL shortened) when it cannot be
    used."""
    image, name = (
        (fetch_image(source), shorten(source)) if is_url(source) else (decode(source), source)
    )
    min_size = info.get("min_size", 0)
    return image, shape_for_model(image, info["input_size"], info["input_mode"], name, min_size)


def url_for_model(url: str, info: dict[str, Any]) -> np.ndarray:
    """The image at `url` fetched safely and shaped as model.json says; FetchRefused or
    UnreadableImage (whose message names the URL shortened) when it cannot be used."""
    return fetched_for_model(url, fetch(url).body, info)


def fetched_for_model(url: str, body: bytes, info: dict[str, Any]) -> np.ndarray:
    """The fetched `body` of `url` decoded and shaped as url_for_model does it (`aiic serve`
    fetches and decodes on separate threads)."""
    image = decode_fetched(url, body)
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
        result_row(source, rows[source]["p_real"], rows[source]["reason"], threshold)
        for source in sources
    ]


def result_row(source: str, p_real: float | None, reason: str, threshold: float) -> dict[str, Any]:
    label = None if p_real is None else verdict(p_real, threshold)
    return {"source": source, "p_real": p_real, "label": label, "reason": reason}


def file_name(source: str) -> str:
    """The last part of a file's path or a URL's path."""
    return Path(urlsplit(source).path if is_url(source) else source).name


def map_name(source: str, taken: set[str]) -> str:
    """<name>.map.png for a file or URL, numbered where two sources share a name."""
    stem = Path(file_name(source)).stem or "image"
    name, count = f"{stem}.map.png", 1
    while name in taken:
        count += 1
        name = f"{stem}-{count}.map.png"
    taken.add(name)
    return name


def explain_sources(
    model: Any, info: dict[str, Any], sources: list[str], folder: Path, batch_size: int = 32
) -> list[dict[str, Any]]:
    """score_sources' rows, each scored image's map drawn over it into `folder` (the row's
    `map`). The score is the map's own: the same forward pass on the same pixels, the first of
    the image's covered copies."""
    occlusion, score, threshold = Occlusion.of_model(info), forward(model), info["threshold"]
    size, region_of = info["input_size"], INPUT_MODES[info["input_mode"]].region
    folder.mkdir(parents=True, exist_ok=True)
    rows, taken = [], set()
    for start in range(0, len(sources), MAPS_AT_ONCE):
        loaded: dict[str, tuple[Image.Image, np.ndarray]] = {}
        refused: dict[str, str] = {}
        for source in sources[start : start + MAPS_AT_ONCE]:
            try:
                loaded[source] = load_source(source, info)
            except (FetchRefused, UnreadableImage) as error:
                refused[source] = str(error) if is_url(source) else error.reason
        shaped = [array for _, array in loaded.values()]
        p_real, maps = occlusion_maps(score, shaped, occlusion, batch_size)
        mapped = dict(zip(loaded, zip(p_real, maps, strict=True), strict=True))
        for source in sources[start : start + MAPS_AT_ONCE]:
            if source in refused:
                rows.append({**result_row(source, None, refused[source], threshold), "map": None})
                continue
            (image, _), (p, heat) = loaded[source], mapped[source]
            path = folder / map_name(source, taken)
            label = "real" if p >= threshold else "AI-generated"
            title = f"{shorten(file_name(source), TITLE_NAME)}: {label}, p-score {p:.3f}"
            save_map(path, image, heat, region_of(image.width, image.height, size), title)
            rows.append({**result_row(source, float(p), "", threshold), "map": str(path)})
    return rows


def write(rows: list[dict[str, Any]], output_format: str) -> None:
    columns = [
        "source",
        "p_real",
        "label",
        "reason",
        *(["map"] if any("map" in r for r in rows) else []),
    ]
    if output_format == "json":
        sys.stdout.write(json_text(rows))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        width = max([len("source"), *(len(row["source"]) for row in rows)])
        extra = "  map" if "map" in columns else ""
        print(f"{'source':<{width}}  {'p_real':>6}  {'label':<5}  reason{extra}")
        for row in rows:
            p_real = "" if row["p_real"] is None else f"{row['p_real']:.4f}"
            mapped = f"  {row.get('map') or ''}" if extra else ""
            print(
                f"{row['source']:<{width}}  {p_real:>6}  {row['label'] or '':<5}  {row['reason']}"
                + mapped
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """predict's arguments, declared once for its own parser and `aiic predict`'s sub-parser, so
    that `aiic predict --help` lists every option main() reads (this module loads no TensorFlow
    until a model is loaded)."""
    parser.add_argument(
        "sources", nargs="+", metavar="PATH_OR_URL", help="image files, folders and http(s) URLs"
    )
    parser.add_argument(
        "--model", type=Path, default=EXPORT_DIR, metavar="DIR", help="exported model folder"
    )
    parser.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="how rows are printed"
    )
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default %(default)s)"
    )
    parser.add_argument(
        "--runtime",
        choices=tuple(RUNTIMES),
        default="keras",
        help="keras: model.keras with TensorFlow; litert: model.tflite with the LiteRT runtime",
    )
    parser.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="also draw where the model looks (an occlusion map) over each scored image, as "
        "DIR/<name>.map.png",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aiic predict", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    model, info = load_exported(args.model, args.runtime)  # a missing model fails, inputs or not
    if args.explain:
        Occlusion.of_model(info)  # a model exported without map settings fails before any work
    files, notes = expand(args.sources, args.recursive)
    if not files:
        rows = []
    elif args.explain:
        rows = explain_sources(model, info, files, args.explain, args.batch_size)
    else:
        rows = score_sources(model, info, files, args.batch_size)
    write(rows + notes, args.format)


if __name__ == "__main__":
    run(main, "predict")
