"""benchmarks/ray_engine.py at a tiny size, so that it never rots (no timing asserted)."""

import pytest


@pytest.mark.slow
def test_the_ray_engine_benchmark_measures_both_engines():
    pytest.importorskip("ray")
    from benchmarks import ray_engine
    from benchmarks.project import random_backbone

    spec = {**random_backbone("vgg16", 32), "batch_size": 32}
    results = ray_engine.run(images=8, spec=spec, rounds=1)
    assert isinstance(results["ray_engine_ratio"], float)
    assert isinstance(results["ray_one_actor_ratio"], float)
    assert results["ray_startup_s"] > 0
