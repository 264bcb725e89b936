"""notebooks/compare_backbones.ipynb runs against pipeline-shaped outputs, and is stored clean."""

import json

import nbformat
import numpy as np
from nbclient import NotebookClient
from test_compare import fake_results

from conftest import ROOT
from pipeline.metrics import reliability_rows

NOTEBOOK = ROOT / "notebooks" / "compare_backbones.ipynb"


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_notebook_executes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for seed, name in enumerate(("inceptionv3", "spectrum")):
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(fake_results(seed)))
        robustness = {"none": {"images": 9, "skipped": 0, "accuracy": 0.7, "roc_auc": 0.8}}
        (tmp_path / "metrics" / f"{name}_robustness.json").write_text(json.dumps(robustness))
        plots = tmp_path / "eval" / name / "plots"
        plots.mkdir(parents=True)
        labels, p = rng.integers(0, 2, 100), rng.uniform(size=100)
        for kind in ("uncalibrated", "calibrated"):
            rows = reliability_rows(labels, p)
            (plots / f"reliability_{kind}.json").write_text(json.dumps(rows))
    monkeypatch.setenv("AIIC_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    assert "inceptionv3" in str(notebook.cells[1].outputs)
