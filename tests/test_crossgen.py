"""The crossgen stage: a head per AI source, tested on every AI source, from features alone."""

import numpy as np
import pandas as pd
import yaml

from conftest import compose_params, strict_json
from pipeline.core import paths
from pipeline.stages import crossgen

PARAMS = {
    "balance": {"method": "smote", "k_neighbors": 3, "sampling_strategy": "auto"},
    "head": {
        "units": 16,
        "dropout": 0.0,
        "learning_rate": 0.01,
        "epochs": 15,
        "batch_size": 32,
        "patience": 3,
    },
    "calibration": {
        "method": "temperature",
        "threshold": "balanced_accuracy",
        "target_fpr_real": 0.05,
    },
    "seed": 0,
}


def two_generators(per_split=(60, 20, 40), seed=0):
    """Features of real images and of two generators of different kinds: 'narrow' leaves one
    trace (feature 2), 'broad' leaves that trace too and two stronger ones of its own
    (features 0 and 1). A head trained on 'broad' leans on its strong traces and misses 'narrow';
    one trained on 'narrow' finds its trace in 'broad' too."""
    rng = np.random.default_rng(seed)
    shifts = {"real": [0, 0, 0, 0], "narrow": [0, 0, 4, 0], "broad": [6, 6, 4, 0]}
    features, labels, splits, sources = [], [], [], []
    for split, count in zip(("train", "val", "test"), per_split, strict=True):
        for source, shift in shifts.items():
            n = count * 2 if source == "real" else count
            features.append(rng.normal(size=(n, 4)) + shift)
            labels += [int(source == "real")] * n
            splits += [split] * n
            sources += ["photos" if source == "real" else source] * n
    return (
        np.concatenate(features).astype(np.float32),
        np.array(labels),
        np.array(splits),
        np.array(sources),
    )


def test_the_matrix_shows_which_generator_transfers_worse():
    matrix = crossgen.cross_generator_matrix(*two_generators(), PARAMS)
    assert matrix["applicable"] and matrix["ai_sources"] == ["broad", "narrow"]
    assert matrix["test_images"] == {"broad": 40, "narrow": 40, "real": 80}
    rows = matrix["trained_on"]
    ai = {(a, b): rows[a]["tested_on"][b]["ai_accuracy"] for a in rows for b in rows}
    assert ai["broad", "broad"] > 0.9 and ai["narrow", "narrow"] > 0.9
    assert ai["narrow", "broad"] > 0.8  # the narrow trace is in broad's images too
    assert ai["broad", "narrow"] < ai["narrow", "broad"] - 0.2
    cell = rows["broad"]["tested_on"]["narrow"]
    assert cell["images"] == 80 + 40
    for name in ("ai_accuracy", "average_precision", "roc_auc", "real_accuracy"):
        low, high = cell["ci95"][name]
        assert low <= cell[name] <= high, name
    assert set(rows["broad"]["tested_on"]) == {"broad", "narrow", "all"}
    assert rows["broad"]["tested_on"]["all"]["images"] == 80 + 80
    # leave one out: trained on all but the column's source; with two, that is the other one
    assert matrix["leave_one_out"]["narrow"] == rows["broad"]["tested_on"]["narrow"]
    assert matrix["leave_one_out"]["broad"] == rows["narrow"]["tested_on"]["broad"]


def test_one_ai_source_is_not_applicable_rather_than_an_error():
    features, labels, splits, sources = two_generators((10, 5, 5))
    sources = np.where(labels == 1, "photos", "sd14")
    matrix = crossgen.cross_generator_matrix(features, labels, splits, sources, PARAMS)
    assert matrix["applicable"] is False and matrix["ai_sources"] == ["sd14"]
    assert "at least two AI sources" in matrix["reason"]


