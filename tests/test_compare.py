import numpy as np
import pandas as pd

from pipeline.compare import report
from pipeline.metrics import breakdowns, calibration_quality, classification_metrics


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
