"""The export formats side by side, for the serve benchmark (benchmarks/serve.py, whose section
reports them): a model as export builds it, written in every format, and each format's latency,
throughput, agreement with .keras and size on disk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.models.backbones import Backbone


def export_model(folder: Path, backbone: Backbone, images: np.ndarray) -> dict[str, Any]:
    """model.keras, model.json and every format in `folder`, for `backbone` (random
    weights) under a head; the threshold is the median score of `images`, so that verdicts split
    and their agreement means something."""
    import keras

    from pipeline.core.io import write_json
    from pipeline.models.backbones import build_extractor
    from pipeline.models.calibrate import Calibration
    from pipeline.models.formats import FORMATS
    from pipeline.models.head import build_head

    keras.utils.set_random_seed(0)
    size = backbone.input_size
    extractor = build_extractor(backbone)
    inputs = keras.Input((size, size, 3))
    head = build_head(extractor.output_shape[-1], units=256, dropout=0.3)
    calibration = Calibration("temperature", {"temperature": 1.5})
    model = keras.Model(inputs, calibration(head(extractor(inputs))))
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    threshold = float(np.median(model(images.astype(np.float32)).numpy()))
    info = {"backbone": backbone.name, "input_size": size, "input_mode": backbone.input_mode}
    write_json(folder / "model.json", {**info, "min_size": 32, "threshold": threshold})
    seconds = {}
    for name, form in FORMATS.items():
        started = time.perf_counter()
        form.write(model, size, folder / form.file)
        seconds[name] = round(time.perf_counter() - started, 1)
    return {"threshold": threshold, "export_seconds": seconds}


def timed_calls(function: Any, argument: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - started)
    return times


def bytes_on_disk(path: Path) -> int:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(file.stat().st_size for file in files if file.is_file())


def compare_formats(folder: Path, batch: np.ndarray, threshold: float, repeats: int) -> dict:
    """Latency of one image, throughput of `batch`, agreement with .keras: per format."""
    from pipeline.core.paths import MODEL_FILE
    from pipeline.models.formats import FORMATS
    from pipeline.serving.inference import forward, load_exported

    model, _ = load_exported(folder)
    scorers = {"keras": forward(model)}
    scorers.update({name: form.load(folder / form.file) for name, form in FORMATS.items()})
    reference = scorers["keras"](batch)
    results = {}
    for name, score in scorers.items():
        score(batch[:1]), score(batch)  # warm: traced, tensors allocated
        single = timed_calls(score, batch[:1], repeats)
        batched = timed_calls(score, batch, max(3, repeats // 5))
        p_real = score(batch)
        results[name] = {
            "latency_ms": round(1000 * float(np.median(single)), 2),
            "throughput_img_s": round(len(batch) / float(np.median(batched)), 1),
            "verdict_agreement": float(np.mean((p_real >= threshold) == (reference >= threshold))),
            "max_abs_diff": float(np.max(np.abs(p_real - reference))),
            "bytes": bytes_on_disk(
                folder / (FORMATS[name].file if name in FORMATS else MODEL_FILE)
            ),
        }
    return results
