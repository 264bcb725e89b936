"""Shared fixtures: small generated image folders and throw-away copies of the DVC project
(built by benchmarks/project.py, which the benchmarks share)."""

from __future__ import annotations

import json
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


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON (RFC 8259)")


def strict_loads(text: str) -> Any:
    """JSON parsed as strict parsers do: NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_refuse)


def strict_json(path: Path) -> Any:
    """A JSON file parsed strictly (strict_loads); an AssertionError names the file."""
    try:
        return strict_loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise AssertionError(f"{path}: {error}") from error


def strict_json_files(folder: Path) -> list[Path]:
    """Every JSON file under `folder` (Git's and DVC's own folders left out), each parsed
    strictly (strict_json); the files, for the caller to check that it found the ones it wrote."""
    files = [
        path
        for path in sorted(folder.rglob("*.json"))
        if not {".git", ".dvc"} & set(path.relative_to(folder).parts)
    ]
    for path in files:
        strict_json(path)
    return files


def backbone_config(name: str, **values: Any) -> dict[str, Any]:
    """The composed settings of backbone `name` (configs/backbones/<name>.yaml), with `values`."""
    return {**compose_params()["backbones"][name], **values}


# a centre crop at native resolution, and a resize
EXPLAINED_BACKBONES = {"spectrum": 32, "vgg16": 32}


def make_trained_project(root: Path, *overrides: str) -> dict[str, Any]:
    """What the explain and blend stages read, as the earlier stages lay it out, for
    EXPLAINED_BACKBONES at small sizes with random weights and untrained heads; the params with
    small explain settings and `overrides`."""
    import numpy as np
    import pandas as pd
    import yaml

    from pipeline.core import paths
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.head import build_head

    params = compose_params(
        "explain.grid=4",
        "explain.images=4",
        "explain.steps=4",
        "explain.random_orders=2",
        *overrides,
    )
    params["backbones"] = {
        name: {**params["backbones"][name], "weights": None, "input_size": size}
        for name, size in EXPLAINED_BACKBONES.items()
    }
    params["backbone"] = {"name": "spectrum"}
    params["head"] = {**params["head"], "units": 4}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    folder = make_image_folder(root / "images", per_class=5, size=48)
    images = sorted(folder.rglob("*.png"))
    ids = [f"i{k}" for k in range(len(images))]
    labels = [path.parent.name for path in images]
    splits = pd.DataFrame({"id": ids, "label": labels, "split": "test", "path": images})
    splits["path"] = splits["path"].astype(str)
    paths.SPLITS.parent.mkdir(parents=True)
    splits.to_csv(paths.SPLITS, index=False)
    for name, spec in params["backbones"].items():
        extractor = build_extractor(Backbone.from_spec(spec))
        paths.features_dir(name).mkdir(parents=True)
        extractor.save_weights(paths.features_dir(name) / paths.BACKBONE_WEIGHTS_FILE)
        head = build_head(extractor.output_shape[-1], **params["head"])
        (paths.HEADS_DIR / name).mkdir(parents=True)
        head.save_weights(paths.HEADS_DIR / name / paths.HEAD_WEIGHTS_FILE)
        calibration = {"method": "temperature", "parameters": {"temperature": 0.5}}
        (paths.HEADS_DIR / name / paths.CALIBRATION_FILE).write_text(
            json.dumps({**calibration, "threshold": 0.5})
        )
        paths.SCORES_DIR.mkdir(exist_ok=True)
        # the gallery's choice, not the model's: ai/ sorts first, and its last image is a mistake
        p_real = np.linspace(0.05, 0.95, len(ids))[[0, 1, 2, 3, 9, 5, 6, 7, 8, 4]]
        splits[["id", "label"]].assign(p_real=p_real).to_csv(paths.scores_file(name), index=False)
    return params


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

    from pipeline.core.io import write_json
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.calibrate import Calibration
    from pipeline.models.head import build_head

    keras.utils.set_random_seed(seed)
    extractor = build_extractor(
        Backbone.from_spec(backbone_config("spectrum", input_size=32, bins=8))
    )
    head = build_head(8, units=4, dropout=0.0)
    inputs = keras.Input((32, 32, 3))
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, Calibration()(head(extractor(inputs)))).save(folder / "model.keras")
    info = {"backbone": "spectrum", "input_size": 32, "input_mode": "center_crop", "min_size": 32}
    write_json(folder / "model.json", {**info, "threshold": 0.5, "test_metrics": {}, **MAPS})
    return folder


MAPS = {"explain": {"method": "occlusion", "grid": 4, "fill": "blur"}}  # model.json's, quick


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_model(tmp_path_factory.mktemp("export"))


def make_detail_model(folder: Path) -> Path:
    """An exported model (32 px, resized) whose P(real) rises with the fine detail in the top-left
    quarter of its input and ignores the rest: its maps have a known answer, strong blue cells
    there on a detailed image (the `ai` synthetic_image's checkerboard) and nothing elsewhere."""
    import keras
    import numpy as np

    from pipeline.core.io import write_json

    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)[..., None, None] / 3
    inputs = keras.Input((32, 32, 3))
    edges = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, activation="relu")
    detail = edges(keras.layers.Rescaling(1 / 255)(inputs))  # |laplacian|: relu of it and -it
    quarter = keras.layers.Cropping2D(((0, 16), (0, 16)))(detail)
    score = keras.layers.Dense(1, activation="sigmoid")
    outputs = score(keras.layers.GlobalAveragePooling2D()(quarter))
    edges.set_weights([np.concatenate([laplacian, -laplacian], axis=-1).repeat(3, axis=2)])
    score.set_weights([np.full((2, 1), 5.0, np.float32), np.array([-2.5], np.float32)])
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    info = {"backbone": "detail", "input_size": 32, "input_mode": "resize", "min_size": 16}
    write_json(folder / "model.json", {**info, "threshold": 0.5, "test_metrics": {}, **MAPS})
    return folder


@pytest.fixture(scope="session")
def detail_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detail_model(tmp_path_factory.mktemp("detail"))
