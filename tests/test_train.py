"""The train stage: every backbone's head in one process, calibrated on validation, test scored."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import logit

from conftest import compose_params, strict_json_files
from pipeline.core import paths
from pipeline.models.calibrate import Calibration, apply_calibration, uncalibrated
from pipeline.models.head import head_logits
from pipeline.models.runtime import load_features
from pipeline.stages import train

pytestmark = pytest.mark.backend  # also run on JAX in CI (tests/test_backends.py)

SPLITS = np.repeat(["train", "val", "test"], [20, 12, 10])
LABELS = np.tile(["ai", "real"], 21)


def write_params(root, backbones):
    """The project's composed params, with these (feature-less) backbones and a tiny head."""
    params = compose_params(
        "head.units=4",
        "head.dropout=0.2",
        "head.learning_rate=0.01",
        "head.epochs=3",
        "head.batch_size=8",
        "head.patience=2",
        "seed=0",
    )
    params["backbones"] = {
        name: {"name": name, "input_size": 32, "batch_size": 8} for name in backbones
    }
    params["backbone"] = {"name": backbones[0]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def write_backbone(root, name, width, seed):
    """One backbone's inputs as the features, balance and robustness stages lay them out; its
    perturbed test features are the unperturbed ones in reverse order, with one image lost."""
    features = np.random.default_rng(seed).normal(size=(42, width)).astype(np.float32)
    (root / "data/features" / name).mkdir(parents=True)
    np.save(root / "data/features" / name / "features.npy", features)
    pd.DataFrame({"id": range(42), "label": LABELS, "split": SPLITS, "ok": True}).to_csv(
        root / "data/features" / name / "index.csv", index=False
    )
    (root / "data/balanced" / name).mkdir(parents=True)
    np.savez(
        root / "data/balanced" / name / "train.npz",
        features=features[:20],
        labels=(LABELS[:20] == "real").astype(int),
    )
    perturbed = features[32:][::-1].copy()
    perturbed[0] = np.nan  # id 41
    (root / "data/robustness" / name).mkdir(parents=True)
    np.savez(
        root / "data/robustness" / name / "features.npz",
        ids=np.arange(32, 42)[::-1].astype(str),
        blur=perturbed,
    )


def test_the_train_stage_calibrates_on_validation_and_scores_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, ["bb", "cc"])
    write_backbone(tmp_path, "bb", 6, seed=0)
    write_backbone(tmp_path, "cc", 6, seed=1)
    requested = []

    def recording_load_features(backbone_dir, split):
        requested.append(split)
        return load_features(backbone_dir, split)

    monkeypatch.setattr(train, "load_features", recording_load_features)
    monkeypatch.setattr("sys.argv", ["train"])
    train.main()
    assert "train" not in requested  # the balanced train set comes from its own file
    fitted = json.loads((tmp_path / "models/heads/bb/calibration.json").read_text())
    assert fitted["fitted_on"] == "val" and fitted["val_images"] == 12
    assert fitted["method"] == "temperature" and fitted["parameters"]["temperature"] > 0
    assert (tmp_path / "models/heads/bb/head.weights.h5").is_file()
    written = {path.relative_to(tmp_path).as_posix() for path in strict_json_files(tmp_path)}
    assert {"models/heads/bb/calibration.json", "models/heads/history/metrics.json"} <= written
    # each backbone's curves through DVCLive, from step 0, though one Live logs them all
    for name in ("bb", "cc"):
        for split in ("train", "eval"):
            curves = paths.curves_folder(tmp_path / paths.HISTORY_DIR) / name / split
            loss = pd.read_csv(curves / "loss.tsv", sep="\t")
            assert loss["step"].tolist() == list(range(len(loss))) and len(loss) > 1

    scores = pd.read_csv(tmp_path / "data/scores/bb.csv")
    assert scores["id"].tolist() == list(range(32, 42))
    assert list(scores.columns) == ["id", "label", "p_raw", "p_real", "p_real_blur"]
    calibration = Calibration(fitted["method"], fitted["parameters"])
    np.testing.assert_allclose(
        scores["p_real"],
        apply_calibration(calibration, logit(scores["p_raw"].to_numpy())),
        atol=1e-6,
    )
    # the "blur" rows are the unperturbed features, so their p-scores are the same
    np.testing.assert_allclose(scores["p_real_blur"][:9], scores["p_real"][:9], atol=1e-6)
    assert np.isnan(scores["p_real_blur"][9])  # id 41: no features, no score


def test_a_head_trains_alike_alone_or_after_another_backbone(tmp_path, monkeypatch):
    """One process trains every head, so a head must not depend on those trained before it:
    adding or removing a backbone leaves the others' results as they were."""
    monkeypatch.setattr("sys.argv", ["train"])
    for run, backbones in (("alone", ["bb"]), ("after", ["aa", "bb"])):
        root = tmp_path / run
        root.mkdir()
        monkeypatch.chdir(root)
        write_params(root, backbones)
        for name in backbones:
            write_backbone(root, name, {"aa": 3, "bb": 6}[name], seed=len(name) + ord(name[0]))
        train.main()
    alone, after = (tmp_path / run / "data/scores/bb.csv" for run in ("alone", "after"))
    assert alone.read_bytes() == after.read_bytes()


def test_class_weights_in_the_loss_undo_the_majoritys_pull():
    """On features that carry no information, an unweighted head leans to the majority class;
    weighted by class, the two classes pull alike."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8)).astype(np.float32)
    labels = (np.arange(200) >= 40).astype(np.int64)  # 40 ai, 160 real
    head = {
        "units": 4,
        "dropout": 0.0,
        "learning_rate": 0.01,
        "epochs": 15,
        "batch_size": 50,
        "patience": 15,
    }
    validation = (features[::10], labels[::10])
    plain = train.train_head((features, labels), validation, head, seed=0)
    weights = np.array([2.5, 0.625], np.float32)
    weighted = train.train_head((features, labels), validation, head, seed=0, class_weight=weights)
    assert uncalibrated(head_logits(plain, features)).mean() > 0.7
    assert 0.35 < uncalibrated(head_logits(weighted, features)).mean() < 0.65
