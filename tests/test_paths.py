"""dvc.yaml and pipeline.core.paths name the same files: what DVC tracks is what the code writes."""

import shutil
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from benchmarks.project import committed
from conftest import ROOT, compose_params
from pipeline.core import paths


@pytest.fixture
def repo(tmp_path):
    """DVC's own reading of dvc.yaml, in a copy: opening a repository writes into .dvc/tmp. Its
    params.yaml is composed from configs/, as the tests' params are, not the work tree's own."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_bytes(committed(".dvc/config"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(compose_params()))
    with (tmp_path / ".dvc/config").open("a") as config:
        config.write("    no_scm = true\n")
    with Repo(str(tmp_path)) as opened:
        yield opened


def named_paths(backbones: list[str], exported: str) -> set[Path]:
    """Every path a stage writes or reads, built from pipeline.core.paths alone."""
    named = {
        paths.RAW_DIR,
        paths.SCRAPE_REPORT,
        paths.PREPARE_REPORT,
        paths.DATASET_CARD,
        paths.SPLITS,
        paths.SPLITS.parent,
        paths.CONFOUNDS,
        paths.FEATURES_DIR,
        paths.BALANCED_DIR,
        paths.ROBUSTNESS_DIR,
        paths.HEADS_DIR,
        paths.SCORES_DIR,
        paths.METRICS_DIR,
        paths.EVAL_DIR,
        paths.COMPARISON_REPORT,
        paths.EVALUATION_REPORT,
        paths.EVALUATION_FIGURES_DIR,
        paths.CROSSGEN_DIR,
        paths.EXPLANATIONS_DIR,
        paths.BLENDS_DIR,
        paths.EXPORT_DIR,
        paths.HEADS_DIR / exported,
        paths.metrics_file(exported),
        paths.scores_file(exported),
    }
    for name in backbones:
        named |= {
            paths.features_dir(name),
            paths.features_dir(name) / paths.BACKBONE_WEIGHTS_FILE,
            paths.balanced_file(name).parent,
            paths.BALANCE_REPORTS_DIR / f"{name}.json",
            paths.robustness_file(name).parent,
            paths.network_dir(name) / paths.NETWORK_RECORD_FILE,
            paths.curves_folder(paths.network_dir(name)),
        }
    return named


def test_every_output_and_data_dependency_in_dvc_yaml_is_named_in_pipeline_paths(repo):
    params = compose_params()
    named = named_paths(list(params["backbones"]), params["backbone"]["name"])
    stages = list(repo.index.stages)
    tracked = set()
    for stage in stages:
        tracked |= {Path(str(out.def_path)) for out in stage.outs}
        tracked |= {
            Path(str(dep.def_path))
            for dep in stage.deps
            if not str(dep.def_path).startswith(("pipeline", "scrapers", "params.yaml"))
        }
    assert tracked - named == set()
    assert {Path(str(out.def_path)) for stage in stages for out in stage.outs} >= {
        paths.features_dir(name) for name in params["backbones"]
    }


def test_top_level_metrics_and_plots_are_the_folders_the_code_writes(repo):
    (metrics,) = repo.index._metrics.values()
    (plots,) = repo.index._plots.values()
    assert [Path(path) for path in metrics] == [paths.METRICS_DIR]
    folders = {Path(next(iter(plot))) for plot in plots}
    curves = paths.curves_folder(paths.HISTORY_DIR)
    assert {curves, paths.CROSSGEN_HEATMAP_DIR} <= folders
    evaluate_plots = folders - {curves, paths.CROSSGEN_HEATMAP_DIR}
    assert evaluate_plots == {
        paths.plot_file(paths.EVAL_DIR, plot, "any").parent
        for plot in (
            *paths.SKLEARN_PLOT_KINDS,
            *paths.CUSTOM_PLOT_KINDS,
            paths.DELETION_PLOT,
            paths.BLEND_PLOT,
        )
    }


def test_the_blend_plot_draws_every_direction_and_mask():
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    folder = str(paths.plot_file(paths.EVAL_DIR, paths.BLEND_PLOT, "any").parent)
    (config,) = [plot[folder] for plot in declared if folder in plot]
    assert config["y"] == [f"{d}_{m}" for d in paths.BLEND_DIRECTIONS for m in paths.BLEND_MASKS]
