"""pipeline.core.tracking: DVCLive's logger as the stages open it."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import strict_json, strict_json_files
from pipeline.core.tracking import NoCommit, open_live


def test_a_project_without_a_commit_gets_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True)
    with pytest.raises(NoCommit, match="git commit"):
        open_live(tmp_path / "eval")


def test_outside_a_project_it_logs_into_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_live(tmp_path / "eval") as live:
        live.log_plot("grid/a", [{"x": 1, "y": 2}], x="x", y="y")
    assert (tmp_path / "eval/plots/custom/grid/a.json").is_file()
    assert not (tmp_path / "dvc.yaml").exists()  # DVCLive's own section stays off


def test_its_json_files_are_strict_when_it_ends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_live(tmp_path / "eval") as live:
        live.log_metric("bb/eval/loss", 0.5)
        live.log_sklearn_plot("roc", [0, 1, 1], [0.2, 0.9, 0.6], name="roc/bb")
    written = strict_json_files(tmp_path / "eval")
    assert strict_json(tmp_path / "eval/metrics.json")["bb"]["eval"]["loss"] == 0.5
    roc = strict_json(tmp_path / "eval/plots/sklearn/roc/bb.json")["roc"]
    assert roc[0]["threshold"] is None and roc[1]["threshold"] == 0.9
    assert len(written) == 2


def test_the_plot_folders_named_in_paths_are_dvclives():
    from dvclive.plots import CustomPlot, Metric
    from dvclive.plots.sklearn import SKLearnPlot

    from pipeline.core import paths

    assert Path("plots") / SKLearnPlot.subfolder == paths.SKLEARN_PLOTS
    assert Path("plots") / CustomPlot.subfolder == paths.CUSTOM_PLOTS
    assert Path("plots") / Metric.subfolder == paths.METRIC_PLOTS
