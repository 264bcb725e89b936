"""Stage `export`: the backbone chosen by the Hydra `backbone` group, ready for inference.

Writes models/export/: <backbone>.weights.h5 (the trained head), model.keras (one model from RGB
pixels to P(real): preprocess_input, frozen backbone, head), the deployment formats chosen in
`export.formats` (pipeline.models.formats: SavedModel, LiteRT float32 and int8) and model.json (what
the score means, input size, smallest accepted image, threshold, test metrics, each format's check,
how explanation maps are made, hashes of params and data). Before it finishes, it reloads
model.keras and every format and checks that they score test images as the train stage did (the
scores that evaluate measured); a format the converter cannot handle for this backbone is recorded
in model.json with the reason."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.core.entry import run
from pipeline.core.errors import StageFailed
from pipeline.core.io import atomic_path, read_json, write_json
from pipeline.core.paths import (
    EXPORT_DIR,
    HEAD_WEIGHTS_FILE,
    HEADS_DIR,
    INFO_FILE,
    MODEL_FILE,
    SPLITS,
    metrics_file,
    scores_file,
)
from pipeline.data.images import INPUT_MODES
from pipeline.models.backbones import Backbone
from pipeline.models.formats import FLOAT_TOLERANCE, FORMATS, check_writable, write_and_check
from pipeline.models.occlusion import Occlusion
from pipeline.models.runtime import image_batches
from pipeline.serving.inference import score_files
from pipeline.stages.params import backbone_spec, load_params
from pipeline.stages.trained import trained_model

CHECK_IMAGES = 8  # an error of preprocessing, weights or calibration shows on any image
QUANTIZED_CHECK_IMAGES = 64  # a quantised format is judged by verdicts and ROC-AUC: more images


def check_against_evaluation(
    model: keras.Model, predictions: pd.DataFrame, splits: pd.DataFrame, info: dict[str, Any]
) -> float:
    """Largest score difference between the saved model and the test scores that the evaluate
    stage measured (the train stage's, from cached features)."""
    sample = check_sample(predictions, splits, CHECK_IMAGES)
    p_real, _ = score_files(model, sample["path"].tolist(), info["input_size"], info["input_mode"])
    difference = float(np.max(np.abs(p_real - sample["p_real"].to_numpy()), initial=0.0))
    if not difference <= FLOAT_TOLERANCE:
        raise StageFailed(
            f"the saved model's scores differ from data/scores/ by {difference:.2e}"
            f" (> {FLOAT_TOLERANCE}) on test images; the export is not trustworthy"
        )
    return difference


def check_sample(predictions: pd.DataFrame, splits: pd.DataFrame, count: int) -> pd.DataFrame:
    """The first `count` test images: id, label, p_real (evaluate's score) and path."""
    return predictions.head(count).merge(splits[["id", "path"]], on="id")


def export_formats(
    model: keras.Model,
    names: list[str],
    folder: Path,
    sample: pd.DataFrame,
    info: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Write and check each format in `names` (FORMATS) against evaluate's scores of `sample`'s
    images; model.json's `formats`. StageFailed names the first format that fails its check."""
    if not names:
        return {}
    size, mode = info["input_size"], info["input_mode"]
    paths = sample["path"].tolist()
    images = np.concatenate([batch for batch, _ in image_batches(paths, size, len(paths), mode)])
    evaluated, is_real = sample["p_real"].to_numpy(), (sample["label"] == "real").to_numpy()
    results = {}
    for name in names:
        count = QUANTIZED_CHECK_IMAGES if FORMATS[name].quantized else CHECK_IMAGES
        results[name] = write_and_check(
            name,
            model,
            size,
            folder,
            images[:count],
            evaluated[:count],
            is_real[:count],
            info["threshold"],
        )
        if not results[name].get("passed", True):
            raise StageFailed(
                f"the {name} export ({results[name]['file']}) does not score test images as"
                f" evaluate measured: {results[name]}; the export is not trustworthy"
            )
    return results


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    params = load_params()
    check_writable(params["export"]["formats"])
    name = params["backbone"]["name"]
    backbone = Backbone.from_spec(backbone_spec(params, name))
    model, calibration = trained_model(params, backbone)
    threshold = calibration["threshold"]
    input_mode = backbone.input_mode
    used_params = {key: params[key] for key in ("data", "balance", "head", "calibration", "seed")}
    info = {
        "backbone": name,
        "weights": backbone.weights,
        "input_size": backbone.input_size,
        "input_mode": input_mode,
        "min_size": params["data"]["min_size"],  # inference refuses what prepare refused
        "preprocessing": INPUT_MODES[input_mode].description,
        "input": "float32 or uint8 RGB pixels in 0..255, shape (batch, input_size, input_size, 3)",
        "score": "probability that the image is a real photograph (not AI-generated)",
        "labels": {"real": f"score >= {threshold}", "ai": f"score < {threshold}"},
        "threshold": threshold,
        "threshold_rule": f"{calibration['threshold_rule']}, on the validation split",
        "calibrated": calibration["method"] != "none",
        "calibration": f"{calibration['method']}, fitted on the validation split",
        "test_metrics": read_json(metrics_file(name)),
        "explain": Occlusion.from_settings(params["explain"]).settings(),
        "params_sha256": digest(
            json.dumps({**used_params, "backbone": dict(backbone.settings)}).encode()
        ),
        "data_sha256": digest(SPLITS.read_bytes()),
        "aiic_version": __version__,
    }
    with atomic_path(EXPORT_DIR) as out:
        out.mkdir()
        shutil.copyfile(HEADS_DIR / name / HEAD_WEIGHTS_FILE, out / f"{name}.weights.h5")
        model.save(out / MODEL_FILE)
        reloaded = keras.saving.load_model(out / MODEL_FILE, safe_mode=True)
        predictions = pd.read_csv(scores_file(name), dtype={"id": str})
        splits = pd.read_csv(SPLITS, dtype={"id": str})
        difference = check_against_evaluation(reloaded, predictions, splits, info)
        info["formats"] = export_formats(
            reloaded,
            params["export"]["formats"],
            out,
            check_sample(predictions, splits, QUANTIZED_CHECK_IMAGES),
            info,
        )
        write_json(out / INFO_FILE, info)
    formats = [
        f"{key} ({'checked' if entry['file'] else 'not convertible'})"
        for key, entry in info["formats"].items()
    ]
    print(
        f"export: {name} -> {EXPORT_DIR}/ (reloaded model matches evaluation within"
        f" {difference:.1e}; formats: {', '.join(formats) or 'model.keras only'})"
    )


if __name__ == "__main__":
    run(main, "export")
