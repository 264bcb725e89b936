"""Re-make reports/sample_evaluation/: the whole pipeline on ../shared/data/sample/ with its two
AI sources, random-init frozen backbones and the networks trained on the images, without and
with training-time augmentation, in one throw-away project.

`python reports/sample_evaluation.py` (from the repository root, with ../shared/data/sample)
writes reports/sample_evaluation/{no_augmentation,augmented}/: evaluation.md and its figures,
crossgen/ and each backbone's robustness grid, as the compare stage writes them.
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.project import (  # noqa: E402 - the repository root first, as in a checkout
    SHARED_DATA,
    compose_params,
    make_project,
    run,
    set_yaml,
)

SAMPLE = SHARED_DATA / "sample"
OUT = ROOT / "reports" / "sample_evaluation"
# the slow end-to-end tests' settings (tests/conftest.py: make_project), all at random init
INPUT_SIZES = {"inceptionv3": 75, "vgg16": 32, "spectrum": 32, "npr": 32, "cnn": 32}
HEAD = {"epochs": 10, "units": 32, "batch_size": 16, "patience": 2}
RUNS = {"no_augmentation": 0, "augmented": 2}  # augment.copies


def source_of(row: dict[str, str]) -> str:
    """The sample's source of an image, from DETAILS.csv's subset: two AI sources (CIFAKE's
    Stable Diffusion v1.4, DiffusionDB) and two real ones (CIFAR-10, COCO and ImageNet)."""
    cifake = row["subset"].startswith("CIFAKE")
    if row["label"] == "ai":
        return "cifake-sd14" if cifake else "diffusiondb"
    return "cifar10" if cifake else "coco-imagenet"


def source_csv(folder: Path) -> Path:
    """url,label,source of every sample image: the local spider's CSV input."""
    with open(SAMPLE / "DETAILS.csv", newline="", encoding="utf-8") as details:
        rows = list(csv.DictReader(details))
    table = folder / "sample.csv"
    with open(table, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["url", "label", "source"])
        for row in rows:
            uri = (SAMPLE / row["path"]).resolve().as_uri()
            writer.writerow([uri, row["label"], source_of(row)])
    return table


def settings() -> dict[str, dict]:
    backbones = compose_params()["backbones"]
    values = {}
    for name, size in INPUT_SIZES.items():
        values[f"backbones/{name}"] = {"weights": None, "input_size": size}
        if "training" in backbones[name] and backbones[name]["training"]["mode"] != "frozen":
            values[f"backbones/{name}"]["training"] = backbones[name]["training"]
    return {**values, "head/dense": HEAD, "balance/smote": {"k_neighbors": 3}}


def copy_reports(project: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(project / "reports/evaluation.md", target / "evaluation.md")
    shutil.copytree(project / "reports/evaluation", target / "evaluation")
    shutil.copytree(project / "crossgen", target / "crossgen")
    for name in INPUT_SIZES:
        shutil.copy(project / f"metrics/{name}_robustness.json", target)
        shutil.copy(project / f"metrics/{name}.json", target)
        shutil.copy(
            project / f"models/networks/{name}/metrics.json", target / f"{name}_network.json"
        )


def main() -> None:
    if not SAMPLE.is_dir():
        raise SystemExit(f"{SAMPLE} is absent: this report needs the shared sample")
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project", source_csv(Path(tmp)), settings())
        for name, copies in RUNS.items():
            set_yaml(project / "configs/augment/default.yaml", copies=copies)
            run([sys.executable, "-m", "pipeline", "compose"], project)
            run([sys.executable, "-m", "dvc", "repro"], project, timeout=6 * 3600)
            copy_reports(project, OUT / name)
            print(f"sample evaluation: {OUT / name}", flush=True)


if __name__ == "__main__":
    main()
