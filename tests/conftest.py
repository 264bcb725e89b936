"""Shared fixtures: small generated image folders and throw-away copies of the DVC project."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROJECT_FILES = ("dvc.yaml", "configs", "pipeline", "scrapers", "scrapy.cfg", ".dvc/config")
# Tiny settings a CPU runs in seconds; the classes differ in texture, so a head can learn them.
SMALL_BACKBONES = {"inceptionv3": 75, "vgg16": 32}

os.environ["AIIC_OFFLINE"] = "1"  # no test may try to download ImageNet weights
os.environ["AIIC_LOOPBACK_ONLY"] = "1"  # no test crawl may leave the machine


@functools.lru_cache
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return OmegaConf.to_container(compose("config", list(overrides)), resolve=True)


def compose_params(*overrides: str) -> dict[str, Any]:
    """configs/ composed by Hydra with `overrides`, as `dvc exp run -S` composes params.yaml."""
    return copy.deepcopy(_composed(tuple(overrides)))


def backbone_config(name: str, **values: Any) -> dict[str, Any]:
    """The composed settings of backbone `name` (configs/backbones/<name>.yaml), with `values`."""
    return {**compose_params()["backbones"][name], **values}


def synthetic_image(label: str, size: int, rng: np.random.Generator) -> Image.Image:
    """'real': smooth, upsampled colour noise; 'ai': the same plus a fine checkerboard."""
    coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    if label == "ai":
        checker = (np.indices((size, size)).sum(axis=0) % 2 * 60 - 30)[..., None]
        image = np.clip(image.astype(int) + checker, 0, 255).astype(np.uint8)
    return Image.fromarray(image)


def make_image_folder(folder: Path, per_class: int = 24, size: int = 48, seed: int = 0) -> Path:
    """folder/real and folder/ai with `per_class` PNG images each."""
    rng = np.random.default_rng(seed)
    for label in ("real", "ai"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(label, size, rng).save(folder / label / f"{label}_{i:03d}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it fails."""
    # dvc.yaml's `python` must be this interpreter, as in an activated virtual environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(cwd), "PATH": path}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def set_yaml(path: Path, **values: object) -> None:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    data.update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_project(
    destination: Path,
    source: Path,
    epochs: int = 3,
    backbones: dict[str, int] = SMALL_BACKBONES,
    only: tuple[str, ...] | None = None,
) -> Path:
    """A git + DVC copy of this project whose configs use `source`, random weights, small inputs
    (`backbones`: input sizes), and only the backbones in `only` where it is given."""
    destination.mkdir(parents=True)
    for name in PROJECT_FILES:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, target)
    configs = destination / "configs"
    config = configs / "config.yaml"  # the local spider: tests never reach the web
    lines = config.read_text().replace("- scrape: commons", "- scrape: local").splitlines(True)
    if only is not None:
        lines = [
            line
            for line in lines
            if not (match := re.match(r"\s*- backbones@backbones\.(\w+):", line))
            or match[1] in only
        ]
    config.write_text("".join(lines))
    for name, size in backbones.items():
        set_yaml(configs / "backbones" / f"{name}.yaml", weights=None, input_size=size)
    set_yaml(configs / "scrape" / "local.yaml", source=str(source))
    set_yaml(configs / "head" / "dense.yaml", epochs=epochs, units=32, batch_size=16, patience=2)
    set_yaml(configs / "balance" / "smote.yaml", k_neighbors=3)
    run([sys.executable, "-m", "pipeline", "compose"], destination)
    for command in (
        ["git", "init", "-q"],
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "empty",
        ],
        [sys.executable, "-m", "dvc", "init", "-q", "--force"],
    ):
        run(command, destination)
    shutil.copy(ROOT / ".dvc" / "config", destination / ".dvc" / "config")
    run(["git", "add", "-A"], destination)
    run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project"],
        destination,
    )
    return destination


def make_exported_model(folder: Path, seed: int = 0) -> Path:
    """A small exported model (spectrum features and an untrained head) laid out as export does."""
    import keras

    from pipeline.backbones import extractor_from_spec
    from pipeline.head import build_head
    from pipeline.io import write_json

    keras.utils.set_random_seed(seed)
    extractor = extractor_from_spec(backbone_config("spectrum", input_size=32, bins=8))
    head = build_head(8, units=4, dropout=0.0)
    inputs = keras.Input((32, 32, 3))
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, head(extractor(inputs))).save(folder / "model.keras")
    info = {"backbone": "spectrum", "input_size": 32, "input_mode": "center_crop", "min_size": 32}
    write_json(folder / "model.json", {**info, "threshold": 0.5, "test_metrics": {}})
    return folder


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_model(tmp_path_factory.mktemp("export"))
