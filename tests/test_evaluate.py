"""The evaluate stage: metrics and plot data from the train stage's scores, without TensorFlow."""

import json

import numpy as np
import pandas as pd
import yaml

from conftest import ROOT, compose_params
from pipeline import evaluate, paths


def write_scores(root, name, seed):
    rng = np.random.default_rng(seed)
    labels = np.tile(["ai", "real"], 20)
    p_real = np.clip((labels == "real") * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    scores = pd.DataFrame({"id": [f"{name}{i}" for i in range(40)], "label": labels})
    scores = scores.assign(p_raw=p_real**2, p_real=p_real, p_real_jpeg_50=p_real[::-1])
    (root / paths.SCORES_DIR).mkdir(parents=True, exist_ok=True)
    scores.to_csv(root / paths.scores_file(name), index=False)
    (root / paths.HEADS_DIR / name).mkdir(parents=True)
    record = {"method": "temperature", "fitted_on": "val", "threshold": 0.4}
    (root / paths.HEADS_DIR / name / paths.CALIBRATION_FILE).write_text(json.dumps(record))
    return scores


def test_every_backbone_gets_metrics_and_every_declared_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = compose_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    splits = []
    for seed, name in enumerate(params["backbones"]):
        scores = write_scores(tmp_path, name, seed)
        splits.append(scores[["id", "label"]].assign(source_name="s", format="PNG", width=64))
    paths.SPLITS.parent.mkdir(parents=True)
    pd.concat(splits).assign(height=64).to_csv(paths.SPLITS, index=False)
    monkeypatch.setattr("sys.argv", ["evaluate"])
    evaluate.main()

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
                assert json.loads((tmp_path / folder / f"{name}.json").read_text()), folder
    written = {str(folder.relative_to(tmp_path)) for folder in (tmp_path / "eval").iterdir()}
    assert written == set(declared) - {str(paths.HISTORY_DIR), str(paths.CROSSGEN_HEATMAP_DIR)}
