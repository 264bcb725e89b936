"""4. Memory is flat: the features path's peak RSS at 1x and 4x the images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import Context
from benchmarks.project import ROOT

NAME = "memory"
TARGET = 0.10  # the issue's: less growth than this from 1x to 4x the images

# VmHWM (kB), not getrusage's ru_maxrss: a child started with vfork and exec reports its parent's
# peak there when that is larger, and this benchmark's own process is far larger than a stage.
PEAK_RSS_SCRIPT = """
import json, sys
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.runtime import extract
backbone = Backbone.from_spec(json.loads(sys.argv[1]))
out, paths = sys.argv[2], sys.stdin.read().split("\\n")
extract(build_extractor(backbone), paths, backbone.input_size, backbone.batch_size, out,
        backbone.input_mode)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_mib(spec: dict[str, Any], paths: list[str], out: Path) -> float:
    """The high-water mark of a fresh process that extracts the features of `paths`."""
    output = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, json.dumps(spec), str(out)],
        input="\n".join(paths),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def measure(context: Context) -> dict[str, Any]:
    """Peak RSS of the exported backbone's features path, 1x and 4x the images (separate
    processes)."""
    spec, out = context.exported, context.work / "rss.npy"
    paths = context.paths[: max(8, len(context.paths) // 4)]
    one, four = peak_mib(spec, paths, out), peak_mib(spec, paths * 4, out)
    return {
        "backbone": spec["name"],
        "images_1x": len(paths),
        "peak_rss_mib_1x": round(one, 1),
        "peak_rss_mib_4x": round(four, 1),
        "growth": round(four / one - 1, 3),
    }


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    growth = result["growth"]
    return [
        (
            "4. peak RSS growth, 1x to 4x images",
            f"< {TARGET:.0%}",
            f"{growth:+.1%}",
            growth < TARGET,
        )
    ]


def render(result: dict[str, Any]) -> list[str]:
    m = result
    return [
        "## 4. Memory is flat",
        f"Peak RSS of the features path ({m['backbone']}): {m['peak_rss_mib_1x']} MiB for "
        f"{m['images_1x']} images, {m['peak_rss_mib_4x']} MiB for 4x as many: "
        f"**{m['growth']:+.1%}**. Each is a fresh process's high-water mark (VmHWM; getrusage's "
        "ru_maxrss would report this benchmark's own, larger, process instead).",
    ]
