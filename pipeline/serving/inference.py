"""Loading the exported model and scoring images: shared by export, the CLI, the app and the API.

Two runtimes score the same decoded pixels: `keras` (model.keras, on any Keras backend) and
`litert` (model.tflite through the LiteRT interpreter, no TensorFlow imported). Loading the Keras
model registers the project's Keras layers (preprocessing, spectrum, calibration), which it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelNotFound
from pipeline.core.io import read_json
from pipeline.core.paths import EXPORT_DIR, INFO_FILE, MODEL_FILE
from pipeline.models.formats import FORMATS, LiteRTModel
from pipeline.models.runtime import compiled, image_batches

RUNTIMES = {"keras": MODEL_FILE, "litert": FORMATS["litert"].file}


def exported_files(model_dir: Path, runtime: str = "keras") -> tuple[Path, Path]:
    """(model file, model.json) of `runtime` in `model_dir`; ModelNotFound where one is missing."""
    model_file, info_file = Path(model_dir) / RUNTIMES[runtime], Path(model_dir) / INFO_FILE
    if not model_file.is_file() or not info_file.is_file():
        raise ModelNotFound(
            f"No exported model ({RUNTIMES[runtime]} and {INFO_FILE}) in {model_dir}: run"
            " `dvc repro` to train and export one"
            + (" with litert in export.formats." if runtime == "litert" else ".")
        )
    return model_file, info_file


def load_exported(
    model_dir: Path = EXPORT_DIR, runtime: str = "keras"
) -> tuple[Any, dict[str, Any]]:
    """The full inference model of `runtime` (Keras in safe mode: no arbitrary code) and its
    model.json."""
    model_file, info_file = exported_files(model_dir, runtime)
    if runtime == "litert":
        return LiteRTModel(model_file), read_json(info_file)
    import keras

    # The project's layers register themselves with Keras when their modules load: every
    # extractor's (pipeline.models.backbones imports them all) and the calibration's.
    for module in ("pipeline.models.backbones", "pipeline.models.calibrate"):
        importlib.import_module(module)
    model = keras.saving.load_model(model_file, safe_mode=True)
    return model, read_json(info_file)


def forward(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The model's P(real) per image of a uint8 batch, as float64, for either runtime."""
    if isinstance(model, LiteRTModel):
        return model
    graph = compiled(model)
    return lambda images: graph(images)[:, 0].astype(np.float64)


def score_files(
    model: Any,
    paths: list[str],
    input_size: int,
    input_mode: str = "resize",
    batch_size: int = 32,
    min_size: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """P(real) per file and why a file was skipped ("" when it was scored; its score is NaN)."""
    score = forward(model)
    scores, reasons = [], []
    for images, batch_reasons in image_batches(paths, input_size, batch_size, input_mode, min_size):
        batch_scores = score(images)
        batch_scores[batch_reasons != ""] = np.nan
        scores.append(batch_scores)
        reasons.extend(batch_reasons.tolist())
    return (np.concatenate(scores) if scores else np.empty(0)), reasons


def score_images(model: Any, images: list[np.ndarray]) -> np.ndarray:
    """P(real) of images already shaped for the model (pipeline.data.images.shape_for_model)."""
    if not images:
        return np.empty(0)
    return forward(model)(np.stack(images))


def verdict(p_real: float, threshold: float) -> str:
    return "real" if p_real >= threshold else "ai"


UNCERTAIN_READING = "uncertain: the model cannot tell; possibly an edited or blended image"
UNCERTAIN_MARGIN = 0.1  # p-scores this close to the threshold are read as uncertain
CONFIDENT = (0.2, 0.8)  # beyond these, calibrated scores say "likely"


def reading_bands(threshold: float) -> list[tuple[str, str]]:
    """(p-score range, reading) from AI-generated to real, around the model's threshold."""
    low, high = max(threshold - UNCERTAIN_MARGIN, 0.0), min(threshold + UNCERTAIN_MARGIN, 1.0)
    return [
        (f"under {min(CONFIDENT[0], low):.2f}", "likely AI-generated"),
        (f"{min(CONFIDENT[0], low):.2f} to {low:.2f}", "leans towards AI-generated"),
        (f"{low:.2f} to {high:.2f}", UNCERTAIN_READING),
        (f"{high:.2f} to {max(CONFIDENT[1], high):.2f}", "leans towards a real photograph"),
        (f"{max(CONFIDENT[1], high):.2f} and up", "likely a real photograph"),
    ]


def describe(p_real: float, threshold: float) -> str:
    """What a p-score means, in words, consistent with the verdict at `threshold`."""
    bands = reading_bands(threshold)
    if abs(p_real - threshold) < UNCERTAIN_MARGIN:
        return bands[2][1]
    if p_real >= threshold:
        return bands[4][1] if p_real >= CONFIDENT[1] else bands[3][1]
    return bands[0][1] if p_real < CONFIDENT[0] else bands[1][1]
