"""A smoke run of the benchmark suite at tiny sizes, so that it never rots (no timing asserted)."""

import json
import subprocess
import sys

import pytest

from benchmarks.project import small_size
from conftest import ROOT, compose_params


@pytest.mark.slow  # a minute or two of backbone runs, even at tiny sizes
def test_quick_benchmark_run_writes_results_and_markdown(tmp_path):
    out, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--images", "16", "--skip-dvc"]
    command += ["--out", str(out), "--markdown", str(markdown)]
    # every benchmark at its quick size: over 10 minutes on a loaded 2-core machine
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=1800)
    results = json.loads(out.read_text())
    assert set(results) >= {"machine", "feature_stage", "cached_features", "memory", "inference"}
    assert set(results["explain"]["backbones"]) == set(compose_params()["backbones"])
    assert "head_experiment" not in results  # --skip-dvc
    page = markdown.read_text()
    for name, spec in compose_params()["backbones"].items():
        size = small_size(spec)
        assert results["feature_stage"][name]["stage_over_bare"] > 0
        assert f"| {name} | {size} | 16 |" in page
    assert "Not measured in this run: 3. Head experiments are cheap" in page
