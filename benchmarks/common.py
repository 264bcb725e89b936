"""What every benchmark shares: the run's settings (`Context`), its images, and timing."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.project import SHARED_DATA, make_image_folder
from pipeline.data.images import LABELS

SAMPLE = SHARED_DATA / "sample"
CIFAKE = SHARED_DATA / "cifake"
GOLDEN_RATIO = (5**0.5 - 1) / 2
GENERATED_SIZE = 256  # px: resized for the neural backbones, cropped by the spectrum


@dataclass
class Context:
    """One run's settings: params composed from configs/, its backbones (random weights, at
    their own input sizes, or small ones in a quick run), the images and a scratch folder."""

    quick: bool
    params: dict[str, Any]
    backbones: dict[str, dict[str, Any]]
    paths: list[str]
    work: Path
    dvc_images: int

    @property
    def exported(self) -> dict[str, Any]:
        """The spec of the backbone the pipeline exports (params' `backbone`)."""
        return self.backbones[self.params["backbone"]["name"]]

    def head(self, **values: Any) -> dict[str, Any]:
        """params' head settings, with `values`."""
        return {**self.params["head"], **values}


def in_fresh_process(module: str, call: str, timeout: float) -> Any:
    """The JSON that `module`.`call` (a Python expression on the module's names) returns, run in a
    fresh interpreter from the repository root, so that its peak memory is its own;
    subprocess.TimeoutExpired past `timeout` seconds."""
    code = f"import json; from {module} import *; print(json.dumps({call}))"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def generated_folder(work: Path, count: int) -> Path:
    """real/ and ai/ with `count` generated images in all (the test suite's images), in `work`."""
    folder = work / f"generated-{count}"
    if not folder.is_dir():
        make_image_folder(folder, per_class=(count + 1) // 2, size=GENERATED_SIZE)
    return folder


def spread(files: list[Path]) -> list[Path]:
    """`files` reordered so that every prefix samples the whole list evenly: file i goes by the
    fractional part of i times the golden ratio (a low-discrepancy sequence)."""
    return [files[i] for i in sorted(range(len(files)), key=lambda i: i * GOLDEN_RATIO % 1)]


def image_paths(count: int, work: Path) -> list[str]:
    """`count` image files, the shared sample's, else generated ones: the labels in turn, each
    label's files spread over its sorted list, so that even a few images hold both labels and
    each of the sample's sources (32 px CIFAKE and larger images) in proportion."""
    folder = SAMPLE if SAMPLE.is_dir() else generated_folder(work, count)
    labels = [spread(sorted((folder / label).iterdir())) for label in LABELS]
    files = [p for pair in zip_longest(*labels) for p in pair if p]
    return [str(p) for p in (files * (count // len(files) + 1))[:count]]


def label_of(path: str) -> str:
    """An image's label: the name of its folder (one of pipeline.data.images.LABELS)."""
    return Path(path).parent.name


def labelled_source(count: int, folder: Path, work: Path) -> Path:
    """A local-spider source folder (real/, ai/) of `count` images, half of each label: the
    shared sample's, topped up with CIFAKE images that are not in the sample, else generated."""
    if not SAMPLE.is_dir():
        return generated_folder(work, count)
    for label in LABELS:
        files = sorted((SAMPLE / label).glob("*.jpg"))
        names = {p.name for p in files}
        if (CIFAKE / label).is_dir():
            files += [p for p in sorted((CIFAKE / label).glob("*.jpg")) if p.name not in names]
        (folder / label).mkdir(parents=True, exist_ok=True)
        for path in files[: count // 2]:
            shutil.copy(path, folder / label / path.name)
    return folder


def run_batches(forward: Callable[[np.ndarray], Any], arrays: np.ndarray, batch: int) -> np.ndarray:
    """The compiled forward pass over arrays already decoded, batch by batch."""
    return np.concatenate(
        [forward(arrays[start : start + batch]) for start in range(0, len(arrays), batch)]
    )


def consume(forward: Callable[[np.ndarray], Any], batches: Iterable[np.ndarray]) -> None:
    for images in batches:
        forward(images)


def machine() -> dict[str, Any]:
    import keras

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", info)
    flags = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split()) if info else set()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "flags": [flag for flag in wanted if flag in flags],
        "keras": f"{keras.__version__} on {keras.backend.backend()}",
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
