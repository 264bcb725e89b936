"""11. Durable writes: what flushing every output to the disk costs a stage.

pipeline.core.io flushes (fsync) each output's files and folders before the rename that publishes
it, and the folder after it. Measured on the prepare stage with `data.normalize: true`, the stage
that writes the most files (a re-encoded JPEG of every kept image): the whole stage process, as
`python -m pipeline prepare` runs it, with the flushes and with them switched off in the same
code, alternately, side by side in one run; and the flush of a fresh copy of the stage's output
folder alone, its files one after another and (as pipeline.core.io does) many at once.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Context, labelled_source, timed
from benchmarks.project import ROOT, compose_params, run

NAME = "durable_writes"
ROUNDS = 4  # runs of each, alternately, each variant first in half of them; the median counts
NOISE = 0.08  # this machine's run-to-run spread: the cost must stay within it

STAGE = "from pipeline.cli import main\nmain()"
WITHOUT_FSYNC = "import pipeline.core.io\npipeline.core.io._fsync = lambda path: None\n" + STAGE
# The stage as it is, with the wall time its main thread spends flushing printed at its end.
TIMING_FLUSHES = """
import sys, threading, time
import pipeline.core.io
spent, depth = [0.0], [0]

def timed(function):
    def wrapper(*args):
        if threading.current_thread() is not threading.main_thread() or depth[0]:
            return function(*args)  # pipeline.core.io._flush's own, counted in its time
        depth[0] += 1
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            depth[0] -= 1
            spent[0] += time.perf_counter() - start
    return wrapper

io = pipeline.core.io
io._flush, io._fsync = timed(io._flush), timed(io._fsync)
try:
    from pipeline.cli import main
    main()
finally:
    print(f"flush_s={spent[0]}", file=sys.stderr)
"""


def load() -> float:
    """The 1-minute load average per core: how busy the machine was."""
    return round(os.getloadavg()[0] / os.cpu_count(), 2)


def flush_seconds(folder: Path, copy: Path) -> dict[str, float]:
    """Seconds to flush a fresh copy of `folder` (its data not yet on the disk): every file one
    after another, and pipeline.core.io's flush (many at once)."""
    from pipeline.core import io

    def one_by_one(path: Path) -> None:
        for entry in (path, *path.rglob("*")):
            io._fsync(entry)

    seconds = {}
    for name, flush in (("one_by_one_s", one_by_one), ("concurrent_s", io._flush)):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        seconds[name] = round(timed(flush, copy)[0], 3)
    shutil.rmtree(copy)
    return seconds


def measure(context: Context) -> dict[str, Any]:
    """Seconds of the prepare stage with and without fsync, alternately, in a folder that the
    local spider filled with `context.dvc_images` labelled images; seconds of flushing its
    output folder one file after another and concurrently."""
    from pipeline.stages.params import PARAMS_FILE

    work = context.work / "durable_writes"
    source = labelled_source(context.dvc_images, work / "source", context.work)
    params = compose_params("scrape=local")
    params["scrape"]["source"] = str(source)
    params["data"]["normalize"] = True
    (work / PARAMS_FILE).write_text(yaml.safe_dump(params))
    env = {"PYTHONPATH": str(ROOT)}
    run([sys.executable, "-m", "pipeline", "scrape"], work, env=env)
    load_before = load()
    variants = [("fsync", TIMING_FLUSHES), ("no_fsync", WITHOUT_FSYNC)]
    seconds: dict[str, list[float]] = {variant: [] for variant, _ in variants}
    flushes: dict[str, list[float]] = {"in_stage_s": [], "one_by_one_s": [], "concurrent_s": []}
    prepared = work / "data" / "prepared"
    for round_ in range(1 if context.quick else ROUNDS):
        for variant, code in variants[:: 1 if round_ % 2 else -1]:  # each goes first in turn
            elapsed, done = timed(run, [sys.executable, "-c", code, "prepare"], work, env=env)
            seconds[variant].append(round(elapsed, 2))
            if variant == "fsync":
                spent = done.stderr.rpartition("flush_s=")[2].split()[0]
                flushes["in_stage_s"].append(round(float(spent), 3))
        for name, value in flush_seconds(prepared, work / "flushed").items():
            flushes[name].append(value)
    medians = {variant: round(statistics.median(values), 2) for variant, values in seconds.items()}
    flush = {name: round(statistics.median(values), 3) for name, values in flushes.items()}
    return {
        "images": sum(1 for path in source.rglob("*") if path.is_file()),
        "files_written": sum(1 for path in prepared.rglob("*") if path.is_file()),
        "seconds": seconds,
        "fsync_s": medians["fsync"],
        "no_fsync_s": medians["no_fsync"],
        "fsync_over_no_fsync": round(medians["fsync"] / medians["no_fsync"], 3),
        "flush_share": round(flush["in_stage_s"] / medians["fsync"], 4),
        "flush": flush,
        "flushes": flushes,
        "one_by_one_over_concurrent": round(flush["one_by_one_s"] / flush["concurrent_s"], 1),
        "load_per_core": [load_before, load()],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "file_system": file_system(work),
    }


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts): fsync's cost is its."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    return max(
        ((point, kind) for _, point, kind, *_ in mounts if str(path.resolve()).startswith(point)),
        key=lambda mount: len(mount[0]),
        default=("", "unknown"),
    )[1]


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    share = result["flush_share"]
    return [
        (
            "11. prepare stage: its time flushing outputs (fsync) ÷ its whole time",
            f"<= {NOISE} (noise)",
            share,
            share <= NOISE,
        )
    ]


def render(result: dict[str, Any]) -> list[str]:
    low, high = result["load_per_core"]
    flush = result["flush"]
    return [
        "## 11. Durable writes",
        f"The prepare stage (`data.normalize: true`, {result['images']} images, "
        f"{result['files_written']} files written) spends **{flush['in_stage_s']} s of its "
        f"{result['fsync_s']} s ({result['flush_share']:.1%})** flushing its outputs to the disk "
        f"(fsync, timed inside the stage's process). As whole processes, with the flushes and "
        f"with them switched off, alternately ({len(result['seconds']['fsync'])} runs each, the "
        f"median): {result['fsync_s']} s against {result['no_fsync_s']} s, "
        f"{result['fsync_over_no_fsync']}x, on {result['file_system']} (runs with fsync: "
        f"{result['seconds']['fsync']} s; without: {result['seconds']['no_fsync']} s). "
        f"Flushing a fresh copy of its output folder alone takes "
        f"{flush['concurrent_s']} s as pipeline.core.io does it, many files at once (the file "
        f"system commits them together), against {flush['one_by_one_s']} s one after another "
        f"(**{result['one_by_one_over_concurrent']}x**). Measured {result['date']}; load average "
        f"per core: {low} at the start, {high} at the end ({result['cores']} cores shared with "
        "other work).",
    ]
