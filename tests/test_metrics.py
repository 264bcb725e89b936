import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    recall_score,
    roc_auc_score,
)

from pipeline.models.metrics import (
    RELIABILITY_BINS,
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    faithfulness,
    point_metrics,
    reliability_rows,
)

# Scores exactly on inner edges of the 15 bins (k/15), as isotonic calibration outputs them
EDGE_SCORES = np.array([0.2, 1 / 3, 0.4, 0.6, 0.8])


class Unshuffled:
    """A generator whose every bootstrap resample is the data itself, in order."""

    def integers(self, low, high, size):
        return np.tile(np.arange(high), (size[0], 1))


def test_ece_is_zero_when_scores_are_frequencies_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    calibrated = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(calibrated, p) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(calibrated, overconfident) > 0.2


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for n in (200, 5000):
        labels = rng.integers(0, 2, n)
        p = np.clip(labels * 0.3 + rng.uniform(0, 0.7, n), 0, 1)
        result = classification_metrics(labels, p, 0.5)
        for name in ("accuracy", "balanced_accuracy", "roc_auc"):
            low, high = result["ci95"][name]
            assert low <= result[name] <= high
        widths.append(np.diff(result["ci95"]["roc_auc"]).item())
    assert widths[1] < widths[0] / 2


def test_metrics_of_a_perfect_classifier():
    labels = np.array([0, 0, 1, 1])
    result = classification_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)
    assert result["accuracy"] == result["roc_auc"] == 1.0
    assert result["confusion_matrix"]["matrix"] == [[2, 0], [0, 2]]
    assert result["per_class"]["real"]["recall"] == 1.0
    assert bootstrap_ci(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)["accuracy"] == pytest.approx(
        [1.0, 1.0]
    )


def test_bootstrap_statistics_match_scikit_learn(monkeypatch):
    """With every resample equal to the data, the interval collapses onto sklearn's values."""
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    p = np.array([0.2, 0.7, 0.7, 0.4, 0.9, 0.7, 0.3, 0.6])  # ties included
    monkeypatch.setattr(np.random, "default_rng", lambda seed: Unshuffled())
    result = bootstrap_ci(labels, p, 0.5, samples=3)
    assert result["roc_auc"] == pytest.approx([roc_auc_score(labels, p)] * 2)
    balanced = balanced_accuracy_score(labels, (p >= 0.5).astype(int))
    assert result["balanced_accuracy"] == pytest.approx([balanced] * 2)
    point = point_metrics(labels, p, 0.5)
    assert point["average_precision"] == pytest.approx(average_precision_score(labels, p))
    assert point["real_accuracy"] == recall_score(labels, (p >= 0.5).astype(int), pos_label=1)
    assert point["ai_accuracy"] == recall_score(labels, (p >= 0.5).astype(int), pos_label=0)
    for name in ("average_precision", "ece", "brier", "real_accuracy", "ai_accuracy"):
        assert result[name] == pytest.approx([point[name]] * 2), name


def test_one_class_leaves_the_two_class_metrics_undefined():
    result = point_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]), 0.5)
    assert result["real_accuracy"] == pytest.approx(2 / 3) and result["ai_accuracy"] is None
    assert result["roc_auc"] is result["balanced_accuracy"] is result["average_precision"] is None


def test_one_class_data_still_gets_intervals_for_what_it_defines():
    rng = np.random.default_rng(3)
    p_real = rng.uniform(size=50)
    intervals = bootstrap_ci(np.zeros(50, int), p_real, 0.5)  # one AI source alone
    assert set(intervals) == {"accuracy", "ai_accuracy", "ece", "brier"}
    low, high = intervals["ai_accuracy"]
    assert low <= (p_real < 0.5).mean() <= high and high - low < 0.4


def test_scores_on_bin_edges_fall_in_the_same_bins_for_the_ece_and_the_diagrams(monkeypatch):
    rng = np.random.default_rng(4)
    p = np.concatenate([EDGE_SCORES, EDGE_SCORES, [0.0, 1.0], rng.uniform(size=40)])
    labels = (rng.uniform(size=p.size) < p).astype(int)
    prob_true, prob_pred = calibration_curve(labels, p, n_bins=RELIABILITY_BINS)
    rows = reliability_rows(labels, p)
    assert [row["mean_score"] for row in rows] == pytest.approx(prob_pred)
    assert [row["observed_real_rate"] for row in rows] == pytest.approx(prob_true)
    # a score on an edge belongs to the bin below it: 0.2 with (2/15, 3/15], not with 0.25
    assert expected_calibration_error(np.array([1, 0]), np.array([0.2, 0.25])) == pytest.approx(
        (abs(1 - 0.2) + abs(0 - 0.25)) / 2
    )
    # the bootstrap's vectorised ECE bins them alike
    monkeypatch.setattr(np.random, "default_rng", lambda seed: Unshuffled())
    point = expected_calibration_error(labels, p)
    assert bootstrap_ci(labels, p, 0.5, samples=2)["ece"] == pytest.approx([point] * 2)


def test_the_deletion_check_tells_a_faithful_map_from_one_no_better_than_chance():
    rng = np.random.default_rng(0)
    covered = np.linspace(0, 1, 8)
    chance = 0.9 - 0.3 * covered[None, None] + rng.normal(0, 0.05, (20, 3, 8))
    faithful = faithfulness(
        covered, 0.9 - 0.8 * covered[None] + rng.normal(0, 0.05, (20, 8)), chance
    )
    assert faithful["verdict"] == "better than random" and faithful["better_than_random"]
    assert faithful["ci95"]["difference"][0] > 0
    assert faithful["map_auc"] < faithful["random_auc"]
    # a map whose order is one more random order: its interval straddles 0
    no_better = faithfulness(covered, chance[:, 0], chance[:, 1:])
    assert no_better["verdict"] == "no better than random" and not no_better["better_than_random"]
    low, high = no_better["ci95"]["difference"]
    assert low < 0 < high
    misleading = faithfulness(covered, 0.9 - 0.05 * covered[None].repeat(20, 0), chance)
    assert misleading["verdict"] == "worse than random"
    # a model whose score hardly moves: a consistent but tiny difference is no finding
    flat = 0.5 - 1e-6 * covered[None, None].repeat(20, 0)
    hardly = faithfulness(covered, flat[:, 0] - 1e-7 * covered, flat)
    assert hardly["ci95"]["difference"][0] > 0 and hardly["verdict"] == "no better than random"
    assert hardly["full_cover_drop"] == pytest.approx(1.1e-6)
