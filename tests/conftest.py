"""Shared fixtures: small generated image folders and throw-away copies of the DVC project
(built by benchmarks/project.py, which the benchmarks share)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import project
from benchmarks.project import (
    ROOT,
    SHARED_DATA,
    committed_files,
    compose_params,
    make_image_folder,
    random_weights,
    run,
    set_yaml,
    synthetic_image,
)

__all__ = [
    "ROOT",
    "SHARED_DATA",
    "committed_files",
    "compose_params",
    "run",
    "set_yaml",
    "synthetic_image",
]

os.environ["AIIC_OFFLINE"] = "1"  # no test may try to download ImageNet weights
os.environ["AIIC_LOOPBACK_ONLY"] = "1"  # no test crawl may leave the machine
os.environ["DVC_NO_ANALYTICS"] = "1"  # nor DVC's usage reports


def backbone_config(name: str, **values: Any) -> dict[str, Any]:
    """The composed settings of backbone `name` (configs/backbones/<name>.yaml), with `values`."""
    return {**compose_params()["backbones"][name], **values}


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def make_project(
    destination: Path,
    source: Path,
    epochs: int = 3,
    backbones: dict[str, int] | None = None,
    only: tuple[str, ...] | None = None,
) -> Path:
    """A git + DVC copy of this project on the image folder `source`, with settings a CPU runs
    in seconds: random weights, small inputs (`backbones`: input sizes, by default every
    backbone of the configs at a small size), a small head trained for `epochs`, and only the
    backbones in `only` where it is given."""
    composed = compose_params()["backbones"]
    if backbones is None:
        small = random_weights(compose_params(), small=True)
        backbones = {name: spec["input_size"] for name, spec in small.items()}
    settings = {
        f"backbones/{name}": {"weights": None, "input_size": size}
        for name, size in backbones.items()
    }
    for name in backbones:  # the networks trained on images: as few epochs as the head
        training = composed.get(name, {}).get("training", {})
        if training.get("mode", "frozen") != "frozen":
            settings[f"backbones/{name}"]["training"] = {**training, "epochs": epochs}
    settings["head/dense"] = {"epochs": epochs, "units": 32, "batch_size": 16, "patience": 2}
    settings["balance/smote"] = {"k_neighbors": 3}
    return project.make_project(destination, source, settings, only)


def make_exported_model(folder: Path, seed: int = 0) -> Path:
    """A small exported model (spectrum features, an untrained head and the sigmoid of an
    uncalibrated Calibration) laid out as export does."""
    import keras

    from pipeline.backbones import extractor_from_spec
    from pipeline.calibrate import Calibration
    from pipeline.head import build_head
    from pipeline.io import write_json

    keras.utils.set_random_seed(seed)
    extractor = extractor_from_spec(backbone_config("spectrum", input_size=32, bins=8))
    head = build_head(8, units=4, dropout=0.0)
    inputs = keras.Input((32, 32, 3))
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, Calibration()(head(extractor(inputs)))).save(folder / "model.keras")
    info = {"backbone": "spectrum", "input_size": 32, "input_mode": "center_crop", "min_size": 32}
    write_json(folder / "model.json", {**info, "threshold": 0.5, "test_metrics": {}})
    return folder


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_model(tmp_path_factory.mktemp("export"))
