"""Test-split metrics shared by evaluate, compare, the notebook and the tests: numpy and
scikit-learn only, so that reading or recomputing them never loads TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn import metrics

from pipeline.core.io import read_json
from pipeline.data.images import LABELS

PERTURBED_PREFIX = "p_real_"  # data/scores columns: calibrated P(real) after each perturbation
SIZE_BANDS = ((0, "under 64 px"), (64, "64-255 px"), (256, "256-1023 px"), (1024, "1024 px and up"))
BOOTSTRAP_SAMPLES = 1000
ALL_AI_SOURCES = "all"  # the cross-generator matrix's column of every AI source together
CONFOUND_WARNING_AUC = 0.75  # trivial cues alone separating the classes this well: warn
RELIABILITY_BINS = 15  # equal-width bins of P(real), for the ECE and the reliability diagrams
# Deletion areas closer than this count as equal: a model whose score hardly moves when the image
# is covered has maps that rank noise, and a difference of 1e-7 is no finding.
NEGLIGIBLE_AREA = 0.005
# The app's promise for blends, which the blend stage measures: photographs edited with AI features
# score about EDITED_BAND, untouched photographs above UNTOUCHED_ABOVE. An AI-edited photograph is
# read here as a real one with at most SMALL_EDIT of its area AI-made.
EDITED_BAND = (0.6, 0.8)
UNTOUCHED_ABOVE = 0.95
SMALL_EDIT = 0.25
MASK_CELL = 0.5  # a map's cell belongs to the AI region when the region covers this share of it
RANDOM_MAPS = 100  # random maps per composite (seeded permutations of its map): the baseline


def reliability_bin(p_real: np.ndarray, bins: int = RELIABILITY_BINS) -> np.ndarray:
    """The bin of each score, as scikit-learn's calibration_curve (strategy="uniform") bins it,
    which draws the reliability diagrams: edges np.linspace(0, 1, bins + 1), a score on an inner
    edge in the bin below it (searchsorted, side left), so that the ECE and the diagrams bin
    every score alike (isotonic calibration outputs scores such as 0.2 or 1/3 exactly)."""
    return np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p_real)


def expected_calibration_error(
    labels: np.ndarray, p_real: np.ndarray, bins: int = RELIABILITY_BINS
) -> float:
    """ECE over `bins` equal-width bins of P(real) (reliability_bin): mean |observed real rate -
    mean score|, weighted by the share of images in each bin."""
    return float(
        sum(
            row["images"] * abs(row["observed_real_rate"] - row["mean_score"])
            for row in reliability_rows(labels, p_real, bins)
        )
        / len(labels)
    )


def bootstrap_ci(
    labels: np.ndarray,
    p_real: np.ndarray,
    threshold: float,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals for accuracy, balanced, real and AI accuracy, ROC-AUC,
    average precision, ECE and Brier score, every statistic computed on all resamples at once.

    A statistic leaves out the resamples where it is undefined: those without a real image for
    real accuracy, without an AI image for AI accuracy, with a single class for the two-class
    statistics (possible on tiny test sets, and always on one-class data such as one source).
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), (samples, len(labels)))
    y, p = labels[rows], p_real[rows]
    positives = y.sum(axis=1)
    negatives = len(labels) - positives
    correct = (p >= threshold).astype(int) == y
    has_real, has_ai = positives > 0, negatives > 0
    both = has_real & has_ai
    recall_real = (correct & (y == 1)).sum(axis=1)[has_real] / positives[has_real]
    recall_ai = (correct & (y == 0)).sum(axis=1)[has_ai] / negatives[has_ai]
    scores = {
        "accuracy": correct.mean(axis=1),
        "real_accuracy": recall_real,
        "ai_accuracy": recall_ai,
        "ece": _expected_calibration_errors(y, p),
        "brier": ((p - y) ** 2).mean(axis=1),
    }
    if both.any():
        y, p, correct = y[both], p[both], correct[both]
        positives, negatives = positives[both], negatives[both]
        # ROC-AUC as the Mann-Whitney U statistic, from average ranks (ties count one half)
        ranks = rankdata(p, axis=1)
        auc = ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
        scores |= {
            "balanced_accuracy": (
                (correct & (y == 1)).sum(axis=1) / positives
                + (correct & (y == 0)).sum(axis=1) / negatives
            )
            / 2,
            "roc_auc": auc,
            "average_precision": _average_precision(y, p, positives),
        }
    return {
        name: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
        for name, values in scores.items()
        if len(values)
    }


def _average_precision(y: np.ndarray, p: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """scikit-learn's average precision of each row: the precision at each distinct score, from
    the highest down, weighted by the real images that score adds."""
    order = np.argsort(-p, axis=1, kind="stable")
    p, y = np.take_along_axis(p, order, axis=1), np.take_along_axis(y, order, axis=1)
    width = p.shape[1]
    # tied scores form one threshold: every member takes the precision at its group's end
    last_of_ties = np.ones_like(p, dtype=bool)
    last_of_ties[:, :-1] = p[:, :-1] != p[:, 1:]
    positions = np.where(last_of_ties, np.arange(width), width - 1)
    group_end = np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1]
    precision = np.cumsum(y, axis=1) / np.arange(1, width + 1)
    return (y * np.take_along_axis(precision, group_end, axis=1)).sum(axis=1) / positives


def _expected_calibration_errors(
    y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS
) -> np.ndarray:
    """expected_calibration_error of each row: per bin, |real images - summed scores| / n."""
    bin_of = reliability_bin(p, bins) + bins * np.arange(len(p))[:, None]
    gaps = np.bincount(bin_of.ravel(), weights=(y - p).ravel(), minlength=bins * len(p))
    return np.abs(gaps.reshape(len(p), bins)).sum(axis=1) / p.shape[1]


def point_metrics(labels: np.ndarray, p_real: np.ndarray, threshold: float) -> dict[str, Any]:
    """The metrics of every table: accuracy, balanced accuracy, real and AI accuracy (the recall
    of each class at `threshold`), ROC-AUC, average precision (real = positive), ECE and Brier.
    Those that need both classes (or the one that is missing) are None."""
    correct = (p_real >= threshold).astype(int) == labels
    recalls = {
        name: float(correct[labels == i].mean()) if (labels == i).any() else None
        for i, name in enumerate(LABELS)
    }
    both = None not in recalls.values()
    empty = not len(labels)
    return {
        "images": len(labels),
        "real": int(labels.sum()),
        "accuracy": None if empty else float(correct.mean()),
        "balanced_accuracy": (recalls["real"] + recalls["ai"]) / 2 if both else None,
        "real_accuracy": recalls["real"],
        "ai_accuracy": recalls["ai"],
        "roc_auc": float(metrics.roc_auc_score(labels, p_real)) if both else None,
        "average_precision": float(metrics.average_precision_score(labels, p_real))
        if both
        else None,
        "ece": None if empty else expected_calibration_error(labels, p_real),
        "brier": None if empty else float(metrics.brier_score_loss(labels, p_real)),
    }


def classification_metrics(labels: np.ndarray, p_real: np.ndarray, threshold: float) -> dict:
    """Accuracy, balanced, real and AI accuracy, per-class precision/recall/F1, ROC-AUC, AP,
    confusion matrix, calibration (ECE, Brier, log-loss) and bootstrap 95 % intervals."""
    predicted = (p_real >= threshold).astype(int)
    report = metrics.classification_report(
        labels,
        predicted,
        labels=range(len(LABELS)),
        target_names=LABELS,
        output_dict=True,
        zero_division=0,
    )
    return {
        **point_metrics(labels, p_real, threshold),
        "threshold": threshold,
        **calibration_quality(labels, p_real),
        "ci95": bootstrap_ci(labels, p_real, threshold),
        "per_class": {
            name: {key: report[name][key] for key in ("precision", "recall", "f1-score", "support")}
            for name in LABELS
        },
        "confusion_matrix": {
            "labels": list(LABELS),  # rows: true label, columns: predicted label
            "matrix": metrics.confusion_matrix(labels, predicted, labels=range(len(LABELS)))
            .astype(int)
            .tolist(),
        },
    }


def calibration_quality(labels: np.ndarray, p_real: np.ndarray) -> dict[str, float]:
    return {
        "ece": expected_calibration_error(labels, p_real),
        "brier": metrics.brier_score_loss(labels, p_real),
        "log_loss": metrics.log_loss(labels, np.clip(p_real, 1e-7, 1 - 1e-7), labels=[0, 1]),
    }


def reliability_rows(
    labels: np.ndarray, p_real: np.ndarray, bins: int = RELIABILITY_BINS
) -> list[dict]:
    """Reliability diagram points: mean score against observed share of real images, per
    non-empty bin; the points of scikit-learn's calibration_curve, which draws the evaluate
    stage's diagrams through DVCLive, on the same bins (reliability_bin)."""
    bin_of = reliability_bin(p_real, bins)
    return [
        {
            "mean_score": float(p_real[bin_of == b].mean()),
            "observed_real_rate": float(labels[bin_of == b].mean()),
            "images": int((bin_of == b).sum()),
        }
        for b in np.unique(bin_of)
    ]


