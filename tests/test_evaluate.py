"""The evaluate stage: metrics and plot data from the train stage's scores, without TensorFlow."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import auc, roc_auc_score

from conftest import ROOT, compose_params, strict_json_files
from pipeline.core import paths
from pipeline.models.metrics import plot_rows, reliability_rows
from pipeline.stages import evaluate


def write_scores(root, name, seed):
    rng = np.random.default_rng(seed)
    labels = np.tile(["ai", "real"], 20)
    p_real = np.clip((labels == "real") * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    p_real[:5] = [0.2, 1 / 3, 0.4, 0.6, 0.8]  # on bin edges, as isotonic calibration outputs them
    scores = pd.DataFrame({"id": [f"{name}{i}" for i in range(40)], "label": labels})
    scores = scores.assign(p_raw=p_real**2, p_real=p_real, p_real_jpeg_50=p_real[::-1])
    (root / paths.SCORES_DIR).mkdir(parents=True, exist_ok=True)
    scores.to_csv(root / paths.scores_file(name), index=False)
    (root / paths.HEADS_DIR / name).mkdir(parents=True)
    record = {"method": "temperature", "fitted_on": "val", "threshold": 0.4}
    (root / paths.HEADS_DIR / name / paths.CALIBRATION_FILE).write_text(json.dumps(record))
    write_deletion_curves(root / paths.explanations_dir(name), rng)
    write_blends(root / paths.blends_dir(name), rng)
    return scores


def write_deletion_curves(folder, rng, images=6, steps=4):
    """Made-up deletion curves as the explain stage writes them: the map's order falls faster."""
    covered = np.linspace(0, 1, steps + 1)
    folder.mkdir(parents=True)
    np.savez(
        folder / paths.DELETION_FILE,
        covered=covered,
        map_curves=np.clip(0.9 - covered[None] * rng.uniform(0.6, 0.8, (images, 1)), 0, 1),
        random_curves=np.clip(
            0.9 - covered[None, None] * rng.uniform(0.1, 0.3, (images, 2, 1)), 0, 1
        ),
    )


def write_blends(folder, rng, fractions=(0, 0.5, 1), pairs=4, grid=3):
    """Made-up composites and maps as the blend stage writes them: P(real) falls with the AI
    fraction, and every map's most-AI cell is in the AI region."""
    rows = pd.DataFrame(
        [
            {
                "direction": direction,
                "mask": kind,
                "fraction": fraction,
                "ai_fraction": fraction,
                "pair": pair,
                "p_real": 0.95 - 0.9 * fraction + rng.uniform(-0.02, 0.02),
            }
            for direction in paths.BLEND_DIRECTIONS
            for kind in paths.BLEND_MASKS
            for fraction in fractions
            for pair in range(pairs)
        ]
    )
    folder.mkdir(parents=True)
    rows.to_csv(folder / paths.COMPOSITES_FILE, index_label="composite")
    mapped = rows.index[rows["fraction"] == 0.5].to_numpy()
    ai_share = np.zeros((len(mapped), grid, grid))
    ai_share[:, 0, :2] = 1  # two AI cells in each composite
    maps = rng.uniform(0, 0.1, (len(mapped), grid, grid))
    maps[:, 0, 1] = -0.5
    np.savez(
        folder / paths.BLEND_MAPS_FILE,
        composites=mapped,
        p_real=rows["p_real"].to_numpy()[mapped],
        maps=maps,
        ai_share=ai_share,
    )


def run_evaluate(root, monkeypatch):
    """The evaluate stage over made-up scores of every backbone of the composed params."""
    monkeypatch.chdir(root)
    params = compose_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    scores = {name: write_scores(root, name, seed) for seed, name in enumerate(params["backbones"])}
    paths.SPLITS.parent.mkdir(parents=True)
    splits = pd.concat(frame[["id", "label"]] for frame in scores.values())
    splits = splits.assign(source_name="s", format="PNG", width=64, height=64)
    splits.to_csv(paths.SPLITS, index=False)
    monkeypatch.setattr("sys.argv", ["evaluate"])
    evaluate.main()
    return params, scores


def test_every_backbone_gets_metrics_and_every_declared_plot(tmp_path, monkeypatch):
    params, _ = run_evaluate(tmp_path, monkeypatch)
    declared = [
        next(iter(plot)) for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    ]
    for name in params["backbones"]:
        metrics = json.loads(paths.metrics_file(name).read_text())
        assert metrics["images"] == 40 and metrics["threshold"] == 0.4
        robustness = json.loads(paths.metrics_file(name, "robustness").read_text())
        assert set(robustness) == {"none", "jpeg_50"}
        for folder in declared:
            if not folder.startswith((str(paths.HISTORY_DIR), str(paths.CROSSGEN_DIR))):
                assert plot_rows(tmp_path / folder / f"{name}.json"), folder
    written = {str(folder.relative_to(tmp_path)) for folder in tmp_path.glob("eval/plots/*/*")}
    elsewhere = {str(paths.curves_folder(paths.HISTORY_DIR)), str(paths.CROSSGEN_HEATMAP_DIR)}
    assert written == set(declared) - elsewhere


