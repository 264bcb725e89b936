"""Re-make reports/blend_cifake_full/: the blend measurements of networks trained on CIFAKE-full.

The shared sample's models are too weak to say what a p-score means for a blend
(reports/blend_sample/); a network trained on 68,002 CIFAKE images is not. Run from the
repository root, with the finished workspace of
`dvc exp run -S +experiment=cifake_full -S scrape.source=...` (docs/evaluation.md) as WORKSPACE:

    python reports/blend_cifake_full.py WORKSPACE [BACKBONE ...]

For each backbone (default: cnn) it runs the blend stage's composites and maps
(pipeline.stages.blend.blend_backbone) on that workspace's test split, trained model and threshold,
with this checkout's configs/blend and configs/explain, and writes evaluate's blend metrics
(pipeline.models.metrics) to reports/blend_cifake_full/<backbone>_blend.json, leaving the
workspace's own outputs alone."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.io import write_json  # noqa: E402
from pipeline.core.paths import SPLITS  # noqa: E402
from pipeline.stages.blend import blend_backbone  # noqa: E402
from pipeline.stages.evaluate import blend_results  # noqa: E402

OUT = ROOT / "reports" / "blend_cifake_full"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("backbones", nargs="*", default=["cnn"])
    args = parser.parse_args()
    os.chdir(args.workspace)
    params = yaml.safe_load(Path("params.yaml").read_text())
    for group in ("blend", "explain"):
        params[group] = yaml.safe_load((ROOT / "configs" / group / "default.yaml").read_text())
    splits = pd.read_csv(SPLITS, dtype={"id": str})
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.backbones:
        threshold = json.loads(Path(f"metrics/{name}.json").read_text())["threshold"]
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            blend_backbone(name, params, splits, Path(tmp) / name)
            results = blend_results(Path(tmp) / name, threshold)
        results["seconds"] = round(time.perf_counter() - started, 1)
        write_json(OUT / f"{name}_blend.json", results)
        print(f"{name}: {OUT / f'{name}_blend.json'} in {results['seconds']} s")


if __name__ == "__main__":
    main()
