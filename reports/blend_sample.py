"""Re-make reports/blend_sample/: the blend stage's measurements on ../shared/data/sample/, in a
throw-away project with the settings of reports/sample_evaluation.py (random-init frozen
backbones, the networks trained on the images, no training-time augmentation).

`python reports/blend_sample.py` (from the repository root, with ../shared/data/sample) runs
`dvc repro` and writes reports/blend_sample/: each backbone's metrics/<b>_blend.json, the blend
figure and the blend section of reports/evaluation.md, as the evaluate and compare stages write
them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the repository root first, as in a checkout, and this folder for sample_evaluation's settings
sys.path[:0] = [str(ROOT), str(ROOT / "reports")]

from sample_evaluation import INPUT_SIZES, SAMPLE, settings, source_csv  # noqa: E402

from benchmarks.project import make_project, run  # noqa: E402

OUT = ROOT / "reports" / "blend_sample"
SECTION = "## Blends: partly AI-made images"


def copy_results(project: Path, seconds: float) -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for name in INPUT_SIZES:
        shutil.copy(project / f"metrics/{name}_blend.json", OUT)
    shutil.copy(project / "reports/evaluation/blend.png", OUT)
    report = (project / "reports/evaluation.md").read_text()
    section = report[report.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    section = section.replace("](evaluation/blend.png)", "](blend.png)")
    note = f"`python reports/blend_sample.py`: `dvc repro` took {seconds / 60:.0f} minutes.\n\n"
    (OUT / "blends.md").write_text(note + section + "\n")


def main() -> None:
    if not SAMPLE.is_dir():
        raise SystemExit(f"{SAMPLE} is absent: this report needs the shared sample")
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project", source_csv(Path(tmp)), settings())
        start = time.perf_counter()
        run([sys.executable, "-m", "dvc", "repro"], project, timeout=6 * 3600)
        copy_results(project, time.perf_counter() - start)
    print(f"blend sample: {OUT}", flush=True)


if __name__ == "__main__":
    main()
