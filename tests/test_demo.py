"""The offline demo: the images shipped in demo/ and `dvc exp run -S +experiment=demo`."""

import csv
import hashlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, SHARED_DATA, compose_params
from pipeline.data.images import IMAGE_SUFFIXES, LABELS
from pipeline.models.backbones import EXTRACTORS
from pipeline.stages.scrape import DEMO_COMMAND

DEMO = ROOT / "demo"
MAX_BYTES = 2 * 1024 * 1024  # "a few MB at most" in the repository


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def demo_images() -> list[Path]:
    return sorted(p for p in DEMO.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def test_the_demo_images_are_the_ones_its_manifest_lists():
    with open(DEMO / "MANIFEST.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert sorted(DEMO / row["path"] for row in rows) == demo_images()  # nothing unlisted
    for row in rows:
        path = DEMO / row["path"]
        assert path.parent.name == row["label"] and sha256(path) == row["sha256"], row
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.format == "JPEG"
    assert {label: sum(row["label"] == label for row in rows) for label in LABELS} == {
        "real": 300,
        "ai": 300,
    }
    assert len({row["sha256"] for row in rows}) == len(rows)
    assert sum(path.stat().st_size for path in demo_images()) < MAX_BYTES
    sources = (DEMO / "SOURCES.md").read_text()
    assert "MIT" in sources and "Bird" in sources and "Krizhevsky" in sources


@pytest.mark.skipif(not (SHARED_DATA / "sample").is_dir(), reason="no ../shared/data/sample")
def test_no_demo_image_is_one_of_the_shared_sample_the_tests_use():
    sample = {sha256(p) for p in (SHARED_DATA / "sample").rglob("*") if p.is_file()}
    assert not sample & {sha256(p) for p in demo_images()}


def test_the_demo_needs_no_download_and_reads_the_shipped_images():
    params = compose_params("+experiment=demo")
    assert DEMO_COMMAND == "dvc exp run -S +experiment=demo"
    assert params["scrape"]["spider"] == "local" and ROOT / params["scrape"]["source"] == DEMO
    for name, spec in params["backbones"].items():
        assert spec["weights"] is None, name  # nothing to download: random init, or trained
        assert spec.get("extractor") in EXTRACTORS and spec["extractor"] != "keras_application"
    assert params["backbone"]["name"] in params["backbones"]
