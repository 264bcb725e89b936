"""BENCHMARKS.md from one run's results: only what that run measured (earlier runs' figures live
in BENCHMARKS.md's git history)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pipeline.core.tables import markdown_table


def title(benchmark: ModuleType) -> str:
    """The first line of the benchmark module's docstring."""
    return benchmark.__doc__.splitlines()[0].rstrip(".")


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    command = "python -m benchmarks" + (" --quick" if results["quick"] else "")
    keras = f"Keras {m['keras']}" if "keras" in m else f"TensorFlow {m['tensorflow']}"
    text = (
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}), "
        f"{keras}, Python {m['python']}, by `{command}`. Every figure is a "
        "ratio of two things measured side by side in that run, on the same images (random-init "
        "backbones)."
    )
    if results.get("updated"):
        again = ", ".join(f"{name} on {date}" for name, date in results["updated"].items())
        text += f" Measured again since, alone, by `{command} --only NAME --merge`: {again}."
    if results["quick"]:
        text += " A quick run measures tiny sizes: a smoke test, not figures to quote."
    return text


def target_table(results: dict[str, Any], benchmarks: list[ModuleType]) -> str:
    rows = [
        (what, wanted, value, "met" if met else "**missed**")
        for benchmark in benchmarks
        if benchmark.NAME in results and hasattr(benchmark, "targets")
        for what, wanted, value, met in benchmark.targets(results[benchmark.NAME])
    ]
    return markdown_table(["target", "wanted", "this run", ""], rows)


def markdown(results: dict[str, Any], benchmarks: list[ModuleType]) -> str:
    """The whole page: machine, targets, then each benchmark's section in registry order."""
    blocks = ["# Benchmarks", header(results), target_table(results, benchmarks)]
    missing = [title(benchmark) for benchmark in benchmarks if benchmark.NAME not in results]
    if missing:
        blocks.append("Not measured in this run: " + "; ".join(missing) + ".")
    for benchmark in benchmarks:
        if benchmark.NAME in results:
            blocks += benchmark.render(results[benchmark.NAME])
    return "\n\n".join(blocks) + "\n"
