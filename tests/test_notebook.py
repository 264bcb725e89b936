"""notebooks/compare_backbones.ipynb runs against pipeline-shaped outputs, and is stored clean."""

import json

import nbformat
import numpy as np
import pytest
import yaml
from nbclient import NotebookClient
from sklearn.calibration import calibration_curve
from test_compare import fake_results

from conftest import ROOT, committed_files, compose_params
from pipeline.core.paths import EVAL_DIR, plot_file
from pipeline.models.metrics import RELIABILITY_BINS

NOTEBOOK = ROOT / "notebooks" / "compare_backbones.ipynb"


def test_notebook_is_committed_without_outputs(tmp_path):
    """As committed: a person who runs it and saves it keeps a green test suite."""
    committed = committed_files(tmp_path, str(NOTEBOOK.relative_to(ROOT)))
    notebook = nbformat.read(committed / NOTEBOOK.relative_to(ROOT), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow  # starts a Jupyter kernel
def test_notebook_executes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    params = compose_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for seed, name in enumerate(params["backbones"]):
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(fake_results(seed)))
        robustness = {"none": {"images": 9, "skipped": 0, "accuracy": 0.7, "roc_auc": 0.8}}
        (tmp_path / "metrics" / f"{name}_robustness.json").write_text(json.dumps(robustness))
        labels, p = rng.integers(0, 2, 100), rng.uniform(size=100)
        for kind in ("uncalibrated", "calibrated"):
            plot = plot_file(tmp_path / EVAL_DIR, f"reliability_{kind}", name)
            plot.parent.mkdir(parents=True, exist_ok=True)
            prob_true, prob_pred = calibration_curve(labels, p, n_bins=RELIABILITY_BINS)
            rows = [
                {"prob_true": t, "prob_pred": m} for t, m in zip(prob_true, prob_pred, strict=True)
            ]
            plot.write_text(json.dumps({"calibration": rows}))  # as DVCLive writes it
    monkeypatch.setenv("AIIC_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    assert all(name in str(notebook.cells[1].outputs) for name in params["backbones"])
