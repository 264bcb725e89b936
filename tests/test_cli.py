"""`aiic`'s help is generated from the functions that build each stage's and command's own parser,
so it cannot drift from what they read (issue 27: the hand-written usage had lost `--batch-size`
and three of serve's limits)."""

import argparse
import functools
import importlib
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline import cli
from pipeline.serving import assess, predict, serve
from pipeline.stages import arguments as stage_arguments
from pipeline.stages import params

# What each module declares for its own main(), named here rather than asked of pipeline.cli.
DECLARED = {
    **{
        stage: functools.partial(stage_arguments.add_arguments, stage=stage) for stage in cli.STAGES
    },
    "evaluate": assess.add_arguments,  # `aiic evaluate --help` is the command's: it has arguments
    "predict": predict.add_arguments,
    "serve": serve.add_arguments,
    "compose": params.add_arguments,
}
FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")


def names_in(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser`, and the name its help gives each positional argument."""
    names = set()
    for action in parser._actions:
        names |= set(action.option_strings) or {action.metavar or action.dest}
    return names


def declared_names(command: str) -> set[str]:
    parser = argparse.ArgumentParser()
    DECLARED[command](parser)
    return names_in(parser)


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_stage_and_command_declares_its_arguments():
    assert set(DECLARED) == set(cli.STAGES) | set(cli.COMMANDS)


@pytest.mark.parametrize("command", DECLARED)
def test_every_option_of_a_command_is_in_its_help(command, capsys):
    text = help_of([command, "--help"], capsys)
    assert text.startswith(f"usage: aiic {command} ")
    missing = {name for name in declared_names(command) if name not in text}
    assert missing == set()


@pytest.mark.parametrize(
    "command, options",
    [
        ("predict", ["--batch-size"]),
        ("evaluate", ["--batch-size"]),
        ("serve", ["--max-images", "--max-body-mb", "--timeout"]),
    ],
)
def test_the_options_the_hand_written_usage_had_lost_are_in_the_help(command, options, capsys):
    text = help_of([command, "--help"], capsys)
    assert all(option in text for option in options)


@pytest.mark.parametrize("command", ["predict", "serve", "evaluate", "compose", "balance"])
def test_a_module_parses_its_command_line_with_what_it_declares(command, monkeypatch):
    """The parser main() builds has exactly the declared arguments: `python -m` of the module and
    `aiic` read the same command line."""
    built = []

    def capture(parser, *args, **kwargs):
        built.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module = importlib.import_module(cli.module_name(command, ["an argument"]))
    with pytest.raises(SystemExit):
        module.main()
    assert names_in(built[0]) == declared_names(command)


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_aiic_help_lists_every_stage_and_command(argv, capsys):
    if argv:
        text = help_of(argv, capsys)
    else:
        cli.main(argv)
        text = capsys.readouterr().out
    assert text.startswith("usage: aiic ")
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("    ")}
    assert set(cli.STAGES) | set(cli.COMMANDS) <= listed


def test_help_loads_no_deep_learning_framework():
    """`aiic --help` and `aiic COMMAND --help` declare arguments without importing a stage module
    or TensorFlow, Keras, JAX or PyTorch (a stage module may import Keras at its top)."""
    every = [["--help"]] + [[command, "--help"] for command in DECLARED]
    code = (
        "import contextlib, io, sys\n"
        "from pipeline import cli\n"
        f"for argv in {every!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        cli.main(argv)\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}"
        " or m.startswith('pipeline.stages.') and m.split('.')[-1] in cli.STAGES))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.split() == []


def test_an_unknown_command_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "fly"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "invalid choice: 'fly'" in result.stderr


def test_a_command_runs_its_module_with_the_rest_of_the_command_line(monkeypatch):
    called = []
    monkeypatch.setattr(cli, "tune_startup", lambda: called.append("tuned"))
    monkeypatch.setattr(predict, "main", lambda: called.append(list(sys.argv)))
    monkeypatch.setattr("sys.argv", ["aiic"])
    cli.main(["predict", "a.png", "--batch-size", "8"])
    assert called == ["tuned", ["aiic predict", "a.png", "--batch-size", "8"]]


def test_a_usage_error_exits_before_the_start_up_tuning_and_the_module(monkeypatch, capsys):
    monkeypatch.setattr(cli, "tune_startup", lambda: pytest.fail("tuned"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", "a.png", "--batch-size", "many"])
    assert exit_.value.code == 2
    assert "aiic predict: error: argument --batch-size" in capsys.readouterr().err
