"""`aiic`: one entry point for every stage and command (`aiic prepare` = `python -m pipeline
prepare`); it applies the start-up tuning of pipeline.core.entry before the stage's libraries
load.

Its help is generated: each sub-parser gets its arguments from the function that builds the
stage's or command's own parser, so `aiic COMMAND --help` lists what the command reads. Only the
named command's arguments are declared, since declaring a command's imports its module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from pipeline.core.entry import run, tune_startup
from pipeline.stages import arguments as stage_arguments

# What each stage and command does: the line `aiic --help` lists and its own help's description.
STAGE_SUMMARIES = {
    "scrape": "run the configured Scrapy spider into data/raw/",
    "prepare": "validate, deduplicate and split the scraped images",
    "features": "one backbone's features of every prepared image (training it where it is trained)",
    "balance": "one backbone's training features balanced as params.yaml's `balance` says",
    "robustness": "one backbone's features of perturbed test images",
    "train": "every backbone's head, early-stopped, calibrated, and its test scores",
    "explain": "occlusion maps of test images and the deletion check of their faithfulness",
    "blend": "what each backbone's score says about partly AI-made composites of test images",
    "crossgen": "heads trained on one generator's images tested on every other's",
    "evaluate": "stage (no arguments): every backbone's test metrics; with DIR_OR_CSV: the "
    "exported model measured on labelled images (real/ and ai/, or a CSV of path,label[,source])",
    "compare": "reports/comparison.md and reports/evaluation.md, every backbone side by side",
    "export": "the chosen backbone's model, ready for inference, into models/export/",
}
STAGES = tuple(STAGE_SUMMARIES)
COMMAND_SUMMARIES = {
    "predict": "score images, folders and URLs with the exported model (--explain DIR: and draw "
    "where it looks, an occlusion map per image, into DIR)",
    "serve": "the exported model behind an HTTP API (POST /predict, POST /explain, GET /healthz, "
    "GET /model)",
    "compose": "compose configs/ into params.yaml with Hydra overrides, as `dvc exp run -S` does",
}
COMMANDS = {
    "predict": "pipeline.serving.predict",
    "serve": "pipeline.serving.serve",
    "compose": "pipeline.stages.params",
}
# `evaluate` is both a stage (no arguments: dvc.yaml runs it so) and, given any argument, the
# command that measures the exported model on a person's labelled images.
WITH_ARGUMENTS = {"evaluate": "pipeline.serving.assess"}


def module_name(command: str, rest: Sequence[str]) -> str:
    """The module whose main() runs `aiic command rest...`."""
    if rest and command in WITH_ARGUMENTS:
        return WITH_ARGUMENTS[command]
    return COMMANDS.get(command, f"pipeline.stages.{command}")


def arguments_of(command: str, rest: Sequence[str]) -> Callable[[argparse.ArgumentParser], None]:
    """The function that declares the arguments main() of `module_name(command, rest)` parses:
    a stage's come from pipeline.stages.arguments (a stage module may import Keras), a command's
    from its module (which loads no TensorFlow until it runs)."""
    name = module_name(command, rest)
    if name == f"pipeline.stages.{command}":
        return lambda parser: stage_arguments.add_arguments(parser, command)
    return importlib.import_module(name).add_arguments


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """`aiic`'s parser: a sub-parser per stage and command, with the arguments of the one that
    `argv` names (the others' would import their modules for nothing)."""
    parser = argparse.ArgumentParser(
        prog="aiic",
        description="Run one pipeline stage (as `dvc repro` does) or a command on the exported "
        "model.",
        epilog="`aiic COMMAND --help` gives a command's arguments.",
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for command, summary in (STAGE_SUMMARIES | COMMAND_SUMMARIES).items():
        sub = commands.add_parser(command, help=summary, description=summary)
        if argv[:1] == [command]:
            arguments_of(command, argv[1:])(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """`aiic ARGS`: parsed first by the generated parser, so that help and usage errors need none
    of a stage's libraries, then run by the chosen module's main() on the same arguments."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    if not argv:
        parser.print_help()
        return
    parser.parse_args(argv)  # usage errors and --help exit here, before any heavy import
    command, rest = argv[0], argv[1:]
    tune_startup()  # parsing imported no TensorFlow (tests/test_cli.py holds it)
    module = importlib.import_module(module_name(command, rest))
    sys.argv = [f"aiic {command}", *rest]
    run(module.main, f"aiic {command}")


if __name__ == "__main__":
    main()
