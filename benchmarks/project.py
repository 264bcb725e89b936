"""Generated images and throw-away git + DVC copies of this project: one builder shared by the
test suite (tests/conftest.py) and the benchmarks."""

from __future__ import annotations

import copy
import functools
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROJECT_FILES = ("dvc.yaml", "configs", "pipeline", "scrapers", "scrapy.cfg")
# Small enough that a CPU runs a backbone in seconds; a keras.applications model that refuses it
# gets the smallest input Keras accepts for it.
SMALL_INPUT_SIZE = 32
SMALLEST_INPUT = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t")  # a throw-away committer


class CommandFailed(RuntimeError):
    """A command exited with a non-zero status; the message carries the end of its output."""


@functools.lru_cache
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return OmegaConf.to_container(compose("config", list(overrides)), resolve=True)


def compose_params(*overrides: str) -> dict[str, Any]:
    """configs/ composed by Hydra with `overrides`, as `dvc exp run -S` composes params.yaml."""
    return copy.deepcopy(_composed(tuple(overrides)))


def random_weights(params: dict[str, Any], small: bool = False) -> dict[str, dict[str, Any]]:
    """Every backbone of `params` with random weights (nothing to download), at its own input
    size or, where `small`, at small_size()."""
    return {
        name: {
            **spec,
            "weights": None,
            "input_size": small_size(spec) if small else spec["input_size"],
        }
        for name, spec in params["backbones"].items()
    }


def random_backbone(backbone: str, size: int | None = None) -> dict[str, Any]:
    """A backbone of the configs with random weights, at its own input size or `size`."""
    spec = random_weights(compose_params())[backbone]
    return {**spec, "input_size": size or spec["input_size"]}


def small_size(spec: dict[str, Any]) -> int:
    """The input size a backbone runs fastest at in tests and quick benchmark runs."""
    smallest = SMALLEST_INPUT.get(spec.get("application"), SMALL_INPUT_SIZE)
    return min(spec["input_size"], max(SMALL_INPUT_SIZE, smallest))


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


def run(
    args: list[str], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with `cwd` first on PYTHONPATH (and the variables `env`);
    CommandFailed with its output when it fails."""
    # dvc.yaml's `python` must be this interpreter, as in an activated virtual environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    variables = {**os.environ, "PYTHONPATH": str(cwd), "PATH": path, **(env or {})}
    result = subprocess.run(
        args, cwd=cwd, env=variables, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(map(str, args))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def set_yaml(path: Path, **values: object) -> None:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    data.update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def commit(project: Path, message: str) -> None:
    """Commit everything in `project`'s work tree."""
    run(["git", "add", "-A"], project)
    run([*GIT, "commit", "-qm", message], project)


def make_project(
    destination: Path,
    source: Path,
    settings: dict[str, dict[str, Any]],
    only: Collection[str] | None = None,
) -> Path:
    """A git + DVC copy of this project that scrapes the folder `source` with the local spider.

    `settings`: values per config file, by its path in configs/ without `.yaml` (for example
    `{"head/dense": {"epochs": 3}}`): they go into configs/, since `dvc exp run` composes
    params.yaml from there afresh. Where `only` is given, the other backbones leave the
    defaults list.
    """
    destination.mkdir(parents=True)
    for name in PROJECT_FILES:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, target)
    configs = destination / "configs"
    config = configs / "config.yaml"  # the local spider: a copy never crawls the web
    lines = config.read_text().replace("- scrape: commons", "- scrape: local").splitlines(True)
    if only is not None:
        backbone = re.compile(r"\s*- backbones@backbones\.(\w+):")
        lines = [line for line in lines if not (match := backbone.match(line)) or match[1] in only]
    config.write_text("".join(lines))
    for name, values in {**settings, "scrape/local": {"source": str(source)}}.items():
        set_yaml(configs / f"{name}.yaml", **values)
    run([sys.executable, "-m", "pipeline", "compose"], destination)
    run(["git", "init", "-q"], destination)
    run([*GIT, "commit", "-q", "--allow-empty", "-m", "empty"], destination)
    run([sys.executable, "-m", "dvc", "init", "-q", "--force"], destination)
    (destination / ".dvc" / "config").write_bytes(committed(".dvc/config"))
    commit(destination, "project")
    return destination


def committed(name: str) -> bytes:
    """A file of this repository as committed (HEAD), or as it is outside a git checkout: the
    documented commands change some in the work tree (`dvc remote add -d` writes .dvc/config), and
    a copy of the project must not inherit a person's remote."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, check=False
        )
    except FileNotFoundError:  # no git on this machine
        return (ROOT / name).read_bytes()
    return shown.stdout if shown.returncode == 0 else (ROOT / name).read_bytes()


def committed_files(destination: Path, *names: str) -> Path:
    """Files and folders of this repository as committed (HEAD), extracted under `destination`.

    The commands the README and docs/ document rewrite the work tree (`dvc exp run -S` and
    `aiic compose` write params.yaml; `dvc repro` writes dvc.lock and outputs), so that a test of
    what is committed reads HEAD, never the work tree. Outside a git checkout, the files as they
    are."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", "--", *names],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:  # no git on this machine
        archive = None
    if archive is not None and archive.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(destination, filter="data")
        return destination
    for name in names:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / name, destination / name)
    return destination
