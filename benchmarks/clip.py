"""CLIP's cost as a backbone, against InceptionV3 in the same run: the features stage's images/s
(files to features on disk, pipeline.models.runtime.extract) and its ratio to the bare compiled
forward pass on the same images already decoded in memory, CLIP's images/s over InceptionV3's, and
what importing KerasHub adds to a process that imports Keras.

Random-init backbones (weights: null) at their real input sizes, so it runs offline. Each rate is
the best of `repeats` passes, the bare and the stage pass alternating, so that other processes on
shared cores slow both alike rather than whichever ran while they were busy.
`python -m benchmarks.clip --images 32` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "sample"
BASELINE = "inceptionv3"
SPECS = {
    "clip": {
        "name": "clip",
        "extractor": "clip",
        "preset": "clip_vit_large_patch14",
        "input_size": 224,
    },
    BASELINE: {"name": BASELINE, "application": "InceptionV3", "input_size": 299},
}
IMPORT_SCRIPT = """
import time
start = time.perf_counter()
import keras
keras_done = time.perf_counter()
import keras_hub
print(keras_done - start, time.perf_counter() - keras_done)
"""


def image_paths(count: int, folder: Path) -> list[str]:
    """`count` image files: the shared sample's JPEGs (both sizes interleaved), or generated."""
    if SAMPLE.is_dir():
        files = sorted(str(p) for p in SAMPLE.rglob("*.jpg"))
        files = files[::2] + files[1::2]
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i in range(count):
            path = folder / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
            files.append(str(path))
    return (files * (count // len(files) + 1))[:count]


def forward_rates(
    spec: dict[str, Any], paths: list[str], work: Path, repeats: int
) -> dict[str, Any]:
    """Images/s of the features stage's path and of the bare forward pass, one backbone."""
    import keras

    from pipeline.data.images import load_for_model
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.runtime import compiled, extract

    keras.utils.set_random_seed(0)
    backbone = Backbone.from_spec(spec)
    size, batch, mode = backbone.input_size, backbone.batch_size, backbone.input_mode
    model = build_extractor(backbone)
    forward = compiled(model)
    forward(np.zeros((batch, size, size, 3), np.uint8))  # traced before either clock
    arrays = np.stack([load_for_model(p, size, mode) for p in paths])
    bare_seconds, stage_seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(arrays), batch):
            forward(arrays[first : first + batch])
        bare_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        extract(model, paths, size, batch, work / f"{backbone.name}.npy", mode)
        stage_seconds.append(time.perf_counter() - start)
    bare, stage = len(paths) / min(bare_seconds), len(paths) / min(stage_seconds)
    return {
        "input_size": size,
        "images": len(paths),
        "batch_size": batch,
        "repeats": repeats,
        "features": int(model.output_shape[-1]),
        "parameters": int(model.count_params()),
        "stage_images_per_s": round(stage, 3),
        "bare_images_per_s": round(bare, 3),
        "stage_over_bare": round(stage / bare, 3),
    }


def import_seconds() -> dict[str, float]:
    """Seconds to import Keras, then KerasHub on top of it, in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    keras_seconds, keras_hub_seconds = map(float, output.split()[-2:])
    return {
        "keras_s": round(keras_seconds, 2),
        "keras_hub_after_keras_s": round(keras_hub_seconds, 2),
    }


def run(
    images: int = 32,
    batch_size: int = 16,
    preset: str = "clip_vit_large_patch14",
    repeats: int = 3,
) -> dict[str, Any]:
    """CLIP (the preset at its native input size) and InceptionV3 on the same `images` files."""
    from pipeline.models.clip import ARCHITECTURES

    specs = {
        name: {**spec, "weights": None, "batch_size": batch_size, "precision": "float32"}
        for name, spec in SPECS.items()
    }
    specs["clip"].update(preset=preset, input_size=ARCHITECTURES[preset]["image_size"])
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        paths = image_paths(images, work / "images")
        results = {name: forward_rates(spec, paths, work, repeats) for name, spec in specs.items()}
    results["clip"]["preset"] = preset
    results["clip_over_inceptionv3"] = round(
        results["clip"]["stage_images_per_s"] / results[BASELINE]["stage_images_per_s"], 4
    )
    results["import"] = import_seconds()
    return results


NAME = "clip"
TARGET = 0.9  # the issue's: features stage ÷ bare forward, like the other backbones


def measure(context: Any) -> dict[str, Any]:
    """Skipped where KerasHub (the clip extra) is missing; a quick run takes ViT-B/32."""
    from pipeline.models.clip import keras_hub_installed

    if not keras_hub_installed():
        return {"skipped": "KerasHub (the clip extra) is not installed"}
    if context.quick:
        return run(images=4, batch_size=4, preset="clip_vit_base_patch32", repeats=1)
    return run()


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    if "skipped" in result:
        return []
    ratio = result["clip"]["stage_over_bare"]
    return [("10. CLIP features stage ÷ bare forward", f">= {TARGET}", ratio, ratio >= TARGET)]


def render(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return ["## 10. CLIP against InceptionV3", f"Not measured: {result['skipped']}."]
    clip, base = result["clip"], result[BASELINE]
    return [
        "## 10. CLIP against InceptionV3",
        f"{clip['preset']} at {clip['input_size']} px: {clip['stage_images_per_s']} img/s in the "
        f"features stage, {clip['bare_images_per_s']} bare (stage ÷ bare "
        f"**{clip['stage_over_bare']}**); InceptionV3 at {base['input_size']} px: "
        f"{base['stage_images_per_s']} img/s (stage ÷ bare {base['stage_over_bare']}). CLIP ÷ "
        f"InceptionV3: **{result['clip_over_inceptionv3']}**. Importing KerasHub adds "
        f"{result['import']['keras_hub_after_keras_s']} s to Keras' "
        f"{result['import']['keras_s']} s.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="clip_vit_large_patch14")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.images, args.batch_size, args.preset, args.repeats), indent=2))


if __name__ == "__main__":
    main()