def test_the_stage_writes_a_matrix_and_heatmap_per_backbone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {**compose_params(), **PARAMS}
    params["backbones"] = {"bb": {**params["backbones"]["spectrum"], "name": "bb"}}
    params["backbone"] = {"name": "bb"}
    params["head"]["epochs"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    features, labels, splits, sources = two_generators((20, 8, 8))
    ids = [f"i{i}" for i in range(len(labels))]
    folder = tmp_path / paths.features_dir("bb")
    folder.mkdir(parents=True)
    np.save(folder / paths.FEATURES_FILE, features)
    names = np.where(labels == 1, "real", "ai")
    pd.DataFrame({"id": ids, "label": names, "split": splits, "ok": True, "reason": ""}).to_csv(
        folder / paths.INDEX_FILE, index=False
    )
    paths.SPLITS.parent.mkdir(parents=True)
    pd.DataFrame({"id": ids, "source_name": sources}).to_csv(paths.SPLITS, index=False)
    monkeypatch.setattr("sys.argv", ["crossgen"])
    crossgen.main()
    matrix = strict_json(paths.crossgen_file("bb"))
    assert matrix["applicable"] and set(matrix["leave_one_out"]) == {"broad", "narrow"}
    assert paths.crossgen_heatmap("bb").read_bytes().startswith(b"\x89PNG")


def test_a_source_too_small_to_balance_is_reported_in_its_row_not_fatal():
    features, labels, splits, sources = two_generators((20, 8, 8))
    keep = ~((sources == "narrow") & (splits == "train")) | (np.arange(len(labels)) % 20 == 0)
    params = {**PARAMS, "head": {**PARAMS["head"], "epochs": 2}}
    matrix = crossgen.cross_generator_matrix(
        features[keep], labels[keep], splits[keep], sources[keep], params
    )
    narrow = matrix["trained_on"]["narrow"]
    assert narrow["threshold"] is None
    assert "SMOTE needs more than" in narrow["tested_on"]["broad"]["not_applicable"]
    assert matrix["trained_on"]["broad"]["tested_on"]["narrow"]["ai_accuracy"] is not None


def test_augmented_copies_join_only_the_heads_trained_on_their_source(monkeypatch):
    features, labels, splits, sources = two_generators((20, 8, 8))
    train = splits == "train"
    augmented = (features[train] + 0.1, labels[train], sources[train])
    sizes = {}

    def recording_fit(train_set, val, params):
        sizes[len(sizes)] = len(train_set[1])
        return (lambda rows: np.full(len(rows), 0.5)), 0.5

    monkeypatch.setattr(crossgen, "fit_scorer", recording_fit)
    crossgen.cross_generator_matrix(features, labels, splits, sources, PARAMS, augmented)
    real, per_source = 40, 20  # training images: 40 real, 20 per AI source
    # heads: broad, narrow (leave-one-out heads are the same two): originals + their copies
    assert sizes == {0: 2 * (real + per_source), 1: 2 * (real + per_source)}


def test_a_trained_backbones_heads_use_their_own_networks_features():
    """For a backbone trained on images, each head trains and tests on the features of the
    network trained on its own AI sources: here the network trained on 'narrow' alone gives
    features without 'broad's traces, so its head cannot find 'broad' through them."""
    features, labels, splits, sources = two_generators()
    blind = features.copy()
    blind[:, :2] = np.random.default_rng(1).normal(size=(len(blind), 2))  # 'broad's traces gone
    blind[:, 2] = np.random.default_rng(2).normal(size=len(blind))  # and the shared one
    by_set = {("broad",): features, ("narrow",): blind}
    matrix = crossgen.cross_generator_matrix(
        features, labels, splits, sources, PARAMS, features_by_set=by_set
    )
    rows = matrix["trained_on"]
    assert rows["broad"]["tested_on"]["broad"]["ai_accuracy"] > 0.9
    assert rows["narrow"]["tested_on"]["broad"]["roc_auc"] < 0.7  # blind features: no signal
    plain = crossgen.cross_generator_matrix(features, labels, splits, sources, PARAMS)
    assert plain["trained_on"]["narrow"]["tested_on"]["broad"]["roc_auc"] > 0.9


def test_a_set_no_network_was_trained_on_is_not_applicable_with_the_reason():
    features, labels, splits, sources = two_generators()
    matrix = crossgen.cross_generator_matrix(
        features, labels, splits, sources, PARAMS, features_by_set={("broad",): features}
    )
    cell = matrix["trained_on"]["narrow"]["tested_on"]["broad"]
    assert "training.crossgen is off" in cell["not_applicable"]
