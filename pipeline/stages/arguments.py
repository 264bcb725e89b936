"""The command-line arguments of every stage, declared apart from the stages: a stage module may
import Keras at its top, and `aiic STAGE --help` must not load it. A stage's main() and `aiic`'s
sub-parser for it are both built by add_arguments, so the two cannot differ."""

from __future__ import annotations

import argparse

# Stages dvc.yaml runs once per backbone (its foreach), given the name; every other stage runs all
# of params.yaml's backbones and refuses a name rather than ignore it.
PER_BACKBONE = ("features", "balance", "robustness")


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """`stage`'s arguments: a per-backbone stage's backbone name, none for the others."""
    if stage in PER_BACKBONE:
        parser.add_argument("backbone", help="a backbone of params.yaml's `backbones`")


def parse_arguments(stage: str, description: str) -> argparse.Namespace:
    """sys.argv parsed as `stage`'s command line, as `aiic STAGE` parses it."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser, stage)
    return parser.parse_args()
