"""Training on images: the input pipeline against a bare fit, and memory as the set grows.

Throughput: the features stage's training (pipeline.models.training: images decoded from their files
by TrainingImages' worker threads, augmented, class-weighted) against Keras' `fit` on the same
images already decoded into one array, the same network, batch size and seed, in turns; each
side's images/s is that of its epochs after the first (which traces the step). The ratio says
whether decoding starves the network.

Memory: the peak resident memory (VmHWM) of a process that trains one epoch on N and on 4N
images: streamed, it should not grow with N.

`python -m benchmarks.training_stage [--images N]` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import in_fresh_process
from pipeline.core.tables import markdown_table

if TYPE_CHECKING:
    from pipeline.models.backbones import Backbone

ROOT = Path(__file__).resolve().parents[1]
NAME = "training_stage"
NETWORK = "cnn"  # the CIFAKE-size network at its own input size
ROUNDS = 2
EPOCHS = 3  # the first of each run traces the training step and is not counted


def training_images(count: int, work: Path) -> tuple[list[str], np.ndarray]:
    """`count` image files and their class ids: CIFAKE's where present (the network's size),
    else generated ones, both labels in turn."""
    from benchmarks.common import CIFAKE, generated_folder, spread
    from pipeline.data.images import LABELS

    folder = CIFAKE if CIFAKE.is_dir() else generated_folder(work, count)
    per_label = [spread(sorted((folder / label).iterdir())) for label in LABELS]
    files, labels = [], []
    for i in range(count):
        label = i % len(LABELS)
        files.append(str(per_label[label][(i // len(LABELS)) % len(per_label[label])]))
        labels.append(label)
    return files, np.array(labels)


def network_backbone() -> Backbone:
    from benchmarks.project import compose_params
    from pipeline.models.backbones import Backbone

    spec = compose_params()["backbones"][NETWORK]
    return Backbone.from_spec({**spec, "weights": None})


class EpochTimes:
    """Seconds of each epoch of a fit (a Keras callback, built on first use)."""

    def __new__(cls) -> Any:
        import keras

        class Times(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.seconds.append(time.perf_counter() - self.started)

        return Times()


def fresh_network(backbone: Backbone) -> Any:
    import keras

    from pipeline.models.backbones import build_extractor
    from pipeline.models.head import build_head
    from pipeline.models.training import compiled_network

    keras.utils.set_random_seed(0)
    extractor = build_extractor(backbone)
    head = backbone.settings["training"]["head"]
    classifier = build_head(extractor.output_shape[-1], head["units"], head["dropout"])
    return compiled_network(extractor, backbone, classifier)


def images_per_second(count: int, seconds: list[float]) -> float:
    return count / float(np.median(seconds[1:]))


def fit_from_files(
    backbone: Backbone, files: list[str], labels: np.ndarray, epochs: int
) -> list[float]:
    """The training's own input pipeline: files decoded and augmented each epoch by
    TrainingImages' workers, class-weighted; each epoch's seconds."""
    from pipeline.data.oversample import class_weights
    from pipeline.models.training import TrainingImages, decode_workers

    config = backbone.settings["training"]
    dataset = TrainingImages(
        files,
        labels,
        backbone.input_size,
        backbone.input_mode,
        config["batch_size"],
        0,
        shuffle=True,
        augment=config["augment"],
        class_weight=class_weights(labels),
        workers=decode_workers(config["workers"]),
    )
    times = EpochTimes()
    fresh_network(backbone).fit(dataset, epochs=epochs, callbacks=[times], shuffle=False, verbose=0)
    return times.seconds


def bare_run(backbone: Backbone, arrays: np.ndarray, labels: np.ndarray) -> float:
    """images/s of Keras' fit on the images already decoded into memory: the faster of fit on
    the NumPy arrays and, on TensorFlow, on a tf.data pipeline of them (shuffled, batched,
    prefetched), so that the stage is held against the best in-memory input."""
    import keras

    batch_size = backbone.settings["training"]["batch_size"]
    targets = labels.astype(np.float32)
    inputs = [((arrays, targets), {"batch_size": batch_size})]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        pipeline = (
            tf.data.Dataset.from_tensor_slices((arrays, targets))
            .shuffle(len(arrays), seed=0)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        inputs.append(((pipeline,), {}))
    best = 0.0
    for args, kwargs in inputs:
        times = EpochTimes()
        fresh_network(backbone).fit(*args, epochs=EPOCHS, callbacks=[times], verbose=0, **kwargs)
        best = max(best, images_per_second(len(arrays), times.seconds))
    return best


def throughput(count: int, work: Path) -> dict[str, Any]:
    from pipeline.data.images import load_for_model

    backbone = network_backbone()
    files, labels = training_images(count, work)
    size, mode = backbone.input_size, backbone.input_mode
    arrays = np.stack([load_for_model(path, size, mode) for path in files])
    stage, bare = [], []
    for _ in range(ROUNDS):
        stage.append(images_per_second(count, fit_from_files(backbone, files, labels, EPOCHS)))
        bare.append(bare_run(backbone, arrays, labels))
    ratios = [s / b for s, b in zip(stage, bare, strict=True)]
    return {
        "network": NETWORK,
        "input_size": backbone.input_size,
        "images": count,
        "batch_size": backbone.settings["training"]["batch_size"],
        "stage_images_per_s": [round(v, 1) for v in stage],
        "bare_images_per_s": [round(v, 1) for v in bare],
        "ratio": round(float(np.median(ratios)), 3),
    }


def train_one_epoch(count: int, work: str) -> dict[str, Any]:
    """In this process: one epoch of the training on `count` images; its peak RSS."""
    from benchmarks.smote_scale import peak_rss_mb

    files, labels = training_images(count, Path(work))
    (seconds,) = fit_from_files(network_backbone(), files, labels, epochs=1)
    return {"images": count, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def memory(count: int, work: Path, timeout: float) -> dict[str, Any]:
    """Peak RSS of one epoch on `count` and on four times as many images, each in a fresh
    process; growth is the larger's peak over the smaller's, less one."""
    runs = []
    for images in (count, 4 * count):
        call = f"train_one_epoch({images}, {str(work)!r})"
        runs.append(in_fresh_process("benchmarks.training_stage", call, timeout))
    growth = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"] - 1
    return {"runs": runs, "growth": round(growth, 4)}


def run(images: int, memory_images: int, work: Path) -> dict[str, Any]:
    return {
        "throughput": throughput(images, work),
        "memory": memory(memory_images, work, timeout=3600),
        "gpu": "not measured: no GPU machine was available to this run",
    }


def measure(context: Any) -> dict[str, Any]:
    if context.quick:
        return run(64, 64, context.work)
    return run(2048, 2000, context.work)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "training_input_ratio": result["throughput"]["ratio"],
        "training_rss_growth_4x": result["memory"]["growth"],
    }


def targets(result: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    ratio, growth = result["throughput"]["ratio"], result["memory"]["growth"]
    return [
        (
            "12. training on files ÷ bare fit on decoded images (images/s)",
            ">= 0.9",
            f"{ratio}",
            ratio >= 0.9,
        ),
        ("12. training peak RSS growth, 4x the images", "< 10 %", f"{growth:.1%}", growth < 0.1),
    ]


def render(result: dict[str, Any]) -> list[str]:
    t, m = result["throughput"], result["memory"]
    rows = [
        (s, b, f"{s / b:.3f}")
        for s, b in zip(t["stage_images_per_s"], t["bare_images_per_s"], strict=True)
    ]
    memory_rows = [(r["images"], r["seconds"], r["peak_rss_mb"]) for r in m["runs"]]
    return [
        "## 12. Training on images",
        f"The `{t['network']}` network at {t['input_size']} px, batch {t['batch_size']}, on "
        f"{t['images']} images: the features stage's training (files decoded, augmented and "
        "class-weighted by `TrainingImages`' worker threads each epoch) against Keras' `fit` on "
        "the same images decoded once into memory (the faster of NumPy arrays and a tf.data "
        "pipeline of them), in turns; images/s of the epochs after the first. Median ratio "
        f"**{t['ratio']}**.",
        markdown_table(["training on files (img/s)", "bare fit (img/s)", "ratio"], rows),
        "Peak resident memory of one training epoch in a fresh process, on N and 4N images "
        f"(streamed from their files): growth **{m['growth']:.1%}**.",
        markdown_table(["images", "seconds", "peak RSS (MB)"], memory_rows),
        f"GPU: {result['gpu']}.",
    ]


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--memory-images", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        print(json.dumps(run(args.images, args.memory_images, Path(work)), indent=2))


if __name__ == "__main__":
    main()
