import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from pipeline.core.errors import ConfigError
from pipeline.models.calibrate import (
    Calibration,
    apply_calibration,
    choose_threshold,
    fit_calibration,
)
from pipeline.models.metrics import expected_calibration_error


def overconfident(n: int, seed: int):
    """Labels drawn from true probabilities, and logits four times too large (an overconfident
    head)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < truth).astype(int)
    return labels, np.log(truth / (1 - truth)) * 4


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_lowers_ece_on_held_out_scores(method):
    labels, logits = overconfident(4000, seed=0)
    test_labels, test_logits = overconfident(4000, seed=1)
    calibration = fit_calibration(labels, logits, method)
    before = expected_calibration_error(test_labels, apply_calibration(Calibration(), test_logits))
    after = expected_calibration_error(test_labels, apply_calibration(calibration, test_logits))
    assert before > 0.1 and after < before / 3


def test_temperature_undoes_a_known_sharpening():
    labels, scores = overconfident(20000, seed=2)
    assert fit_calibration(labels, scores, "temperature").parameters[
        "temperature"
    ] == pytest.approx(4, rel=0.15)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_calibration_survives_saving_as_part_of_a_model(method, tmp_path):
    labels, scores = overconfident(500, seed=3)
    calibration = fit_calibration(labels, scores, method)
    inputs = keras.Input((1,))
    keras.Model(inputs, calibration(inputs)).save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    probe = np.linspace(-8, 8, 17, dtype=np.float32)[:, None]
    expected = apply_calibration(calibration, probe)
    np.testing.assert_allclose(reloaded.predict(probe, verbose=0), expected, atol=1e-6)


def test_isotonic_layer_matches_scikit_learn():
    from sklearn.isotonic import IsotonicRegression

    labels, scores = overconfident(1000, seed=4)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels)
    probe = np.random.default_rng(5).normal(scale=6, size=200)
    ours = apply_calibration(fit_calibration(labels, scores, "isotonic"), probe)
    np.testing.assert_allclose(ours, reference.predict(probe), atol=1e-5)


def test_calibration_reads_logits_beyond_a_float32_sigmoid():
    """Logits whose sigmoid rounds to 1.0 in float32 keep their order through temperature
    scaling: nothing is recovered from a clipped probability."""
    logits = np.array([20.0, 30.0, 40.0])
    calibrated = apply_calibration(Calibration("temperature", {"temperature": 10.0}), logits)
    assert np.all(np.diff(calibrated) > 0) and calibrated[-1] < 1


def test_platt_is_unpenalised():
    """Platt scaling is a logistic regression without a penalty (C=inf, as scikit-learn
    documents it): on separable-looking data it fits the slope the data call for."""
    labels, logits = overconfident(20000, seed=6)
    slope = fit_calibration(labels, logits, "platt").parameters["slope"]
    assert slope == pytest.approx(0.25, rel=0.15)


def test_thresholds():
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    # cuts at 0.3 and anywhere in (0.35, 0.8] reach balanced accuracy 5/6; the one nearest 0.5 wins
    assert choose_threshold(labels, p, "balanced_accuracy") == 0.5
    assert choose_threshold(labels, p * 0.5, "balanced_accuracy") == 0.4  # now (0.175, 0.4]
    real = np.linspace(0, 1, 101)
    threshold = choose_threshold(np.ones(101, int), real, "fpr_real", target_fpr_real=0.1)
    assert (real < threshold).mean() <= 0.1
    with pytest.raises(ConfigError, match="allowed values: 'balanced_accuracy', 'fpr_real'"):
        choose_threshold(labels, p, "f1")


def test_threshold_is_the_best_balanced_accuracy_cut():
    """The vectorised search picks the cut that scikit-learn's balanced accuracy, tried at every
    candidate one at a time, picks: tied scores and ties between cuts included."""
    rng = np.random.default_rng(7)
    for trial in range(50):
        size = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, size)
        p = rng.integers(0, 12, size) / 11  # coarse scores: many ties
        candidates = np.unique(np.append(p, 0.5))
        accuracies = np.array(
            [balanced_accuracy_score(labels, p >= cut) for cut in candidates]
            if len(np.unique(labels)) == 2
            else [np.mean((p >= cut) == labels) for cut in candidates]
        )
        best = candidates[np.isclose(accuracies, accuracies.max(), rtol=0, atol=1e-12)]
        expected = best[np.argmin(np.abs(best - 0.5))]
        assert choose_threshold(labels, p, "balanced_accuracy") == expected, trial
