"""A smoke run of benchmarks/clip.py at its smallest, so that it never rots (no timing asserted)."""

import pytest

from pipeline.models.clip import keras_hub_installed

pytestmark = [
    pytest.mark.slow,  # InceptionV3 and a ViT-B/32 at their full input sizes
    pytest.mark.skipif(not keras_hub_installed(), reason="KerasHub (the clip extra) is missing"),
]


def test_clip_benchmark_reports_both_backbones_and_their_ratio():
    from benchmarks.clip import run

    results = run(images=4, batch_size=2, preset="clip_vit_base_patch32", repeats=1)
    assert results["clip"]["features"] == 512 and results["inceptionv3"]["features"] == 2048
    for name in ("clip", "inceptionv3"):
        assert results[name]["images"] == 4 and results[name]["stage_over_bare"] > 0
    expected = results["clip"]["stage_images_per_s"] / results["inceptionv3"]["stage_images_per_s"]
    assert results["clip_over_inceptionv3"] == pytest.approx(expected, rel=0.01, abs=1e-4)
    assert results["import"]["keras_hub_after_keras_s"] > 0
