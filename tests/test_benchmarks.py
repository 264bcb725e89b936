"""A smoke run of the benchmark suite at tiny sizes, so that it never rots (no timing asserted)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_quick_benchmark_run_writes_results_and_markdown(tmp_path):
    out, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--images", "16", "--skip-dvc",
         "--out", str(out), "--markdown", str(markdown)],
        cwd=ROOT, check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert set(results) >= {"machine", "feature_stage", "cached_features", "memory", "inference"}
    for name in ("inceptionv3", "vgg16", "spectrum"):
        assert results["feature_stage"][name]["stage_over_bare"] > 0
    assert "| inceptionv3 | 75 | 16 |" in markdown.read_text()
