"""Benchmark suite: every figure a ratio of two things measured side by side in this run.

`python -m benchmarks` writes benchmarks/results.json and BENCHMARKS.md. It uses
../shared/data/sample/ where present, else generated images, and the backbones of the composed
configs with random weights (weights: null), so it runs offline. `--quick` shrinks everything
for a smoke run.

A benchmark is a module whose docstring's first line is its title, with NAME (its key in
results.json), `measure(context) -> dict` and `render(result) -> list[str]` (its markdown),
optionally `targets(result)` (rows of the target table) and NEEDS_DVC (left out by --skip-dvc);
adding one is one entry in BENCHMARKS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import (
    bfloat16,
    cached_features,
    clip,
    durable_writes,
    explain,
    feature_stage,
    gpu,
    head_experiment,
    hostile,
    inference,
    memory,
    ray_engine,
    scrape,
    serve,
    smote_scale,
    training_stage,
)
from benchmarks.common import Context, image_paths, machine, timed
from benchmarks.project import ROOT, compose_params, random_weights
from benchmarks.render import markdown
from pipeline.core.io import json_text

BENCHMARKS = [
    feature_stage,
    cached_features,
    head_experiment,
    bfloat16,
    memory,
    inference,
    scrape,
    ray_engine,
    smote_scale,
    serve,
    clip,
    durable_writes,
    training_stage,
    hostile,
    explain,
    gpu,
]


def default_crawl_size(params: dict[str, Any]) -> int:
    """The default crawl's images: scrape.max_items of each label, as the configs say."""
    from pipeline.data.images import LABELS

    return len(LABELS) * params["scrape"]["max_items"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--only", nargs="+", choices=[b.NAME for b in BENCHMARKS], help="run only these"
    )
    parser.add_argument(
        "--skip-dvc", action="store_true", help="leave out the benchmarks that run DVC"
    )
    parser.add_argument(
        "--dvc-images",
        type=int,
        default=None,
        help="images for the head experiment (default: the default crawl's, "
        "scrape.max_items per label)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' results of --out (a run of the same kind), replacing "
        "only those measured now; the page says which were measured when",
    )
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.render:
        args.markdown.write_text(markdown(json.loads(args.out.read_text()), BENCHMARKS))
        return
    os.environ.setdefault("AIIC_OFFLINE", "1")
    os.environ.setdefault("AIIC_LOOPBACK_ONLY", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # DVC's commands would report usage online
    selected = [
        benchmark
        for benchmark in BENCHMARKS
        if (not args.only or benchmark.NAME in args.only)
        and not (args.skip_dvc and getattr(benchmark, "NEEDS_DVC", False))
    ]
    params = compose_params()
    count = args.images or (16 if args.quick else 256)
    results: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    if args.merge and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        if earlier["quick"] != args.quick:
            raise SystemExit("--merge: the results in --out are of the other kind (--quick)")
        measured = {b.NAME: results["machine"]["date"] for b in selected}
        results = {**earlier, "updated": {**earlier.get("updated", {}), **measured}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        context = Context(
            quick=args.quick,
            params=params,
            backbones=random_weights(params, small=args.quick),
            paths=image_paths(count, work),
            work=work,
            dvc_images=args.dvc_images or (count if args.quick else default_crawl_size(params)),
        )
        for benchmark in selected:
            seconds, results[benchmark.NAME] = timed(benchmark.measure, context)
            if hasattr(benchmark, "headline"):  # figures the issues name as results.json keys
                results.update(benchmark.headline(results[benchmark.NAME]))
            print(f"benchmark {benchmark.NAME}: {seconds:.0f} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text(results))
    page = markdown(results, BENCHMARKS)
    args.markdown.write_text(page)
    print(page)


if __name__ == "__main__":
    main()
