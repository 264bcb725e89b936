"""What DVCLive would cost a head experiment: the train stage's curves and the evaluate stage's
plots written by the pipeline's own code, against the same through DVCLive (`Live`,
`log_sklearn_plot`, `log_plot` and `dvclive.keras.DVCLiveCallback`), as it was used before.

Each variant runs in a fresh process in a project after its `dvc repro`, with the environment
`dvc exp run` gives a stage (DVC_ROOT, DVC_EXP_BASELINE_REV, DVC_EXP_NAME): there each Live opens
DVC's repo, and each `end()` builds DVC's index and lists untracked files to keep its folder
tracked (dvclive/live.py). What is timed is what differs: DVCLive's import, each Live's opening
and end, the loggers' hooks during the fit (not the fit itself), the evaluate stage's plots, and
the process's exit; reading the inputs is left out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.project import run

VARIANTS = ("own", "dvclive")
REPEATS = 2  # fresh processes per variant and stage, alternating; the fastest counts

SETUP = """
import json, sys, time
from pipeline.entry import tune_startup
tune_startup()
import numpy as np
from pipeline.params import load_params
variant, params = sys.argv[1], load_params()
"""

TRAIN = """
import keras
from pipeline.paths import HISTORY_DIR, balanced_file, features_dir
from pipeline.runtime import load_features
from pipeline.train import train_head

class Timed(keras.callbacks.Callback):
    # forwards the hooks the two loggers use, timing them
    def __init__(self, logger):
        super().__init__()
        self.logger, self.seconds = logger, 0.0
    def set_model(self, model):
        super().set_model(model)
        self.logger.set_model(model)
    def hook(self, name, *args):
        started = time.perf_counter()
        getattr(self.logger, name)(*args)
        self.seconds += time.perf_counter() - started
    def on_train_begin(self, logs=None):
        self.hook("on_train_begin", logs)
    def on_epoch_end(self, epoch, logs=None):
        self.hook("on_epoch_end", epoch, logs)
    def on_train_end(self, logs=None):
        self.hook("on_train_end", logs)

data = {}
for name in params["backbones"]:
    with np.load(balanced_file(name)) as balanced:
        data[name] = (balanced["features"], balanced["labels"])
    data[name] = (data[name], load_features(features_dir(name), "val")[:2])
start = time.perf_counter()
if variant == "dvclive":
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback
imported, opening, ending, hooks = time.perf_counter() - start, 0.0, 0.0, 0.0
HISTORY_DIR.mkdir(parents=True, exist_ok=True)
for name, (train, val) in data.items():
    if variant == "own":
        logger = Timed(keras.callbacks.CSVLogger(HISTORY_DIR / f"{name}.csv"))
        train_head(train, val, params["head"], params["seed"], callbacks=[logger])
        hooks += logger.seconds
        continue
    opened = time.perf_counter()
    with Live(str(HISTORY_DIR / name), dvcyaml=False, save_dvc_exp=False) as live:
        opening += time.perf_counter() - opened
        logger = Timed(DVCLiveCallback(live=live))
        train_head(train, val, params["head"], params["seed"], callbacks=[logger])
        hooks += logger.seconds
        ended = time.perf_counter()
    ending += time.perf_counter() - ended
# not the fits around the loggers, the same either way
plots = imported + opening + hooks + ending
"""

EVALUATE = """
import pandas as pd
from pipeline.images import LABELS
from pipeline.io import read_json, write_json
from pipeline.metrics import curve_rows, reliability_rows
from pipeline.paths import CALIBRATION_FILE, EVAL_DIR, HEADS_DIR, metrics_file, plot_file
from pipeline.paths import scores_file
data = {}
for name in params["backbones"]:
    scores = pd.read_csv(scores_file(name), dtype={"id": str})
    robust = read_json(metrics_file(name, "robustness"))
    data[name] = (
        scores["label"].map(LABELS.index).to_numpy(dtype=np.int64),
        {"uncalibrated": scores["p_raw"].to_numpy(), "calibrated": scores["p_real"].to_numpy()},
        read_json(HEADS_DIR / name / CALIBRATION_FILE)["threshold"],
        [{"perturbation": kind, **values} for kind, values in robust.items()],
    )
start = time.perf_counter()
if variant == "dvclive":
    from dvclive import Live
imported, opening, ending = time.perf_counter() - start, 0.0, 0.0
for name, (labels, scores, threshold, robustness) in data.items():
    p_real = scores["calibrated"]
    if variant == "own":
        by_plot = curve_rows(labels, p_real, threshold) | {
            f"reliability_{kind}": reliability_rows(labels, values)
            for kind, values in scores.items()
        }
        by_plot["robustness"] = robustness
        for plot, rows in by_plot.items():
            plot_file(EVAL_DIR, plot, name).parent.mkdir(parents=True, exist_ok=True)
            write_json(plot_file(EVAL_DIR, plot, name), rows)
        continue
    opened = time.perf_counter()
    with Live(str(EVAL_DIR / "dvclive" / name), dvcyaml=False, save_dvc_exp=False) as live:
        opening += time.perf_counter() - opened
        names = np.array(LABELS)
        live.log_sklearn_plot("roc", labels, p_real)
        live.log_sklearn_plot("precision_recall", labels, p_real)
        verdicts = names[(p_real >= threshold).astype(int)]
        live.log_sklearn_plot("confusion_matrix", names[labels], verdicts)
        for kind, values in scores.items():
            live.log_sklearn_plot("calibration", labels, values, name=f"reliability_{kind}")
        live.log_plot("robustness", robustness, "accuracy", "perturbation", "bar_horizontal")
        ended = time.perf_counter()
    ending += time.perf_counter() - ended
plots = time.perf_counter() - start
"""

REPORT = """
timings = {"plots_s": plots, "import_s": imported, "open_s": opening, "end_s": ending}
print(json.dumps({**timings, "finished": time.time()}))
"""

SCRIPTS = {"train": TRAIN, "evaluate": EVALUATE}


def script(stage: str) -> str:
    return SETUP + SCRIPTS[stage] + REPORT


def timings(project: Path, stage: str, variant: str, env: dict[str, str]) -> dict[str, float]:
    """One fresh process: what its plots cost, DVCLive's parts of that, and its exit."""
    output = run([sys.executable, "-c", script(stage), variant], project, env=env).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    return {**figures, "exit_s": time.time() - figures.pop("finished")}


def measure(project: Path) -> dict[str, Any]:
    """Seconds of each stage's plot output both ways, the fastest of REPEATS fresh processes, and
    DVCLive's extra seconds over the pipeline's own code."""
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    env = {"DVC_ROOT": str(project), "DVC_EXP_BASELINE_REV": head, "DVC_EXP_NAME": "dvclive-cost"}
    results: dict[str, Any] = {}
    for stage in SCRIPTS:
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
        for _ in range(REPEATS):
            for variant in VARIANTS:
                runs[variant].append(timings(project, stage, variant, env))
        best = {
            variant: {key: min(each[key] for each in timed_runs) for key in timed_runs[0]}
            for variant, timed_runs in runs.items()
        }
        own, live = best["own"], best["dvclive"]
        results[stage] = {
            "own_s": round(own["plots_s"] + own["exit_s"], 2),
            "dvclive_s": round(live["plots_s"] + live["exit_s"], 2),
            "dvclive_import_s": round(live["import_s"], 2),
            "live_open_s": round(live["open_s"], 2),
            "live_end_s": round(live["end_s"], 2),
        }
    results["extra_s"] = round(
        sum(results[stage]["dvclive_s"] - results[stage]["own_s"] for stage in SCRIPTS), 2
    )
    return results
