"""15. The device benchmark: decoding, the features stage and a training step on the first GPU.

On whichever Keras backend this process runs (KERAS_BACKEND), on the first GPU it sees, or on the
CPU where it sees none (it says so): the decode ceiling (pipeline.models.runtime.image_batches with
no model, at 1, 2, 4... and every core's processes, and on threads at 1 and 2 for comparison); for
InceptionV3 and VGG16 at random init, the bare forward pass on images already decoded in memory
against the features stage's path (runtime.extract: files decoded by every core's processes,
features written to a .npy), in float32 and in mixed precision; a training step of the CIFAKE-size
CNN (pipeline.models.training's own streaming input against the same images in memory); and the
features stage on every other installed backend, each in a fresh process, on the same images.

`python -m benchmarks.gpu [--quick] [--images N]` writes its figures under "gpu" into
benchmarks/results.json (the other benchmarks' figures kept) and rewrites BENCHMARKS.md. It needs
Keras and the project's light dependencies only, no TensorFlow and no network
(docs/getting-started.md, "On a GPU", for the wheels to bring to a machine with JAX or PyTorch and
CUDA).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.core.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
NAME = "gpu"
BACKBONES = ("inceptionv3", "vgg16")
NETWORK = "cnn"
PRECISIONS = ("float32", "bfloat16")  # bfloat16: Keras' mixed_bfloat16 (pipeline.models.backbones)
GPU_TARGET = 0.8  # stage ÷ min(bare forward, decode ceiling), on a GPU
DECODE_TARGET = 1.7  # two processes ÷ one, on a 2-core CPU
CPU_STAGE_TARGET = 0.9  # stage ÷ bare forward on TensorFlow, on a CPU
BACKEND_LIMIT_S = 300  # a backend's features stage that takes longer is recorded as such
ROUNDS = 2  # each rate is the best of this many, taken in turns with what it is compared to
DECODE_BATCH = 32  # the configs' batch size of InceptionV3 and VGG16

STAGE_SCRIPT = """
import json, sys, time
import numpy as np
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.backend import name
from pipeline.models.runtime import compiled, extract, image_batches
backbone, out = Backbone.from_spec(json.loads(sys.argv[1])), sys.argv[2]
paths = sys.stdin.read().split("\\n")
size, batch, mode = backbone.input_size, backbone.batch_size, backbone.input_mode
model = build_extractor(backbone)
started = time.perf_counter()
compiled(model)(np.zeros((batch, size, size, 3), np.uint8))
compile_s = time.perf_counter() - started
list(image_batches(paths[:batch], size, batch, mode))  # the decoding processes started
started = time.perf_counter()
extract(model, paths, size, batch, out, mode)
rate = len(paths) / (time.perf_counter() - started)
print(json.dumps({"backend": name(), "stage_images_per_s": rate, "compile_s": compile_s}))
"""


def backbone_spec(name: str, quick: bool) -> dict[str, Any]:
    """configs/backbones/<name>.yaml at random init (no download), read with PyYAML alone so that
    no Hydra is needed; a quick run shrinks the input and the batch."""
    spec = yaml.safe_load((ROOT / "configs" / "backbones" / f"{name}.yaml").read_text())
    spec.pop("defaults", None)
    if spec.get("training", {}).get("mode", "frozen") == "frozen":
        spec.pop("training", None)
    spec["weights"] = None
    if quick:
        spec.update(input_size=75 if spec.get("application") else 32, batch_size=8)
    return spec


def generated_images(folder: Path, count: int, side: int) -> list[str]:
    """`count` smooth random JPEGs of `side` px (the shared data's stand-ins where it is absent)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=95)
        paths.append(str(path))
    return paths


def photographs(count: int, work: Path) -> list[str]:
    """`count` large images: the shared sample's 512 px ones where present, else generated."""
    files = sorted(
        str(p) for p in (SHARED_DATA / "sample").glob("*/*.jpg") if "cifake" not in p.name
    )
    if not files:
        files = generated_images(work / "photographs", min(count, 64), 512)
    return (files * (count // len(files) + 1))[:count]


def cifake(count: int, work: Path) -> tuple[list[str], np.ndarray]:
    """`count` 32 px CIFAKE images (labels in turn) where present, else generated ones."""
    folders = [SHARED_DATA / "cifake" / label for label in ("ai", "real")]
    if all(folder.is_dir() for folder in folders):
        per_label = [sorted(str(p) for p in folder.iterdir())[:count] for folder in folders]
    else:
        per_label = [generated_images(work / f"cifake-{i}", count // 2 + 1, 32) for i in range(2)]
    files = [per_label[i % 2][i // 2] for i in range(count)]
    return files, np.arange(count) % 2


def threaded_batches(paths: list[str], size: int, batch: int, workers: int) -> Any:
    """image_batches' work on `workers` threads of this process instead of processes."""
    from pipeline.data.images import load_many

    chunk = -(-batch // workers)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), batch):
            stop = min(start + batch, len(paths))
            chunks = [
                paths[first : min(first + chunk, stop)] for first in range(start, stop, chunk)
            ]
            parts = pool.map(load_many, chunks, [size] * len(chunks))
            yield np.concatenate([images for images, _, _ in parts])


def decode_rates(sets: dict[str, tuple[list[str], int]], cores: int) -> dict[str, dict[str, float]]:
    """Images/s of decoding alone, per image set, by processes (N) and threads (N threads): the
    best of ROUNDS, every setting in turn each round, so that all see the same machine."""
    from pipeline.models.runtime import image_batches

    counts = sorted({1, 2, cores} | {n for n in (4, 8, 16) if n < cores})
    rates: dict[str, dict[str, float]] = {name: {} for name in sets}
    for _ in range(ROUNDS):
        for name, (paths, size) in sets.items():
            for workers in counts:
                list(image_batches(paths[:workers], size, DECODE_BATCH, workers=workers))  # started
                started = time.perf_counter()
                for _ in image_batches(paths, size, DECODE_BATCH, workers=workers):
                    pass
                rate = len(paths) / (time.perf_counter() - started)
                rates[name][str(workers)] = max(rates[name].get(str(workers), 0), rate)
            for workers in (1, 2):
                started = time.perf_counter()
                for _ in threaded_batches(paths, size, DECODE_BATCH, workers):
                    pass
                rate = len(paths) / (time.perf_counter() - started)
                key = f"{workers} threads"
                rates[name][key] = max(rates[name].get(key, 0), rate)
    return {name: {k: round(v, 1) for k, v in r.items()} for name, r in rates.items()}


def forward_and_stage(spec: dict[str, Any], paths: list[str], out: Path) -> dict[str, float]:
    """Images/s of the bare forward pass (decoded images in memory) and of the features stage's
    path (runtime.extract from the files), the same model, both after its compilation, in turns."""
    import keras

    from pipeline.data.images import load_many
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.runtime import compiled, extract, image_batches

    backbone = Backbone.from_spec(spec)
    size, batch, mode = backbone.input_size, backbone.batch_size, backbone.input_mode
    keras.utils.set_random_seed(0)
    model = build_extractor(backbone)
    arrays = load_many(paths, size, mode)[0]
    forward = compiled(model)
    started = time.perf_counter()
    forward(arrays[:batch])
    compile_s = time.perf_counter() - started
    list(image_batches(paths[:batch], size, batch, mode))  # the decoding processes started
    bare = stage = 0.0
    for _ in range(ROUNDS):  # in turns, each the best of its rounds: both see the same machine
        started = time.perf_counter()
        for first in range(0, len(arrays), batch):
            forward(arrays[first : first + batch])
        bare = max(bare, len(arrays) / (time.perf_counter() - started))
        started = time.perf_counter()
        extract(model, paths, size, batch, out, mode)
        stage = max(stage, len(paths) / (time.perf_counter() - started))
    return {
        "bare_images_per_s": round(bare, 2),
        "stage_images_per_s": round(stage, 2),
        "stage_over_bare": round(stage / bare, 3),
        "compile_s": round(compile_s, 2),
    }


def training_step(spec: dict[str, Any], files: list[str], labels: np.ndarray) -> dict[str, float]:
    """Images/s of the training's own input (files decoded and augmented by TrainingImages'
    workers) and of `fit` on the same images in memory, epochs after the first."""
    from benchmarks.training_stage import bare_run, fit_from_files, images_per_second
    from pipeline.data.images import load_many
    from pipeline.models.backbones import Backbone

    backbone = Backbone.from_spec(spec)
    arrays = load_many(files, backbone.input_size, backbone.input_mode)[0]
    streamed = images_per_second(len(files), fit_from_files(backbone, files, labels, 3))
    in_memory = bare_run(backbone, arrays, labels)
    return {
        "streamed_images_per_s": round(streamed, 1),
        "in_memory_images_per_s": round(in_memory, 1),
        "streamed_over_in_memory": round(streamed / in_memory, 3),
    }


def other_backends(spec: dict[str, Any], paths: list[str], work: Path) -> dict[str, Any]:
    """The features stage on each installed backend, each in a fresh process, the same images."""
    from pipeline.models.backend import BACKENDS

    rates = {}
    for backend in (name for name in BACKENDS if importlib.util.find_spec(name)):
        command = [
            sys.executable,
            "-c",
            STAGE_SCRIPT,
            json.dumps(spec),
            str(work / f"{backend}.npy"),
        ]
        environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            result = subprocess.run(
                command,
                input="\n".join(paths),
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**environment, "PYTHONPATH": str(ROOT)},
                timeout=BACKEND_LIMIT_S,
            )
        except subprocess.TimeoutExpired:
            rates[backend] = {"failed": f"over {BACKEND_LIMIT_S} s for {len(paths)} images"}
            continue
        if result.returncode:
            rates[backend] = {"failed": result.stderr.strip().splitlines()[-1][:300]}
            continue
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        rates[backend] = {key: round(value, 2) for key, value in answer.items() if key != "backend"}
    return rates


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def device() -> dict[str, Any]:
    """The backend, its version, and the GPU it runs on (None: the CPU)."""
    import keras

    from pipeline.models import backend

    gpus = backend.gpus()
    versions = {
        package: version(package)
        for package in ("keras", "tensorflow", "jax", "torch")
        if importlib.util.find_spec(package)
    }
    return {
        "backend": keras.backend.backend(),
        "gpu": gpus[0] if gpus else None,
        "gpus": len(gpus),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "versions": versions,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(quick: bool, images: int | None, work: Path) -> dict[str, Any]:
    """Every figure of the device benchmark, in one process (plus one per other backend)."""
    from pipeline.models.runtime import decode_workers

    count = images or (16 if quick else 128)
    result: dict[str, Any] = {"device": device(), "quick": quick, "load_before": load_average()}
    cores = decode_workers()
    large = photographs(count, work)
    small, labels = cifake(max(count, 64) * (1 if quick else 8), work)
    result["decode"] = decode_rates(
        {"photographs at 299 px": (large, 299), "cifake": (small, 32)}, cores
    )
    result["backbones"] = {}
    for name in BACKBONES:
        base = backbone_spec(name, quick)
        rows = {}
        for precision in PRECISIONS:
            spec = {**base, "precision": precision}
            rows[precision] = forward_and_stage(spec, large, work / f"{name}-{precision}.npy")
        rows["backends"] = other_backends(base, large, work)
        result["backbones"][name] = rows
    network = backbone_spec(NETWORK, quick)
    if quick:
        network["training"]["batch_size"] = 16
    result["training"] = {
        precision: training_step({**network, "precision": precision}, small, labels)
        for precision in PRECISIONS
    }
    result["training"]["images"] = len(small)
    result["load_after"] = load_average()
    return result


def measure(context: Any) -> dict[str, Any]:
    return run(context.quick, None, context.work)


def ceiling(result: dict[str, Any]) -> float:
    """The decode ceiling of the large images with every core's processes."""
    rates = result["decode"]["photographs at 299 px"]
    return rates[str(result["device"]["cores"])]


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    rows = []
    on = result["device"]["gpu"] or "CPU"
    decode = result["decode"]
    if result["device"]["cores"] >= 2:
        for name, rates in decode.items():
            ratio = round(rates["2"] / rates["1"], 3)
            rows.append(
                (
                    f"15. decode, 2 processes ÷ 1, {name}",
                    f"≥ {DECODE_TARGET}",
                    ratio,
                    ratio >= DECODE_TARGET,
                )
            )
    for name, rows_by in result["backbones"].items():
        row = rows_by["float32"]
        if result["device"]["gpu"]:
            bound = min(row["bare_images_per_s"], ceiling(result))
            ratio = round(row["stage_images_per_s"] / bound, 3)
            rows.append(
                (
                    f"15. {name} stage ÷ min(bare, decode ceiling), {on}",
                    f"≥ {GPU_TARGET}",
                    ratio,
                    ratio >= GPU_TARGET,
                )
            )
        elif result["device"]["backend"] == "tensorflow":
            ratio = row["stage_over_bare"]
            rows.append(
                (
                    f"15. {name} stage ÷ bare forward, TensorFlow on CPU",
                    f"≥ {CPU_STAGE_TARGET}",
                    ratio,
                    ratio >= CPU_STAGE_TARGET,
                )
            )
    return rows


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """results.json's top-level figures: each target's ratio, and every other backend's features
    stage ÷ TensorFlow's."""
    figures = {"gpu_device": result["device"]["gpu"] or "cpu"}
    for what, _, value, _ in targets(result):
        figures[what.removeprefix("15. ")] = value
    for name, by in result["backbones"].items():
        rates = {b: v.get("stage_images_per_s") for b, v in by["backends"].items()}
        for other, rate in rates.items():
            if other != "tensorflow" and rate and rates.get("tensorflow"):
                figures[f"{name} features stage, {other} ÷ tensorflow"] = round(
                    rate / rates["tensorflow"], 3
                )
    return figures


def render(result: dict[str, Any]) -> list[str]:
    d = result["device"]
    where = f"GPU {d['gpu']}" if d["gpu"] else "**the CPU: this backend sees no GPU**"
    versions = ", ".join(f"{k} {v}" for k, v in d["versions"].items())
    lines = [
        "## 15. The device benchmark: decoding, the features stage and a training step",
        f"`python -m benchmarks.gpu{' --quick' if result['quick'] else ''}`, {d['date']}: Keras on "
        f"{d['backend']}, on {where}, {d['cores']} cores ({versions}); load average "
        f"{result['load_before']} before and {result['load_after']} after (a shared machine: "
        "compare ratios, not rates). No GPU machine was lent to the task that wrote this "
        "benchmark (#25): its GPU figures are still to be measured with this command.",
    ]
    decode = result["decode"]
    keys = list(next(iter(decode.values())))
    table = markdown_table(
        ["images", *(f"{k} {'processes' if k.isdigit() else ''}".strip() for k in keys)],
        [[name, *(rates[k] for k in keys)] for name, rates in decode.items()],
    )
    lines += [
        "Decoding alone (pipeline.models.runtime.image_batches, img/s, best of "
        f"{ROUNDS} in turns), in processes and, for comparison, on threads of one process:",
        table,
    ]
    rows = []
    cross = []
    for name, by in result["backbones"].items():
        for precision in PRECISIONS:
            r = by[precision]
            rows.append(
                [
                    name,
                    precision,
                    r["bare_images_per_s"],
                    r["stage_images_per_s"],
                    f"**{r['stage_over_bare']}**",
                    r["compile_s"],
                ]
            )
        rates = {b: v.get("stage_images_per_s") for b, v in by["backends"].items()}
        if rates.get("tensorflow"):
            ratios = ", ".join(
                f"{b} ÷ tensorflow **{v / rates['tensorflow']:.3f}**"
                for b, v in rates.items()
                if v and b != "tensorflow"
            )
            failed = "".join(
                f" {b}: {v['failed']}." for b, v in by["backends"].items() if "failed" in v
            )
            cross.append(
                f"{name}: features stage img/s by backend {rates} ({ratios}); compile (or first "
                f"batch) s: { {b: v.get('compile_s') for b, v in by['backends'].items()} }."
                + failed
            )
    lines += [
        "Bare forward pass (images decoded in memory) against the features stage's path "
        "(runtime.extract: files decoded by every core's processes, features written), random "
        "init, float32 and bfloat16 (Keras' mixed_bfloat16):",
        markdown_table(
            ["backbone", "precision", "bare img/s", "stage img/s", "stage ÷ bare", "compile s"],
            rows,
        ),
        "The features stage of every installed backend, each in a fresh process on the same "
        "images (after its compilation): " + " ".join(cross),
    ]
    t = result["training"]
    lines.append(
        f"Training step of the CIFAKE-size CNN on {t['images']} images: "
        + "; ".join(
            f"{p}: streamed from files {t[p]['streamed_images_per_s']} img/s, in memory "
            f"{t[p]['in_memory_images_per_s']} img/s (**{t[p]['streamed_over_in_memory']}**)"
            for p in PRECISIONS
        )
        + "."
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--images", type=int, default=None, help="large images (default 128)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIIC_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.quick, args.images, Path(tmp))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[NAME] = result
    results.update(headline(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    try:  # the whole page needs every benchmark's module and a full run's header
        from benchmarks.__main__ import BENCHMARKS
        from benchmarks.render import markdown

        args.markdown.write_text(markdown(results, BENCHMARKS))
    except (ImportError, KeyError) as error:
        print(f"BENCHMARKS.md left as it was ({error}); this benchmark's section:", file=sys.stderr)
    print("\n\n".join(render(result)))


if __name__ == "__main__":
    main()
