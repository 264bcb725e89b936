"""The one boundary: library code raises, entry points print one paragraph and exit non-zero."""

import gc
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline.entry import run
from pipeline.errors import ConfigError, MissingInput


def test_importing_the_library_leaves_the_garbage_collector_alone():
    code = "import gc; before = gc.get_threshold(); import pipeline.inference; "
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
    code = "from pipeline import cli; import gc; cli.main(['--help']); print(gc.get_threshold())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().endswith(str(gc.get_threshold()))
    code = (
        "from pipeline import entry; import gc; entry.tune_startup(); print(gc.get_threshold()[2])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert int(result.stdout) == 1000


def test_an_unknown_command_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "fly"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "unknown command 'fly'" in result.stderr