def plot_rows(path: Path) -> list[dict]:
    """The rows of a plot that DVCLive wrote: a custom plot's file is its rows, a scikit-learn
    plot's file holds them under the plot's kind ("roc", "calibration", ...)."""
    data = read_json(path)
    return data if isinstance(data, list) else next(iter(data.values()))


def size_band(width: int, height: int) -> str:
    return [name for lowest, name in SIZE_BANDS if min(width, height) >= lowest][-1]


def breakdowns(
    images: pd.DataFrame, labels: np.ndarray, p_real: np.ndarray, threshold: float
) -> dict[str, dict[str, dict]]:
    """Metrics per source, image format and size band, so that a one-source result shows."""
    frame = images.assign(
        size_band=[size_band(w, h) for w, h in zip(images["width"], images["height"], strict=True)],
        label_id=labels,
        p_real=p_real,
    )
    result: dict[str, dict[str, dict]] = {}
    for column in ("source_name", "format", "size_band"):
        result[column] = {
            str(group): point_metrics(
                rows["label_id"].to_numpy(), rows["p_real"].to_numpy(), threshold
            )
            for group, rows in frame.groupby(column)
        }
    return result


def kind_and_level(perturbation: str) -> tuple[str, str]:
    """('jpeg', '95') for the robustness grid's jpeg_95, ('none', '') for unperturbed images."""
    kind, _, level = perturbation.rpartition("_")
    return (kind, level) if kind else (perturbation, "")