def test_the_plots_trace_what_the_metrics_summarise(tmp_path, monkeypatch):
    params, scores_by_backbone = run_evaluate(tmp_path, monkeypatch)
    name = next(iter(params["backbones"]))
    scores = scores_by_backbone[name]
    metrics = json.loads(paths.metrics_file(name).read_text())
    labels = (scores["label"] == "real").to_numpy(dtype=int)
    roc = plot_rows(paths.plot_file(paths.EVAL_DIR, "roc", name))
    area = auc([row["fpr"] for row in roc], [row["tpr"] for row in roc])
    assert (
        area
        == pytest.approx(metrics["roc_auc"])
        == pytest.approx(roc_auc_score(labels, scores["p_real"]))
    )
    pairs = [
        (row["actual"], row["predicted"])
        for row in plot_rows(paths.plot_file(paths.EVAL_DIR, "confusion_matrix", name))
    ]
    matrix = metrics["confusion_matrix"]["matrix"]
    assert [[pairs.count((a, p)) for p in ("ai", "real")] for a in ("ai", "real")] == matrix
    # the reliability diagram's bins are those of the ECE, scores on the edges included
    diagram = plot_rows(paths.plot_file(paths.EVAL_DIR, "reliability_calibrated", name))
    bins = reliability_rows(labels, scores["p_real"].to_numpy())
    assert [row["prob_pred"] for row in diagram] == pytest.approx([b["mean_score"] for b in bins])
    assert [row["prob_true"] for row in diagram] == pytest.approx(
        [b["observed_real_rate"] for b in bins]
    )
    robustness = plot_rows(paths.plot_file(paths.EVAL_DIR, "robustness_auc", name))
    assert [row["perturbation"] for row in robustness] == ["none", "jpeg_50"]


def test_every_json_it_writes_is_strict(tmp_path, monkeypatch):
    params, _ = run_evaluate(tmp_path, monkeypatch)
    written = strict_json_files(tmp_path)  # DVCLive's files and the metrics alike
    for name in params["backbones"]:
        assert paths.metrics_file(name).resolve() in written
        roc = plot_rows(paths.plot_file(paths.EVAL_DIR, "roc", name))
        assert roc[0]["threshold"] is None  # scikit-learn's inf: no score reaches it
        assert all(row["threshold"] is not None for row in roc[1:])


def test_faithfulness_metrics_and_the_deletion_plot_come_from_the_explain_stages_curves(
    tmp_path, monkeypatch
):
    params, _ = run_evaluate(tmp_path, monkeypatch)
    for name in params["backbones"]:
        with np.load(paths.explanations_dir(name) / paths.DELETION_FILE) as stored:
            by_map, by_chance = stored["map_curves"], stored["random_curves"]
        results = json.loads(paths.metrics_file(name, "faithfulness").read_text())
        assert results["images"] == 6 and results["random_orders"] == 2
        assert results["map_auc"] == pytest.approx(np.trapezoid(by_map, dx=0.25).mean())
        assert results["random_auc"] == pytest.approx(np.trapezoid(by_chance, dx=0.25).mean())
        assert results["verdict"] == "better than random" and results["better_than_random"]
        rows = plot_rows(paths.plot_file(paths.EVAL_DIR, paths.DELETION_PLOT, name))
        assert [row["covered"] for row in rows] == [0, 0.25, 0.5, 0.75, 1]
        assert [row["random"] for row in rows] == pytest.approx(by_chance.mean(axis=(0, 1)))


def test_blend_metrics_and_the_blend_plot_come_from_the_blend_stages_composites(
    tmp_path, monkeypatch
):
    params, _ = run_evaluate(tmp_path, monkeypatch)
    columns = {f"{d}_{m}" for d in paths.BLEND_DIRECTIONS for m in paths.BLEND_MASKS}
    for name in params["backbones"]:
        composites = pd.read_csv(paths.blends_dir(name) / paths.COMPOSITES_FILE)
        results = json.loads(paths.metrics_file(name, "blend").read_text())
        assert results["threshold"] == 0.4 and results["composites"] == len(composites) == 48
        curve = results["curves"]["ai_in_real"]["soft"]
        assert [point["fraction"] for point in curve["points"]] == [0, 0.5, 1]
        assert curve["spearman_rho"] < -0.8 and curve["flip_fraction"] == 1
        maps = results["maps"]
        assert maps["all"]["composites"] == 16 and maps["all"]["pointing_game"] == 1
        assert maps["ai_in_real"]["composites"] == maps["real_in_ai"]["composites"] == 8
        assert maps["all"]["verdict"] == "better than random"
        rows = plot_rows(paths.plot_file(paths.EVAL_DIR, paths.BLEND_PLOT, name))
        assert [row["ai_fraction"] for row in rows] == [0, 0.5, 1]
        assert set(rows[0]) == {"ai_fraction", *columns}
        assert rows[1]["ai_in_real_soft"] == pytest.approx(curve["points"][1]["p_real"])
