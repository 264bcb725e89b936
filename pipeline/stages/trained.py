"""A backbone's full model as the pipeline trained it: RGB pixels (0..255) in, calibrated P(real)
out. One place assembles it, for the stages that run it on images (export, explain), which may
not import each other."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras

from pipeline.core.io import read_json
from pipeline.core.paths import (
    BACKBONE_WEIGHTS_FILE,
    CALIBRATION_FILE,
    HEAD_WEIGHTS_FILE,
    HEADS_DIR,
    features_dir,
)
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.calibrate import Calibration
from pipeline.models.head import build_head


def build_inference_model(
    backbone: Backbone,
    backbone_weights: Path,
    head_weights: Path,
    head: dict[str, Any],
    calibration: Calibration,
) -> keras.Model:
    """RGB pixels (0..255) in, calibrated P(real) out: the extractor the features stage used, the
    trained head and the calibration fitted on validation, in one model."""
    extractor = build_extractor(dataclasses.replace(backbone, weights=None))
    extractor.load_weights(backbone_weights)
    classifier = build_head(extractor.output_shape[-1], **head)
    classifier.load_weights(head_weights)
    inputs = keras.Input(extractor.input_shape[1:], name="rgb")
    outputs = calibration(classifier(extractor(inputs)))
    return keras.Model(inputs, outputs, name=f"aiic_{backbone.name}")


def trained_model(params: dict[str, Any], backbone: Backbone) -> tuple[keras.Model, dict[str, Any]]:
    """The inference model of one backbone as the pipeline trained it, and its calibration.json
    (calibrator, threshold and threshold rule)."""
    name = backbone.name
    fitted = read_json(HEADS_DIR / name / CALIBRATION_FILE)
    model = build_inference_model(
        backbone,
        features_dir(name) / BACKBONE_WEIGHTS_FILE,
        HEADS_DIR / name / HEAD_WEIGHTS_FILE,
        params["head"],
        Calibration(fitted["method"], fitted["parameters"]),
    )
    return model, fitted