def robustness_metrics(labels: np.ndarray, scores: dict[str, np.ndarray], threshold: float) -> dict:
    """The metrics of point_metrics per perturbation, over the images that could be scored (not
    NaN), and how many could not."""
    results = {}
    for name, p_real in scores.items():
        usable = ~np.isnan(p_real)
        results[name] = {
            **point_metrics(labels[usable], p_real[usable], threshold),
            "skipped": int((~usable).sum()),
        }
    return results


def deletion_area(covered: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Area under each deletion curve (its last axis: the probability of the verdict at each
    share of the image `covered`, from none to all), over the share covered, 0 to 1."""
    return np.trapezoid(curves, x=covered, axis=-1)


def faithfulness(
    covered: np.ndarray,
    map_curves: np.ndarray,
    random_curves: np.ndarray,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, Any]:
    """The deletion check of explanation maps (pipeline.models.occlusion) over test images: the mean
    area under the deletion curve of the map's order (`map_curves`: images x points, at the
    shares `covered`) and of random orders (`random_curves`: images x orders x points, averaged
    per image), and their difference, random minus map, each with a 95 % percentile bootstrap
    interval over the images, and how far covering the whole image moves the verdict's
    probability (`full_cover_drop`: when it hardly moves, no order can do better than another). A
    map that ranks the regions better than chance has the smaller area; it is reported "better
    than random" only where the whole interval of the difference is above NEGLIGIBLE_AREA, "worse
    than random" where it is below minus that, and "no better than random" otherwise."""
    by_map = deletion_area(covered, map_curves)
    by_chance = deletion_area(covered, random_curves).mean(axis=1)
    areas = {"map_auc": by_map, "random_auc": by_chance, "difference": by_chance - by_map}
    rows = np.random.default_rng(seed).integers(0, len(by_map), (samples, len(by_map)))
    ci95 = {
        name: [float(np.percentile(values[rows].mean(axis=1), q)) for q in (2.5, 97.5)]
        for name, values in areas.items()
    }
    low, high = ci95["difference"]
    verdict = (
        "better than random"
        if low > NEGLIGIBLE_AREA
        else "worse than random"
        if high < -NEGLIGIBLE_AREA
        else "no better than random"
    )
    return {
        "images": len(by_map),
        "random_orders": random_curves.shape[1],
        **{name: float(values.mean()) for name, values in areas.items()},
        "full_cover_drop": float((map_curves[:, 0] - map_curves[:, -1]).mean()),
        "ci95": ci95,
        "negligible_difference": NEGLIGIBLE_AREA,
        "better_than_random": verdict == "better than random",
        "verdict": verdict,
    }


