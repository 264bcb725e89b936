"""6. Scrape: the stage's rate reading a local folder with the local spider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Context, label_of, timed
from benchmarks.project import ROOT, compose_params

NAME = "scrape"


def measure(context: Context) -> dict[str, Any]:
    """Items/s of `python -m pipeline scrape` with params' local-spider settings."""
    from pipeline.stages.params import PARAMS_FILE
    from pipeline.stages.scrape import REPORT

    work = context.work / "scrape"
    source = work / "source"
    for i, path in enumerate(context.paths):
        folder = source / label_of(path)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{i}{Path(path).suffix}")
    scrape = {**compose_params("scrape=local")["scrape"], "source": str(source)}
    (work / PARAMS_FILE).write_text(yaml.safe_dump({"scrape": scrape}))
    seconds, _ = timed(
        subprocess.run,
        [sys.executable, "-m", "pipeline", "scrape"],
        cwd=work,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report = json.loads((work / REPORT).read_text())
    return {
        "items": report["stored"],
        "stage_s": round(seconds, 2),
        "crawl_items_per_s": round(report["stored"] / report["elapsed_s"], 1),
    }


def render(result: dict[str, Any]) -> list[str]:
    return [
        "## 6. Scrape",
        f"The local-folder spider stored {result['items']} images at "
        f"**{result['crawl_items_per_s']} items/s** (whole stage, with start-up: "
        f"{result['stage_s']} s). The web spiders' rate against the fake MediaWiki API is printed "
        "by `pytest -m slow -k scale -s`.",
    ]
