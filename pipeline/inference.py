"""Loading the exported model and scoring image files: shared by export, the CLI and the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

import pipeline.backbones  # noqa: F401  (registers the Preprocess layer for deserialisation)
from pipeline.features import compiled, image_batches
from pipeline.io import read_json

EXPORT_DIR = Path("models/export")
MODEL_FILE = "model.keras"
INFO_FILE = "model.json"


class ModelNotFound(SystemExit):
    pass


def load_exported(model_dir: Path = EXPORT_DIR) -> tuple[keras.Model, dict[str, Any]]:
    """The full inference model (safe mode: no arbitrary code) and its model.json."""
    model_file, info_file = Path(model_dir) / MODEL_FILE, Path(model_dir) / INFO_FILE
    if not model_file.is_file() or not info_file.is_file():
        raise ModelNotFound(
            f"No exported model in {model_dir}: run `dvc repro` to train and export one."
        )
    return keras.saving.load_model(model_file, safe_mode=True), read_json(info_file)


def score_files(
    model: keras.Model,
    paths: list[str],
    input_size: int,
    input_mode: str = "resize",
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(real), ok flags) per file; a file that cannot be decoded has ok=False and score NaN."""
    forward = compiled(model)
    scores, flags = [], []
    for images, ok in image_batches(paths, input_size, batch_size, input_mode):
        scores.append(forward(images).numpy()[:, 0])
        flags.append(ok)
    if not scores:
        return np.empty(0), np.empty(0, dtype=bool)
    p_real, ok = np.concatenate(scores).astype(np.float64), np.concatenate(flags)
    p_real[~ok] = np.nan
    return p_real, ok
