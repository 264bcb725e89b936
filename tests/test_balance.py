import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import compose_params, strict_json
from pipeline.core.errors import ConfigError
from pipeline.data.oversample import balance, class_weights
from pipeline.stages import balance as balance_stage


def imbalanced(n_real=40, n_ai=10, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    features = np.concatenate([rng.normal(0, 1, (n_ai, dim)), rng.normal(3, 1, (n_real, dim))])
    labels = np.array([0] * n_ai + [1] * n_real)
    return features.astype(np.float32), labels


def test_smote_balances_and_keeps_every_original_row():
    features, labels = imbalanced()
    balanced, balanced_labels = balance(features, labels, "smote", seed=1, k_neighbors=3)
    assert np.bincount(balanced_labels).tolist() == [40, 40]
    assert np.array_equal(balanced[: len(features)], features)


def test_none_returns_the_input_and_bad_settings_are_explained():
    features, labels = imbalanced()
    assert balance(features, labels, "none", seed=1)[0] is features
    with pytest.raises(ValueError, match="k_neighbors=10"):
        balance(features, labels, "smote", seed=1, k_neighbors=10)
    allowed = "allowed values: 'smote', 'class_weight', 'none'"
    with pytest.raises(ConfigError, match=f"method is 'adasyn'; {allowed}"):
        balance(features, labels, "adasyn", seed=1)


def test_stage_oversamples_train_only(tmp_path, monkeypatch):
    """Validation and test rows never reach SMOTE: none of them is in the balanced set."""
    monkeypatch.chdir(tmp_path)
    features, labels = imbalanced(n_real=60, n_ai=30)
    split = np.array((["train"] * 4 + ["val", "test"]) * 15)
    folder = tmp_path / "data/features/bb"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", features)
    pd.DataFrame(
        {"id": range(90), "label": np.array(["ai", "real"])[labels], "split": split, "ok": True}
    ).to_csv(folder / "index.csv", index=False)
    params = compose_params("balance=smote", "balance.k_neighbors=3", "seed=0")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("sys.argv", ["balance", "bb"])
    balance_stage.main()

    result = np.load(tmp_path / "data/balanced/bb/train.npz")
    train = features[split == "train"]
    assert np.array_equal(result["features"][: len(train)], train)
    held_out = features[split != "train"]
    distances = np.abs(result["features"][:, None, :] - held_out[None, :, :]).sum(axis=2)
    assert distances.min() > 0
    report = strict_json(tmp_path / "reports/balance/bb.json")
    assert report["before"] == {"ai": 20, "real": 40} and report["after"] == {"ai": 40, "real": 40}


def test_stage_adds_the_augmented_training_copies_before_smote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features, labels = imbalanced(n_real=40, n_ai=20)
    folder = tmp_path / "data/features/bb"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", features)
    pd.DataFrame(
        {"id": range(60), "label": np.array(["ai", "real"])[labels], "split": "train", "ok": True}
    ).to_csv(folder / "index.csv", index=False)
    copies = features[labels == 0][:5] + 100  # recognisable rows
    np.savez(folder / "augmented.npz", features=copies, labels=np.zeros(5, int), ids=np.arange(5))
    params = compose_params("balance=smote", "balance.k_neighbors=3", "seed=0")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("sys.argv", ["balance", "bb"])
    balance_stage.main()

    result = np.load(tmp_path / "data/balanced/bb/train.npz")
    assert np.array_equal(result["features"][60:65], copies)
    report = strict_json(tmp_path / "reports/balance/bb.json")
    assert report["augmented_copies"] == 5
    assert report["before"] == {"ai": 25, "real": 40} and report["after"] == {"ai": 40, "real": 40}


def test_class_weight_adds_no_rows_and_weighs_both_classes_alike():
    features, labels = imbalanced(n_real=40, n_ai=10)
    balanced, balanced_labels = balance(features, labels, "class_weight", seed=1)
    assert balanced is features and balanced_labels is labels
    weights = class_weights(labels)
    assert weights.tolist() == [2.5, 0.625]  # 50 / (2 * 10), 50 / (2 * 40)
    assert (weights * np.bincount(labels)).tolist() == [25.0, 25.0]
    with pytest.raises(ValueError, match=r"none of \['ai'\]"):
        class_weights(np.ones(5, dtype=np.int64))


def test_stage_writes_class_weights_for_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features, labels = imbalanced(n_real=30, n_ai=10)
    folder = tmp_path / "data/features/bb"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", features)
    pd.DataFrame(
        {"id": range(40), "label": np.array(["ai", "real"])[labels], "split": "train", "ok": True}
    ).to_csv(folder / "index.csv", index=False)
    params = compose_params("balance=class_weight", "seed=0")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("sys.argv", ["balance", "bb"])
    balance_stage.main()

    with np.load(tmp_path / "data/balanced/bb/train.npz") as result:
        assert np.array_equal(result["features"], features)
        assert result["class_weight"].tolist() == pytest.approx([2.0, 2 / 3])
    report = strict_json(tmp_path / "reports/balance/bb.json")
    assert report["after"] == report["before"] == {"ai": 10, "real": 30}
    assert report["class_weight"] == {"ai": 2.0, "real": pytest.approx(2 / 3)}
