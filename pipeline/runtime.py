"""What stages, the CLI and the app share at run time: decoding images in batches, a model's
compiled forward pass, writing features, and reading the features the features stage cached.

Keras and its backend are imported only when a forward pass is compiled, so that stages which
only read cached features (balance, evaluate) start without them.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.backend import forward_pass
from pipeline.images import LABELS, UnreadableImage, load_for_model
from pipeline.paths import (
    AUGMENTED_FILE,
    CROSSGEN_FEATURES,
    CROSSGEN_SETS_FILE,
    FEATURES_FILE,
    INDEX_FILE,
)

DECODE_THREADS = 2
logger = logging.getLogger(__name__)


def image_batches(
    paths: list[str], size: int, batch_size: int, mode: str = "resize", min_size: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (uint8 images, skip reasons), in order, decoded ahead on worker threads.

    Pillow releases the GIL while it decodes and resizes, so two batches in flight overlap the
    model's forward pass. A fixed two threads, not tf.data's AUTOTUNE: its threads competed with
    oneDNN for the cores and cost InceptionV3 up to a quarter of its throughput (BENCHMARKS.md).
    An image that cannot be used yields a black frame and its reason ("" for a good image)
    instead of stopping the run; so does an image under `min_size` pixels (reason too_small).
    """

    def load(path: str) -> tuple[np.ndarray, str]:
        try:
            return load_for_model(path, size, mode, min_size), ""
        except UnreadableImage as error:
            logger.warning("skipped %s", error)
            return np.zeros((size, size, 3), np.uint8), error.reason

    def load_batch(start: int) -> tuple[np.ndarray, np.ndarray]:
        images, reasons = zip(*map(load, paths[start : start + batch_size]), strict=True)
        return np.stack(images), np.array(reasons)

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        ahead: deque[Future] = deque()
        for start in range(0, len(paths), batch_size):
            ahead.append(pool.submit(load_batch, start))
            if len(ahead) > DECODE_THREADS:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def compiled(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The Keras model's forward pass on this process's Keras backend, NumPy in and out
    (pipeline.backend.forward_pass): one per model, compiled once for any batch size."""
    return forward_pass(model)


def extract(
    model: Any,
    paths: list[str],
    size: int,
    batch_size: int,
    out: Path,
    mode: str = "resize",
) -> np.ndarray:
    """Write the model's outputs for `paths` into the .npy file `out` batch by batch; returns the
    skip reason of every image ("" where it was used)."""
    forward = compiled(model)
    features = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.float32, shape=(len(paths), model.output_shape[-1])
    )
    reasons = np.full(len(paths), "", dtype=object)
    start = 0
    with tqdm(total=len(paths), desc=f"features {model.name}", unit="img") as progress:
        for images, batch_reasons in image_batches(paths, size, batch_size, mode):
            end = start + len(images)
            features[start:end] = forward(images)
            reasons[start:end] = batch_reasons
            start = end
            progress.update(len(images))
    features.flush()
    del features
    return reasons


def load_features(backbone_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(features, labels as class ids, index rows) of one split, only images that decoded."""
    index = pd.read_csv(backbone_dir / INDEX_FILE, dtype={"id": str})
    rows = index.index[(index["split"] == split) & index["ok"]].to_numpy()
    features = np.load(backbone_dir / FEATURES_FILE, mmap_mode="r")[rows]
    labels = index.loc[rows, "label"].map(LABELS.index).to_numpy(dtype=np.int64)
    return np.asarray(features, dtype=np.float32), labels, index.loc[rows].reset_index(drop=True)


def load_augmented(backbone_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(features, labels as class ids, image ids) of the augmented training copies the features
    stage made, or None where augmentation is off."""
    path = backbone_dir / AUGMENTED_FILE
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return stored["features"], stored["labels"], stored["ids"]


def load_crossgen_features(backbone_dir: Path) -> dict[tuple[str, ...], np.ndarray] | None:
    """A trained backbone's features by each network the features stage trained for the
    cross-generator matrix, by that network's set of AI sources (memory-mapped, rows as in
    features.npy); None for a frozen backbone, whose one set of features serves every head."""
    sets_file = backbone_dir / CROSSGEN_SETS_FILE
    if not sets_file.is_file():
        return None
    sets = json.loads(sets_file.read_text(encoding="utf-8"))
    return {
        tuple(sources): np.load(backbone_dir / CROSSGEN_FEATURES / f"{i}.npy", mmap_mode="r")
        for i, sources in sets.items()
    }
