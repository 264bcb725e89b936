"""The ray engine's overhead: its features throughput over the local engine's, on the same images
and the same cores, with one actor holding every core and with one actor per core, and the time
a local Ray takes to start.

`python -m benchmarks.ray_engine [--images N] [--backbone NAME] [--size PX] [--rounds R]` prints
the results as JSON. It uses ../shared/data/sample/ where present, else generated images, and a
random-init backbone (weights: null), so it runs offline. Each engine's time runs from its first
image to its last feature on disk, and splits into a fixed cost per run (for the ray engine,
building the backbone in each actor) and a steady rate per image (see run()); the start of Ray
itself is `ray_startup_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "sample"
SPECS = {
    "inceptionv3": {"application": "InceptionV3", "input_size": 299},
    "vgg16": {"application": "VGG16", "input_size": 224},
}


def image_files(count: int, folder: Path) -> list[str]:
    """`count` image files: the shared sample's, or generated ones."""
    if SAMPLE.is_dir():
        files = sorted(SAMPLE.rglob("*.jpg"))
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i in range(min(count, 64)):
            files.append(folder / f"{i}.jpg")
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(files[-1])
    return [str(path) for path in (files * (count // len(files) + 1))[:count]]


def seconds(
    engine: dict[str, Any] | None, spec: dict, model: Any, paths: list[str], out: Path
) -> float:
    from pipeline.engines import extract

    start = time.perf_counter()
    extract(engine, spec, model, paths, out)
    return time.perf_counter() - start


def run(
    images: int = 96, backbone: str = "inceptionv3", size: int | None = None, rounds: int = 2
) -> dict:
    """Rounds of: the local engine, then on a local Ray of every core of this machine one actor
    of all cores and one actor per core (TensorFlow's threads in each actor follow its CPUs),
    each over `images` and then twice as many images.

    The ratios (`ray_engine_ratio`: one actor per core) are of whole runs of twice `images`.
    A run's time is also split into a fixed cost (the ray engine builds and traces the backbone
    in every actor, every run) and a steady rate, the extra images over the extra time
    (`*_steady_*`); with several actors that split is only an estimate, since the first actor up
    works while the others are still building. Ratios are medians over rounds of the ratio within
    a round, so that load from other processes, which changes over minutes, weighs on both sides
    of each ratio alike."""
    import keras

    from pipeline.backbones import extractor_from_spec
    from pipeline.engines import ray_session

    cores = os.cpu_count() or 1
    spec = {
        "name": backbone,
        **SPECS[backbone],
        "weights": None,
        "batch_size": 32,
        "precision": "float32",
    }
    if size:
        spec["input_size"] = size
    keras.utils.set_random_seed(0)
    model = extractor_from_spec(spec)
    engines = {"local": None}
    for actors in (1, cores):
        engines[f"ray_{actors}_actors"] = {
            "name": "ray",
            "actors": actors,
            "cpus_per_actor": cores // actors,
            "gpus_per_actor": 0,
            "num_cpus": cores,
        }
    rates: dict[str, list[float]] = {name: [] for name in engines}
    fixed: dict[str, list[float]] = {name: [] for name in engines}
    whole: dict[str, list[float]] = {name: [] for name in engines}
    with tempfile.TemporaryDirectory() as work:
        paths = image_files(2 * images, Path(work) / "images")
        out = Path(work) / "features.npy"
        # the local engine traces its forward pass once per model (kept for later calls): not
        # a cost of every run, as building the backbone in the actors is
        seconds(None, spec, model, paths[: spec["batch_size"] + 1], out)
        start = time.perf_counter()
        with ray_session(num_cpus=cores):
            startup = time.perf_counter() - start
            for _ in range(rounds):
                for name, engine in engines.items():
                    small = seconds(engine, spec, model, paths[:images], out)
                    large = seconds(engine, spec, model, paths, out)
                    rates[name].append(images / (large - small))
                    fixed[name].append(2 * small - large)
                    whole[name].append(2 * images / large)

    def ratio(values: dict[str, list[float]], name: str) -> float:
        within = [ray / local for ray, local in zip(values[name], values["local"], strict=True)]
        return round(statistics.median(within), 3)

    several = f"ray_{cores}_actors"
    return {
        "backbone": backbone,
        "input_size": spec["input_size"],
        "images": [images, 2 * images],
        "cores": cores,
        "rounds": rounds,
        **{f"{name}_steady_images_per_s": [round(r, 2) for r in rates[name]] for name in rates},
        **{f"{name}_fixed_s": [round(s, 1) for s in fixed[name]] for name in fixed},
        "ray_one_actor_ratio": ratio(whole, "ray_1_actors"),
        "ray_engine_ratio": ratio(whole, several),
        "ray_one_actor_steady_ratio": ratio(rates, "ray_1_actors"),
        "ray_engine_steady_ratio": ratio(rates, several),
        "ray_startup_s": round(startup, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="the smaller of two runs")
    parser.add_argument("--backbone", choices=SPECS, default="inceptionv3")
    parser.add_argument("--size", type=int, default=None, help="input size (default: native)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.images, args.backbone, args.size, args.rounds), indent=2))


if __name__ == "__main__":
    main()