def mean_interval(
    values: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> list[float]:
    """95 % percentile-bootstrap interval of the mean of `values`."""
    rows = np.random.default_rng(seed).integers(0, len(values), (samples, len(values)))
    return [float(np.percentile(values[rows].mean(axis=1), q)) for q in (2.5, 97.5)]


def verdict_flip(points: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The smallest AI fraction of a blend curve (its points in increasing fraction) at which the
    mean P(real) falls under `threshold`, where the curve starts at or above it; None and why
    where it never does, or starts under it."""
    first = points[0]
    if first["p_real"] < threshold:
        return {
            "flip_fraction": None,
            "flip": f"none: the mean P(real) is under the threshold already at AI fraction "
            f"{first['fraction']:g}",
        }
    for before, point in zip(points, points[1:], strict=False):
        if point["p_real"] < threshold:
            return {
                "flip_fraction": point["fraction"],
                "flip": f"between AI fractions {before['fraction']:g} and {point['fraction']:g}",
            }
    return {
        "flip_fraction": None,
        "flip": f"none: the mean P(real) stays at or above the threshold up to AI fraction "
        f"{points[-1]['fraction']:g}",
    }


def blend_curve(rows: pd.DataFrame, threshold: float, seed: int = 0) -> dict[str, Any]:
    """One direction and mask of the blend stage's composites (rows of composites.csv): per
    fraction, the mean P(real) with its bootstrap interval, the median, the share called real
    and the share in EDITED_BAND; Spearman's rho between the exact AI fraction and P(real) over
    every composite; and the fraction at which the verdict flips (verdict_flip)."""
    points = []
    for fraction, group in rows.groupby("fraction"):
        p = group["p_real"].to_numpy()
        points.append(
            {
                "fraction": float(fraction),
                "ai_fraction": float(group["ai_fraction"].mean()),
                "composites": len(p),
                "p_real": float(p.mean()),
                "ci95": mean_interval(p, seed),
                "median": float(np.median(p)),
                "called_real": float((p >= threshold).mean()),
                "in_edited_band": float(((p >= EDITED_BAND[0]) & (p <= EDITED_BAND[1])).mean()),
            }
        )
    ai, p = rows["ai_fraction"].to_numpy(), rows["p_real"].to_numpy()
    rho, p_value = spearmanr(ai, p) if np.ptp(ai) and np.ptp(p) else (None, None)
    return {
        "points": points,
        "spearman_rho": None if rho is None else float(rho),
        "spearman_p": None if p_value is None else float(p_value),
        **verdict_flip(points, threshold),
    }


def share_with_interval(hits: np.ndarray, seed: int = 0) -> dict[str, Any]:
    return (
        {"composites": len(hits), "share": float(hits.mean()), "ci95": mean_interval(hits, seed)}
        if len(hits)
        else {"composites": 0, "share": None, "ci95": None}
    )


def blend_promise(composites: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """What the app promises, measured on the photographs of the blend stage: the share of
    AI-edited photographs (an AI region of at most SMALL_EDIT of the area, either mask) that
    score within EDITED_BAND, and the share of untouched ones (fraction 0) above UNTOUCHED_ABOVE,
    each with its bootstrap interval."""
    in_real = composites[composites["direction"] == "ai_in_real"]
    edited = in_real[(in_real["fraction"] > 0) & (in_real["fraction"] <= SMALL_EDIT)]["p_real"]
    # both masks of fraction 0 are the same image: one of them
    untouched = in_real[(in_real["fraction"] == 0) & (in_real["mask"] == "hard")]["p_real"]
    band = (edited >= EDITED_BAND[0]) & (edited <= EDITED_BAND[1])
    return {
        "edited_band": list(EDITED_BAND),
        "small_edit": SMALL_EDIT,
        "edited_in_band": share_with_interval(band.to_numpy(dtype=float), seed),
        "edited_mean_p_real": float(edited.mean()) if len(edited) else None,
        "untouched_above": UNTOUCHED_ABOVE,
        "untouched_over": share_with_interval(
            (untouched > UNTOUCHED_ABOVE).to_numpy(dtype=float), seed
        ),
        "untouched_mean_p_real": float(untouched.mean()) if len(untouched) else None,
    }


def blend_metrics(composites: pd.DataFrame, threshold: float, seed: int = 0) -> dict[str, Any]:
    """metrics/<backbone>_blend.json's curves and promise, from the blend stage's composites.csv
    (direction, mask, fraction, ai_fraction, p_real per composite)."""
    curves: dict[str, dict[str, Any]] = {}
    for (direction, kind), rows in composites.groupby(["direction", "mask"], sort=False):
        curves.setdefault(direction, {})[kind] = blend_curve(rows, threshold, seed)
    return {
        "threshold": threshold,
        "composites": len(composites),
        "curves": curves,
        "promise": blend_promise(composites, seed),
    }


def _most_ai_first(maps: np.ndarray, ai_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pointing game hit, IoU) of each map (rows of cell values; negative: towards AI) with its
    AI cells: whether its most-AI cell is an AI cell, and the IoU of its k most-AI cells with the
    k AI cells."""
    order = np.argsort(maps, axis=1, kind="stable")
    hit = np.take_along_axis(ai_cells, order[:, :1], axis=1)[:, 0]
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(maps.shape[1])[None], axis=1)
    top = ranks < ai_cells.sum(axis=1, keepdims=True)
    iou = (top & ai_cells).sum(axis=1) / (top | ai_cells).sum(axis=1)
    return hit.astype(float), iou


def map_localisation(
    maps: np.ndarray,
    ai_share: np.ndarray,
    seed: int = 0,
    random_maps: int = RANDOM_MAPS,
) -> dict[str, Any]:
    """Do explanation maps find the AI-made region of a composite? `maps` (composites x grid x
    grid, pipeline.models.occlusion: negative cells push towards AI) against `ai_share` (how much of
    each cell is AI-made): the pointing game (the map's most-AI cell is an AI cell: one covered
    at least MASK_CELL) and the IoU of the map's k most-AI cells with the k AI cells, each against
    `random_maps` random maps per composite (seeded permutations of its own cells), with 95 %
    bootstrap intervals over the composites. Composites with no AI cell, or nothing but AI
    cells, are left out: there is nothing to find."""
    count = len(maps)
    values = maps.reshape(count, -1)
    ai_cells = ai_share.reshape(count, -1) >= MASK_CELL
    usable = ai_cells.any(axis=1) & ~ai_cells.all(axis=1)
    values, ai_cells = values[usable], ai_cells[usable]
    result: dict[str, Any] = {"composites": int(usable.sum()), "left_out": int((~usable).sum())}
    if not usable.any():
        return {**result, "verdict": "not measured: no composite has a region to find"}
    hit, iou = _most_ai_first(values, ai_cells)
    rng = np.random.default_rng(seed)
    chance = [_most_ai_first(rng.permuted(values, axis=1), ai_cells) for _ in range(random_maps)]
    hit_random = np.mean([h for h, _ in chance], axis=0)
    iou_random = np.mean([i for _, i in chance], axis=0)
    measures = {
        "pointing_game": hit,
        "pointing_game_random": hit_random,
        "pointing_game_difference": hit - hit_random,
        "iou": iou,
        "iou_random": iou_random,
        "iou_difference": iou - iou_random,
    }
    ci95 = {name: mean_interval(v, seed) for name, v in measures.items()}
    return {
        **result,
        "random_maps": random_maps,
        **{name: float(v.mean()) for name, v in measures.items()},
        "ci95": ci95,
        "verdict": against_random(ci95["pointing_game_difference"]),
        "iou_verdict": against_random(ci95["iou_difference"]),
    }


def against_random(interval: list[float]) -> str:
    """A map's measure against random maps, from the interval of their difference."""
    low, high = interval
    return (
        "better than random"
        if low > 0
        else "worse than random"
        if high < 0
        else "no better than random"
    )
