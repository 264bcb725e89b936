"""The one boundary: library code raises, entry points print one paragraph and exit non-zero."""

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, synthetic_image
from pipeline.core import entry
from pipeline.core.entry import run
from pipeline.core.errors import ConfigError, MissingInput


def test_importing_the_library_leaves_the_garbage_collector_alone():
    code = "import gc; before = gc.get_threshold(); import pipeline.serving.inference; "
    code += "print(before == gc.get_threshold())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize(
    "error",
    [ConfigError("balance.method is 'x';\n allowed values: 'smote'."), MissingInput("no splits")],
)
def test_a_reported_error_is_one_paragraph_and_exit_status_1(error, capsys):
    def main():
        raise error

    with pytest.raises(SystemExit) as stopped:
        run(main, "aiic balance")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("aiic balance: ") and err.count("\n") == 1


def test_a_programming_error_keeps_its_traceback():
    def main():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run(main, "aiic train")


def test_a_stage_run_by_the_cli_reports_a_missing_input_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "compare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("aiic compare: params.yaml not found")
    assert "Traceback" not in result.stderr


def test_the_cli_tunes_start_up_only_for_its_own_process():
    code = "from pipeline import cli; import gc; cli.main([]); print(gc.get_threshold())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().endswith(str(gc.get_threshold()))
    code = (
        "from pipeline.core import entry; import gc; entry.tune_startup(); "
        "print(gc.get_threshold()[2])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert int(result.stdout) == 1000


def cuda_lines_of_a_prediction(model: Path, image: Path, **env: str) -> list[str]:
    """The stderr lines that mention CUDA of `python -m pipeline predict` in a fresh process."""
    variables = {k: v for k, v in os.environ.items() if k != entry.TF_LOG_LEVEL_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", str(image), "--model", str(model)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**variables, "PYTHONPATH": str(ROOT), **env},
        check=True,
    )
    assert str(image) in result.stdout
    return [line for line in result.stderr.splitlines() if "cuInit" in line or "CUDA error" in line]


@pytest.mark.skipif(entry.cuda_driver_present(), reason="this machine has a CUDA driver")
def test_a_command_on_a_machine_without_a_gpu_logs_no_cuda_error(exported_model, tmp_path):
    image = tmp_path / "photo.png"
    synthetic_image("real", 48, np.random.default_rng(0)).save(image)
    unquiet = cuda_lines_of_a_prediction(exported_model, image, **{entry.TF_LOG_LEVEL_ENV: "0"})
    if not unquiet:
        pytest.skip("this TensorFlow build has no CUDA platform: nothing to hide")
    assert cuda_lines_of_a_prediction(exported_model, image) == []


@pytest.mark.parametrize(("driver", "level"), [(True, "2"), (False, "3")])
def test_tensorflow_errors_stay_visible_where_a_gpu_can_be_reached(monkeypatch, driver, level):
    monkeypatch.delenv(entry.TF_LOG_LEVEL_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(entry, "cuda_driver_present", lambda: driver)
    entry.quiet_tensorflow_logs()
    assert os.environ[entry.TF_LOG_LEVEL_ENV] == level
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # the GPU TensorFlow would use is kept
    monkeypatch.setenv(entry.TF_LOG_LEVEL_ENV, "0")  # a person's own setting wins
    entry.quiet_tensorflow_logs()
    assert os.environ[entry.TF_LOG_LEVEL_ENV] == "0"


def test_a_driver_counts_only_where_cuda_may_use_a_device(monkeypatch):
    monkeypatch.setattr(entry.sys, "platform", "linux")
    monkeypatch.setattr(entry.ctypes, "CDLL", lambda name: name)  # as if the driver loaded
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert entry.cuda_driver_present()
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not entry.cuda_driver_present()

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(entry.ctypes, "CDLL", missing)
    assert not entry.cuda_driver_present()
