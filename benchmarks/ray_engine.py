"""The ray engine's overhead: its features throughput over the local engine's, on the same images
and the same cores, with one actor holding every core and with one actor per core, and the time
a local Ray takes to start.

`python -m benchmarks.ray_engine [--images N] [--backbone NAME] [--size PX]` prints the results
as JSON. It uses ../shared/data/sample/ where present, else generated images, and a random-init
backbone (weights: null), so it runs offline. Each engine's time runs from its first image to
its last feature on disk: the ray engine's includes building the backbone in each actor, which is
its real cost per run, but not the start of Ray itself, which is `ray_startup_s`.
"""

from __future__ import annotations

import argparse
import json
import os
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


def images_per_second(
    engine: dict[str, Any] | None, spec: dict, model: Any, paths: list[str], out: Path
) -> float:
    from pipeline.engines import extract

    start = time.perf_counter()
    extract(engine, spec, model, paths, out)
    return len(paths) / (time.perf_counter() - start)


def run(images: int = 192, backbone: str = "inceptionv3", size: int | None = None) -> dict:
    """Local engine, then a local Ray of every core of this machine with one actor of all cores
    and with one actor per core (TensorFlow's threads in each actor follow its CPUs)."""
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
    with tempfile.TemporaryDirectory() as work:
        paths = image_files(images, Path(work) / "images")
        local = images_per_second(None, spec, model, paths, Path(work) / "local.npy")
        start = time.perf_counter()
        with ray_session(num_cpus=cores):
            startup = time.perf_counter() - start
            rates = {}
            for actors in (1, cores):
                engine = {
                    "name": "ray",
                    "actors": actors,
                    "cpus_per_actor": cores // actors,
                    "gpus_per_actor": 0,
                    "num_cpus": cores,
                }
                rates[actors] = images_per_second(
                    engine, spec, model, paths, Path(work) / f"ray{actors}.npy"
                )
    return {
        "backbone": backbone,
        "input_size": spec["input_size"],
        "images": images,
        "cores": cores,
        "local_images_per_s": round(local, 2),
        "ray_one_actor_images_per_s": round(rates[1], 2),
        f"ray_{cores}_actors_images_per_s": round(rates[cores], 2),
        "ray_one_actor_ratio": round(rates[1] / local, 3),
        "ray_engine_ratio": round(rates[cores] / local, 3),
        "ray_startup_s": round(startup, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--backbone", choices=SPECS, default="inceptionv3")
    parser.add_argument("--size", type=int, default=None, help="input size (default: native)")
    args = parser.parse_args()
    print(json.dumps(run(args.images, args.backbone, args.size), indent=2))


if __name__ == "__main__":
    main()
