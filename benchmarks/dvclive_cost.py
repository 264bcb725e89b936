"""What DVCLive costs a head experiment: the train stage's curves
(pipeline.stages.train.CurvesToLive) and the evaluate stage's plots
(pipeline.stages.evaluate.log_plots), each stage's DVCLive parts timed as the stage runs them.

Each stage's part runs in a fresh process in a project after its `dvc repro`, with the environment
`dvc exp run` gives a stage (DVC_ROOT, DVC_EXP_BASELINE_REV, DVC_EXP_NAME): there the `Live`
opens DVC's repo, and its `end()` builds DVC's index and lists untracked files to keep its folder
tracked (dvclive/live.py). What is timed: importing DVCLive, opening the `Live`, the callback's
hooks during each fit (not the fit itself), evaluate's plots (scikit-learn's curves and their
files: work that plots need with or without DVCLive, counted here all the same), and the `end()`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.project import run

REPEATS = 2  # fresh processes per stage; the fastest counts
PARTS = ("import_s", "open_s", "logging_s", "end_s")

SETUP = """
import json, sys, time
from pipeline.core.entry import tune_startup
tune_startup()
import numpy as np
from pipeline.stages.params import load_params
params = load_params()
"""

TRAIN = """
import keras
from pipeline.models.head import train_head
from pipeline.core.paths import HEADS_DIR, HISTORY_DIR, balanced_file, features_dir
from pipeline.models.runtime import load_features
start = time.perf_counter()
import dvclive, dvclive.utils
import_s = time.perf_counter() - start
from pipeline.stages.train import CurvesToLive
from pipeline.core.tracking import open_live

class Timed(keras.callbacks.Callback):
    # forwards the hooks CurvesToLive uses, timing them
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

data = {}
for name in params["backbones"]:
    with np.load(balanced_file(name)) as balanced:
        train = (balanced["features"], balanced["labels"])
    data[name] = (train, load_features(features_dir(name), "val")[:2])
start = time.perf_counter()
# the stage logs into its next output, .tmp-heads (pipeline.core.io), which .gitignore names
live = open_live(HEADS_DIR.parent / ".tmp-dvclive-cost" / HISTORY_DIR.relative_to(HEADS_DIR))
open_s, logging_s = time.perf_counter() - start, 0.0
for name, (train, val) in data.items():
    logger = Timed(CurvesToLive(live, name))
    train_head(train, val, params["head"], params["seed"], callbacks=[logger])
    logging_s += logger.seconds
"""

EVALUATE = """
import pandas as pd
import pipeline.models.metrics  # the stage's other imports first: scikit-learn, SciPy
start = time.perf_counter()
import dvclive
import_s = time.perf_counter() - start
from pipeline.stages.evaluate import log_plots
from pipeline.data.images import LABELS
from pipeline.core.io import read_json
from pipeline.core.paths import CALIBRATION_FILE, HEADS_DIR, metrics_file, scores_file
data = {}
for name in params["backbones"]:
    scores = pd.read_csv(scores_file(name), dtype={"id": str})
    data[name] = (
        scores["label"].map(LABELS.index).to_numpy(dtype=np.int64),
        {"uncalibrated": scores["p_raw"].to_numpy(), "calibrated": scores["p_real"].to_numpy()},
        read_json(HEADS_DIR / name / CALIBRATION_FILE)["threshold"],
        read_json(metrics_file(name, "robustness")),
    )
from pipeline.core.tracking import open_live
start = time.perf_counter()
live = open_live(".tmp-dvclive-cost/eval")
open_s = time.perf_counter() - start
start = time.perf_counter()
for name, (labels, scores, threshold, robustness) in data.items():
    log_plots(live, name, labels, scores, threshold, robustness)
logging_s = time.perf_counter() - start
"""

REPORT = """
start = time.perf_counter()
live.end()
end_s = time.perf_counter() - start
print(json.dumps({"import_s": import_s, "open_s": open_s, "logging_s": logging_s, "end_s": end_s}))
"""

SCRIPTS = {"train": TRAIN, "evaluate": EVALUATE}


def timings(project: Path, stage: str, env: dict[str, str]) -> dict[str, float]:
    """One fresh process: the seconds of each of DVCLive's parts in `stage`."""
    output = run([sys.executable, "-c", SETUP + SCRIPTS[stage] + REPORT], project, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(project: Path) -> dict[str, Any]:
    """Seconds of each stage's DVCLive parts, the fastest of REPEATS fresh processes each, and
    their sum over the stages: what DVCLive costs a head experiment."""
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    env = {"DVC_ROOT": str(project), "DVC_EXP_BASELINE_REV": head, "DVC_EXP_NAME": "dvclive-cost"}
    results: dict[str, Any] = {}
    for stage in SCRIPTS:
        runs = [timings(project, stage, env) for _ in range(REPEATS)]
        results[stage] = {part: round(min(each[part] for each in runs), 2) for part in PARTS}
    results["total_s"] = round(sum(sum(results[stage].values()) for stage in SCRIPTS), 2)
    return results
