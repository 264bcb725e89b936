"""SMOTE at scale: the balance stage's time and peak memory on synthetic training features, from
ten thousand to a few hundred thousand rows, against `class_weight` (no synthetic rows).

Each size runs in a fresh process, so that its peak resident memory (VmHWM) is its own. The
input's own size is reported beside it.
`python -m benchmarks.smote_scale [ROWS ...]` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import in_fresh_process
from pipeline.core.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
ROWS = (10_000, 50_000, 200_000)
DIMENSIONS = 2048  # InceptionV3's feature width
MINORITY_SHARE = 0.25


def synthetic_features(rows: int, dimensions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features of two Gaussian classes, a quarter of them in the minority class."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) >= MINORITY_SHARE).astype(np.int64)
    features = rng.standard_normal((rows, dimensions), dtype=np.float32)
    features += labels[:, None].astype(np.float32)
    return features, labels


def peak_rss_mb() -> float:
    """This process's high-water mark (VmHWM): getrusage's ru_maxrss can report the parent's
    peak instead, for a child started with vfork and exec by a larger process."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def balance_once(method: str, rows: int, dimensions: int) -> dict[str, Any]:
    """In this process: balance one synthetic training set; seconds and peak RSS."""
    from pipeline.data.oversample import balance, class_weights

    features, labels = synthetic_features(rows, dimensions)
    input_rss = peak_rss_mb()
    start = time.perf_counter()
    balanced, balanced_labels = balance(features, labels, method, seed=0)
    if method == "class_weight":
        class_weights(balanced_labels)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {
        "method": method,
        "rows": rows,
        "dimensions": dimensions,
        "minority": int(np.bincount(labels).min()),
        "rows_after": len(balanced),
        "input_mb": round(features.nbytes / 2**20, 1),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_before_balance_mb": round(input_rss, 1),
    }


def measure_in_subprocess(method: str, rows: int, dimensions: int, timeout: float) -> dict:
    try:
        return in_fresh_process(
            "benchmarks.smote_scale", f"balance_once({method!r}, {rows}, {dimensions})", timeout
        )
    except subprocess.TimeoutExpired:
        return {"method": method, "rows": rows, "dimensions": dimensions, "timed_out_s": timeout}


def run(
    rows: tuple[int, ...] = ROWS, dimensions: int = DIMENSIONS, timeout: float = 1800
) -> dict[str, Any]:
    """SMOTE and class_weight at each size; a size SMOTE does not finish within `timeout`
    seconds is reported as such."""
    return {
        "smote_scale": [
            measure_in_subprocess(method, count, dimensions, timeout)
            for count in rows
            for method in ("smote", "class_weight")
        ]
    }


NAME = "smote_scale"


def measure(context: Any) -> dict[str, Any]:
    return run((400,), 8, 300) if context.quick else run()


def render(result: dict[str, Any]) -> list[str]:
    lines = [
        "## 8. SMOTE at scale",
        "The balance stage on synthetic training sets of feature rows, each method in a fresh "
        "process: seconds and peak RSS. `balance: class_weight` adds no rows; it weighs the "
        "head's loss instead.",
    ]
    rows = [
        [r["rows"], r["dimensions"], r["method"], f"over {r['timed_out_s']} s (stopped)", "", ""]
        if "timed_out_s" in r
        else [
            r["rows"],
            r["dimensions"],
            r["method"],
            r["seconds"],
            r["peak_rss_mb"],
            r["rows_after"],
        ]
        for r in result["smote_scale"]
    ]
    header = ["rows", "dimensions", "method", "seconds", "peak RSS (MB)", "rows after"]
    return [*lines, markdown_table(header, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", type=int, default=list(ROWS))
    parser.add_argument("--dimensions", type=int, default=DIMENSIONS)
    args = parser.parse_args()
    print(json.dumps(run(tuple(args.rows), args.dimensions), indent=2))


if __name__ == "__main__":
    main()
