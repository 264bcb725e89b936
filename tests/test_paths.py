"""dvc.yaml and pipeline.paths name the same files: what DVC tracks is what the code writes."""

from pathlib import Path

from dvc.repo import Repo

from conftest import ROOT, compose_params
from pipeline import paths
from pipeline.prepare import REPORT as PREPARE_REPORT
from pipeline.scrape import RAW_DIR
from pipeline.scrape import REPORT as SCRAPE_REPORT


def named_paths(backbones: list[str], exported: str) -> set[Path]:
    """Every path a stage writes or reads, built from pipeline.paths alone."""
    named = {
        RAW_DIR,
        SCRAPE_REPORT,
        PREPARE_REPORT,
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
        }
    return named


def test_every_output_and_data_dependency_in_dvc_yaml_is_named_in_pipeline_paths():
    params = compose_params()
    named = named_paths(list(params["backbones"]), params["backbone"]["name"])
    with Repo(str(ROOT)) as repo:
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


def test_top_level_metrics_and_plots_are_the_folders_the_code_writes():
    with Repo(str(ROOT)) as repo:
        (metrics,) = repo.index._metrics.values()
        (plots,) = repo.index._plots.values()
    assert [Path(path) for path in metrics] == [paths.METRICS_DIR]
    folders = {Path(next(iter(plot))) for plot in plots}
    assert {paths.HISTORY_DIR, paths.CROSSGEN_HEATMAP_DIR} <= folders
    written_elsewhere = {paths.HISTORY_DIR, paths.CROSSGEN_HEATMAP_DIR}
    assert {folder.parent for folder in folders - written_elsewhere} == {paths.EVAL_DIR}
