import numpy as np
import pandas as pd

from pipeline.models.metrics import breakdowns, calibration_quality, classification_metrics
from pipeline.stages.compare import draw_figures, evaluation_report, report


def fake_results(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    p = np.clip(labels * 0.4 + rng.uniform(0, 0.6, 200), 0, 1)
    images = pd.DataFrame(
        {"source_name": rng.choice(["a", "b"], 200), "format": "JPEG", "width": 64, "height": 64}
    )
    return {
        **classification_metrics(labels, p, 0.5),
        "calibration": {
            "method": "temperature",
            "before": calibration_quality(labels, p**2),
            "after": calibration_quality(labels, p),
        },
        "breakdown": breakdowns(images, labels, p, 0.5),
    }


def test_report_shows_every_backbone_and_names_the_export():
    results = {"inceptionv3": fake_results(0), "spectrum": fake_results(1)}
    robustness = {
        name: {
            "none": {"images": 200, "skipped": 0, "accuracy": 0.8, "roc_auc": 0.9},
            "downscale_0.5": {"images": 0, "skipped": 200, "accuracy": None, "roc_auc": None},
        }
        for name in results
    }
    confounds = {"all_cues": {"roc_auc": 0.5}, "per_cue": {"format": 0.5}}
    text = report(results, robustness, "spectrum", confounds)
    assert "**Exported: `spectrum`**" in text
    for name in results:
        assert f"| {name} | 200 |" in text
    assert "n/a (200 skipped)" in text and "| a |" in text and "| 64-255 px |" in text
    accuracy = results["inceptionv3"]["accuracy"]
    low, high = results["inceptionv3"]["ci95"]["accuracy"]
    assert f"{accuracy:.3f} [{low:.3f}, {high:.3f}]" in text
    for name in ("real_accuracy", "ai_accuracy", "average_precision", "brier"):
        value, (low, high) = results["spectrum"][name], results["spectrum"]["ci95"][name]
        assert f"{value:.3f} [{low:.3f}, {high:.3f}]" in text, name
    assert "| real accuracy | AI accuracy |" in text


def fake_matrix() -> dict:
    def cell(value):
        return {
            "images": 20,
            "real_accuracy": 0.9,
            "ai_accuracy": value,
            "roc_auc": 0.8,
            "average_precision": 0.8,
            "ci95": {"ai_accuracy": [value - 0.1, value + 0.1]},
        }

    return {
        "applicable": True,
        "ai_sources": ["gan", "sd14"],
        "trained_on": {
            "gan": {"tested_on": {"gan": cell(0.95), "sd14": cell(0.31), "all": cell(0.6)}},
            "sd14": {"tested_on": {"gan": cell(0.72), "sd14": cell(0.93), "all": cell(0.8)}},
        },
        "leave_one_out": {"gan": cell(0.72), "sd14": cell(0.31)},
    }


def fake_faithfulness(better: bool) -> dict:
    difference = [0.15, 0.25] if better else [-0.05, 0.05]
    return {
        "images": 8,
        "random_orders": 1,
        "map_auc": 0.3,
        "random_auc": 0.5,
        "difference": 0.2 if better else 0.0,
        "full_cover_drop": 0.4,
        "ci95": {"map_auc": [0.25, 0.35], "random_auc": [0.45, 0.55], "difference": difference},
        "better_than_random": better,
        "verdict": "better than random" if better else "no better than random",
    }


def fake_blend(threshold: float) -> dict:
    def curve(start: float) -> dict:
        points = [
            {
                "fraction": f,
                "p_real": start - 0.8 * f,
                "ci95": [start - 0.8 * f - 0.05, start - 0.8 * f + 0.05],
            }
            for f in (0, 0.5, 1)
        ]
        return {"points": points, "spearman_rho": -0.9, "flip": "between AI fractions 0.5 and 1"}

    found = {
        "composites": 12,
        "pointing_game": 0.75,
        "pointing_game_random": 0.2,
        "iou": 0.5,
        "iou_random": 0.1,
        "ci95": {
            "pointing_game": [0.5, 0.9],
            "pointing_game_random": [0.15, 0.25],
            "iou": [0.4, 0.6],
            "iou_random": [0.05, 0.15],
        },
        "verdict": "better than random",
        "iou_verdict": "better than random",
    }
    measured = {"composites": 8, "share": 0.25, "ci95": [0.0, 0.5]}
    return {
        "threshold": threshold,
        "curves": {
            d: {m: curve(0.97 if m == "hard" else 0.9) for m in ("hard", "soft")}
            for d in ("ai_in_real", "real_in_ai")
        },
        "promise": {
            "untouched_over": {"composites": 4, "share": 0.5, "ci95": [0.0, 1.0]},
            "untouched_mean_p_real": 0.93,
            "edited_in_band": measured,
            "edited_mean_p_real": 0.81,
        },
        "maps": {
            "all": found,
            "ai_in_real": found,
            "real_in_ai": {"composites": 0, "left_out": 4, "verdict": "not measured: none"},
        },
    }


def fake_gallery(name: str) -> list[dict]:
    return [
        {
            "kind": kind,
            "rank": "1",
            "id": f"{kind}1",
            "label": label,
            "p_real": p_real,
            "file": f"gallery/{kind}-1.png",
            "figure": f"evaluation/gallery/{name}/{kind}-1.png",
        }
        for kind, label, p_real in (
            ("most_confident_real", "real", "0.99"),
            ("most_confident_ai", "ai", "0.01"),
            ("worst_misclassified", "ai", "0.97"),
        )
    ]


def test_evaluation_report_has_its_figures_tables_and_warnings(tmp_path):
    results = {"inceptionv3": fake_results(0), "spectrum": fake_results(1)}
    grid = [
        {"perturbation": "none", "kind": "none", "level": "", "accuracy": 0.9, "roc_auc": 0.95},
        {"perturbation": "jpeg_95", "kind": "jpeg", "level": "95", "accuracy": 0.8, "roc_auc": 0.9},
        {
            "perturbation": "jpeg_50",
            "kind": "jpeg",
            "level": "50",
            "accuracy": 0.6,
            "roc_auc": None,
        },
    ]
    robustness = {
        name: {
            row["perturbation"]: {**row, "skipped": 0, "real_accuracy": 0.5, "ai_accuracy": 0.7}
            for row in grid
        }
        for name in results
    }
    reliability = {
        name: {
            "calibrated": [{"prob_pred": 0.2, "prob_true": 0.25}],
            "uncalibrated": [{"prob_pred": 0.6, "prob_true": 0.25}],
        }
        for name in results
    }
    matrices = {
        "inceptionv3": fake_matrix(),
        "spectrum": {"applicable": False, "reason": "the data has 1 (sd14)", "ai_sources": []},
    }
    deletion = {
        name: [{"covered": c, "map": 0.9 - c / 2, "random": 0.9 - c / 4} for c in (0, 0.5, 1)]
        for name in results
    }
    blends = {"inceptionv3": fake_blend(0.5), "spectrum": fake_blend(0.3)}
    figures = draw_figures(
        list(results), {n: grid for n in results}, reliability, matrices, deletion, blends, tmp_path
    )
    assert {path.name for path in tmp_path.iterdir()} == {
        "robustness.png",
        "deletion.png",
        "blend.png",
        "reliability_inceptionv3.png",
        "reliability_spectrum.png",
        "crossgen_inceptionv3.png",
    }
    assert all((tmp_path / p.name).read_bytes().startswith(b"\x89PNG") for p in tmp_path.iterdir())
    assert figures["robustness"] == "evaluation/robustness.png"

    confounds = {"all_cues": {"roc_auc": 0.9}, "per_cue": {}}
    maps = {"inceptionv3": fake_faithfulness(True), "spectrum": fake_faithfulness(False)}
    galleries = {name: fake_gallery(name) for name in results}
    galleries["spectrum"] = galleries["spectrum"][:2]  # no misclassified test image
    text = evaluation_report(
        results,
        robustness,
        matrices,
        figures,
        ["spectrum"],
        confounds,
        maps,
        galleries,
        "M.",
        blends,
    )
    assert "**Random-init backbones** (`weights: null`): `spectrum`" in text
    assert "Confound warning" in text and "ROC-AUC 0.90" in text
    assert "![robustness curves](evaluation/robustness.png)" in text
    assert "![cross-generator heatmap of inceptionv3](evaluation/crossgen_inceptionv3.png)" in text
    assert "| gan | 0.950 [0.850, 1.050] (AUC 0.800) | 0.310 [0.210, 0.410] (AUC 0.800) |" in text
    assert "| all but the column | 0.720" in text
    assert "not applicable (the data has 1 (sd14))" in text
    quiet = evaluation_report(
        results, robustness, matrices, figures, [], None, maps, galleries, "", blends
    )
    assert "Confound warning" not in quiet and "Random-init" not in quiet
    # the maps: their meaning, the deletion check of every backbone, and each gallery
    assert (
        "M. The deletion check covers" in text
        and "![deletion curves](evaluation/deletion.png)" in text
    )
    assert "| inceptionv3 | 8 | 0.300 [0.250, 0.350] | 0.500 [0.450, 0.550] |" in text
    assert "| 0.400 | **better than random** |" in text and "| **no better than random** |" in text
    assert "maps of this backbone are **no better than random**" in text
    assert (
        "![most confident real of inceptionv3](evaluation/gallery/inceptionv3/"
        "most_confident_real-1.png)<br>real image, p-score 0.990" in text
    )
    assert text.count("none in the test split") == 1
    # the blends: the curves, the app's promise and whether the maps find the AI region
    assert "![blend curves](evaluation/blend.png)" in text
    assert (
        "| inceptionv3 | ai in real | hard | 0.97 [0.92, 1.02] | 0.57 [0.52, 0.62] | "
        "0.17 [0.12, 0.22] | -0.900 | between AI fractions 0.5 and 1 |" in text
    )
    assert (
        "| spectrum | 0.50 [0.00, 1.00] (n=4) | 0.930 | 0.25 [0.00, 0.50] (n=8) | 0.810 |" in text
    )
    assert (
        "| inceptionv3 | ai in real | 12 | 0.750 [0.500, 0.900] | 0.200 [0.150, 0.250] | "
        "0.500 [0.400, 0.600] | 0.100 [0.050, 0.150] | **better than random** (IoU: better "
        "than random) |" in text
    )
    assert "| spectrum | real in ai | 0 |  |  |  |  | n/a |" in text
