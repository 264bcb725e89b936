"""Stage `features`: frozen-backbone features of every prepared image, streamed to disk.

`python -m pipeline.features <backbone>` writes data/features/<backbone>/: features.npy (float32,
one row per image of splits.csv), index.csv (id, label, split, ok) and backbone.weights.h5 (the
exact extractor used, so that the export reproduces these features bit for bit).
"""

from __future__ import annotations

import argparse
import logging
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from pipeline.backbones import backbone, extractor_from_spec
from pipeline.images import LABELS, UnreadableImage, load_for_model
from pipeline.io import atomic_path
from pipeline.params import backbone_spec, load_params
from pipeline.paths import FEATURES_DIR, SPLITS

DECODE_THREADS = 2
logger = logging.getLogger(__name__)


def image_batches(
    paths: list[str], size: int, batch_size: int, mode: str = "resize"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (uint8 images, skip reasons), in order, decoded ahead on worker threads.

    Pillow releases the GIL while it decodes and resizes, so two batches in flight overlap the
    model's forward pass. A fixed two threads, not tf.data's AUTOTUNE: its threads competed with
    oneDNN for the cores and cost InceptionV3 up to a quarter of its throughput (BENCHMARKS.md).
    An image that cannot be used yields a black frame and its reason ("" for a good image)
    instead of stopping the run.
    """

    def load(path: str) -> tuple[np.ndarray, str]:
        try:
            return load_for_model(path, size, mode), ""
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


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(model: keras.Model) -> tf.types.experimental.GenericFunction:
    """The model's forward pass as one traced graph: no per-batch Python overhead of predict().

    One function per model, so that repeated calls (the app, a warm CLI) reuse its traces.
    """
    if model not in _COMPILED:
        _COMPILED[model] = tf.function(
            lambda images: model(images, training=False), reduce_retracing=True
        )
    return _COMPILED[model]


def extract(
    model: keras.Model,
    paths: list[str],
    size: int,
    batch_size: int,
    out: Path,
    mode: str = "resize",
) -> np.ndarray:
    """Write features of `paths` into the .npy file `out` batch by batch; returns the ok flags."""
    forward = compiled(model)
    features = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.float32, shape=(len(paths), model.output_shape[-1])
    )
    ok = np.zeros(len(paths), dtype=bool)
    start = 0
    with tqdm(total=len(paths), desc=f"features {model.name}", unit="img") as progress:
        for images, reasons in image_batches(paths, size, batch_size, mode):
            end = start + len(images)
            features[start:end] = forward(images).numpy()
            ok[start:end] = reasons == ""
            start = end
            progress.update(len(images))
    features.flush()
    del features
    return ok


def load_features(backbone_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(features, labels as class ids, index rows) of one split, only images that decoded."""
    index = pd.read_csv(backbone_dir / "index.csv", dtype={"id": str})
    rows = index.index[(index["split"] == split) & index["ok"]].to_numpy()
    features = np.load(backbone_dir / "features.npy", mmap_mode="r")[rows]
    labels = index.loc[rows, "label"].map(LABELS.index).to_numpy(dtype=np.int64)
    return np.asarray(features, dtype=np.float32), labels, index.loc[rows].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    args = parser.parse_args()
    params = load_params()
    spec = backbone_spec(params, args.backbone)
    keras.utils.set_random_seed(params["seed"])
    # Built before any image is read: a missing weights file fails here, having done no work.
    model = extractor_from_spec(spec)
    splits = pd.read_csv(SPLITS, dtype={"id": str})
    with atomic_path(FEATURES_DIR / args.backbone) as out:
        out.mkdir()
        ok = extract(
            model, splits["path"].tolist(), spec["input_size"], spec["batch_size"],
            out / "features.npy", backbone(args.backbone).input_mode,
        )  # fmt: skip
        splits[["id", "label", "split"]].assign(ok=ok).to_csv(out / "index.csv", index=False)
        model.save_weights(out / "backbone.weights.h5")
    print(f"features {args.backbone}: {ok.sum()} image(s), {(~ok).sum()} skipped")


if __name__ == "__main__":
    main()
