"""benchmarks/ray_engine.py at a tiny size, so that it never rots (no timing asserted)."""

import pytest

pytest.importorskip("ray")


@pytest.mark.slow
def test_the_ray_engine_benchmark_measures_both_engines():
    from benchmarks import ray_engine

    results = ray_engine.run(images=16, backbone="vgg16", size=32)
    assert results["ray_engine_ratio"] > 0 and results["ray_one_actor_ratio"] > 0
    assert results["ray_startup_s"] > 0
