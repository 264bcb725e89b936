"""What stages, the CLI and the app share at run time: decoding images in batches, a model's
compiled forward pass, writing features, and reading the features the features stage cached.

Keras and its backend are imported only when a forward pass is compiled, so that stages which
only read cached features (balance, evaluate) start without them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import multiprocessing
import os
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.paths import (
    AUGMENTED_FILE,
    CROSSGEN_FEATURES,
    CROSSGEN_SETS_FILE,
    FEATURES_FILE,
    INDEX_FILE,
)
from pipeline.data.images import LABELS, load_many
from pipeline.models.backend import forward_pass

# Batches decoded ahead of the one the model is running, so that a device faster than decoding
# never waits for a batch while the decoders have work left, and a slower one finds the next ready.
PREFETCH_BATCHES = 2
logger = logging.getLogger(__name__)


def decode_workers(configured: int | None = None) -> int:
    """Processes that decode images: the configured number, or one per core this process may use."""
    if configured is not None:
        return configured
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """While decoding processes spawn: a spawned child runs the parent's __main__ module again
    (Python's multiprocessing documentation, "safe importing of main module"), and a main that is
    not safe to import, such as the script Streamlit runs as __main__, would run in every one."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@functools.cache
def decoders(workers: int) -> ProcessPoolExecutor:
    """`workers` decoding processes, started at first use and kept for this process's life, so
    that the app, a server or a warm CLI pays their start once. Spawned rather than forked: a fork
    of a process whose Keras backend runs threads can deadlock in the child (Python's
    multiprocessing documentation), and a spawned worker imports only pipeline.data.images. All are
    started here, with the main module hidden: the executor spawns a process per submitted task
    while none is idle, and none is before it has started Python, long after these submits."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    with main_module_hidden():
        started = [pool.submit(os.getpid) for _ in range(workers)]
    wait(started)
    return pool


def image_batches(
    paths: list[str],
    size: int,
    batch_size: int,
    mode: str = "resize",
    min_size: int = 0,
    workers: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (uint8 images, skip reasons), in order, decoded ahead by `workers` processes
    (None: one per core), each batch split among them; PREFETCH_BATCHES batches ahead.

    Processes, not threads: Pillow releases the GIL while it decodes and resizes, but the Python
    around it (EXIF, conversion, NumPy) does not, and for small images such as CIFAKE's that is
    most of the work (BENCHMARKS.md, the device benchmark's decode rows). An image that cannot be
    used yields a black frame and its reason ("" for a good image) instead of stopping the run;
    so does an image under `min_size` pixels (reason too_small): pipeline.data.images.load_many, the
    same pixels, order and reasons whatever the number of processes.
    """
    workers = decode_workers(workers)
    pool, chunk = decoders(workers), max(1, math.ceil(batch_size / workers))

    def submit(start: int) -> list[Future]:
        stop = min(start + batch_size, len(paths))
        # the executor spawns decoders on demand, at any submit, so the main module stays hidden
        # here too (a decoder that ran the main module was seen once, in a loaded JAX test run)
        with main_module_hidden():
            return [
                pool.submit(
                    load_many, paths[first : min(first + chunk, stop)], size, mode, min_size
                )
                for first in range(start, stop, chunk)
            ]

    starts = iter(range(0, len(paths), batch_size))
    ahead = deque(submit(start) for start in itertools.islice(starts, PREFETCH_BATCHES))
    try:
        while ahead:
            parts = [future.result() for future in ahead.popleft()]
            for start in itertools.islice(starts, 1):
                ahead.append(submit(start))
            for message in (message for _, _, skipped in parts for message in skipped):
                logger.warning("skipped %s", message)
            reasons = [reason for _, part_reasons, _ in parts for reason in part_reasons]
            yield np.concatenate([images for images, _, _ in parts]), np.array(reasons)
    except BrokenProcessPool:
        decoders.cache_clear()  # a decoder died (killed, out of memory): the next run starts anew
        raise
    finally:
        for future in (future for batch in ahead for future in batch):
            future.cancel()


def compiled(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The Keras model's forward pass on this process's Keras backend, NumPy in and out
    (pipeline.models.backend.forward_pass): one per model, compiled once for any batch size."""
    return forward_pass(model)


def extract(
    model: Any,
    paths: list[str],
    size: int,
    batch_size: int,
    out: Path,
    mode: str = "resize",
    workers: int | None = None,
) -> np.ndarray:
    """Write the model's outputs for `paths` into the .npy file `out` batch by batch, decoded by
    `workers` processes (None: one per core); returns the skip reason of every image ("" where it
    was used)."""
    forward = compiled(model)
    features = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.float32, shape=(len(paths), model.output_shape[-1])
    )
    reasons = np.full(len(paths), "", dtype=object)
    start = 0
    with tqdm(total=len(paths), desc=f"features {model.name}", unit="img") as progress:
        for images, batch_reasons in image_batches(paths, size, batch_size, mode, workers=workers):
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
