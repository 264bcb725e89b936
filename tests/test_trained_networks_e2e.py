"""Networks trained on images, end to end with the real `dvc repro`: a training killed with
SIGKILL mid-epoch resumes to the weights of an uninterrupted one, and NPR, the CNN and a
fine-tuned keras.applications backbone each go through export with every format."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import compose_params, make_image_folder, make_project, run, set_yaml
from pipeline.core import paths
from pipeline.models.formats import FORMATS
from pipeline.models.training import STATE_FILE

pytestmark = pytest.mark.slow
NETWORKS = ("npr", "cnn", "mobilenetv2")
FINETUNED = {
    "name": "mobilenetv2",
    "application": "MobileNetV2",
    "weights": None,
    "input_size": 32,
    "batch_size": 16,
    "precision": "float32",
}


def dvc(project, *args, timeout=1200):
    return run([sys.executable, "-m", "dvc", *args], project, timeout=timeout).stdout


def trained_project(destination, images, epochs=2, batch_size=8):
    """A project of the three trained networks: npr and cnn from scratch, MobileNetV2 of
    keras.applications fine-tuned (weights null here: nothing can be downloaded)."""
    project = make_project(destination, images, epochs=epochs, only=("npr", "cnn"))
    keras_recipe = compose_params()["backbones"]["vgg16"]["training"]
    finetune = {**keras_recipe, "mode": "finetune", "epochs": epochs, "unfreeze": 20}
    (project / "configs/backbones/mobilenetv2.yaml").write_text(
        json.dumps({**FINETUNED, "training": finetune})
    )
    (project / "configs/backbone/mobilenetv2.yaml").write_text("name: mobilenetv2\n")
    config = project / "configs/config.yaml"
    config.write_text(
        config.read_text()
        .replace("  - scrape:", "  - backbones@backbones.mobilenetv2: mobilenetv2\n  - scrape:")
        .replace("  - backbone: inceptionv3", "  - backbone: cnn")
    )
    for name in ("npr", "cnn"):
        spec = compose_params()["backbones"][name]
        training = {**spec["training"], "epochs": epochs, "batch_size": batch_size}
        set_yaml(project / f"configs/backbones/{name}.yaml", training=training)
    run([sys.executable, "-m", "pipeline", "compose"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "nets"], project)
    return project


def features_process(project):
    variables = {**os.environ, "PYTHONPATH": str(project), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "features", "cnn"],
        cwd=project,
        env=variables,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def weights_of(project, name):
    with h5py.File(project / paths.features_dir(name) / paths.BACKBONE_WEIGHTS_FILE) as stored:
        arrays = []
        stored.visititems(
            lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def test_a_training_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=60, size=40)
    epochs = 3
    projects = {
        run_name: trained_project(tmp_path / run_name, images, epochs=epochs, batch_size=2)
        for run_name in ("killed", "straight")
    }
    for project in projects.values():
        dvc(project, "repro", "prepare")
    run([sys.executable, "-m", "pipeline", "features", "cnn"], projects["straight"])

    killed = projects["killed"]
    state = killed / paths.CHECKPOINTS_DIR / "cnn" / "network" / STATE_FILE
    process = features_process(killed)
    deadline = time.monotonic() + 600
    while not state.is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    assert process.poll() is None, "the training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = json.loads(state.read_text())
    assert 1 <= saved["epoch"] < epochs  # killed between epochs' ends: mid-epoch
    assert not (killed / paths.features_dir("cnn")).exists()  # no half-written output

    resumed = run([sys.executable, "-m", "pipeline", "features", "cnn"], killed)
    assert f"after epoch {saved['epoch']}" in resumed.stderr + resumed.stdout
    for a, b in zip(
        weights_of(killed, "cnn"), weights_of(projects["straight"], "cnn"), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    curves = paths.curves_folder(killed / paths.network_dir("cnn")) / "network/train/loss.tsv"
    assert pd.read_csv(curves, sep="\t")["step"].tolist() == list(range(epochs))
    assert not (killed / paths.CHECKPOINTS_DIR / "cnn").exists()


def test_each_trained_network_exports_in_every_format_and_predicts_as_evaluated(tmp_path):
    project = trained_project(tmp_path / "project", make_image_folder(tmp_path / "images"))
    set_yaml(project / "configs/export/default.yaml", formats=list(FORMATS))
    run([sys.executable, "-m", "pipeline", "compose"], project)
    for name in NETWORKS:
        output = dvc(project, "exp", "run", "-S", f"backbone={name}")
        info = json.loads((project / "models/export/model.json").read_text())
        assert info["backbone"] == name, output
        assert set(info["formats"]) == set(FORMATS)
        for format_name, entry in info["formats"].items():
            assert entry["file"] is None or entry["passed"], entry
            if entry["file"] and not FORMATS[format_name].quantized:  # int8: judged by verdicts
                assert entry["max_abs_diff"] <= 1e-4
        record = json.loads((project / paths.network_dir(name) / "metrics.json").read_text())
        assert record["training"]["mode"] == ("finetune" if name == "mobilenetv2" else "scratch")
        scores = pd.read_csv(project / paths.scores_file(name)).head(4)
        splits = pd.read_csv(project / paths.SPLITS).set_index("id")
        files = [str(project / splits.loc[i, "path"]) for i in scores["id"]]
        predicted = run(
            [sys.executable, "-m", "pipeline", "predict", *files, "--format", "json"], project
        )
        p_real = [row["p_real"] for row in json.loads(predicted.stdout)]
        assert p_real == pytest.approx(scores["p_real"].tolist(), abs=1e-4)

    # a network's own setting re-runs its training and what follows, and no other backbone's
    changed = dvc(project, "exp", "run", "-S", "backbones.npr.training.learning_rate=0.01")
    ran = set(re.findall(r"Running stage '([^']+)'", changed))
    assert {"features@npr", "balance@npr", "robustness@npr", "train"} <= ran
    assert not {"features@cnn", "features@mobilenetv2"} & ran
