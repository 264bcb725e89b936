"""`aiic`: one entry point for every stage and command (`aiic prepare` = `python -m pipeline
prepare`); it applies the start-up tuning of pipeline.core.entry before the stage's libraries
load."""

from __future__ import annotations

import importlib
import sys

from pipeline.core.entry import run, tune_startup

STAGES = ("scrape", "prepare", "features", "balance", "robustness", "train", "explain", "blend")
STAGES += ("crossgen", "evaluate", "compare", "export")
COMMANDS = {
    "predict": "pipeline.serving.predict",
    "serve": "pipeline.serving.serve",
    "compose": "pipeline.stages.params",
}
# `evaluate` is both a stage (no arguments: dvc.yaml runs it so) and, given any argument, the
# command that measures the exported model on a person's labelled images.
WITH_ARGUMENTS = {"evaluate": "pipeline.serving.assess"}
USAGE = f"""usage: aiic COMMAND [ARGS...]

commands:
  {" | ".join(STAGES)}
                 run one pipeline stage (as `dvc repro` does; per-backbone stages take the name)
  predict PATH_OR_URL... [--model DIR] [--format table|json|csv] [--recursive]
          [--runtime keras|litert] [--explain DIR]
                 score images, folders and URLs with the exported model (--explain: and draw
                 where it looks, an occlusion map per image, into DIR)
  serve [--host H] [--port P] [--model DIR] [--runtime keras|litert] [--max-batch N]
        [--batch-wait-ms MS] [--workers N] [--max-maps N]
                 the exported model behind an HTTP API (POST /predict, POST /explain,
                 GET /healthz, GET /model)
  evaluate DIR_OR_CSV [--model DIR] [--format table|json|markdown] [--out FILE]
                 measure the exported model on labelled images (real/ and ai/, or a CSV of
                 path,label[,source]); without arguments, `evaluate` is the pipeline stage
  compose [OVERRIDE...]
                 compose configs/ into params.yaml with Hydra overrides, as `dvc exp run -S` does
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in (*STAGES, *COMMANDS):
        print(f"aiic: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    tune_startup()
    if rest and command in WITH_ARGUMENTS:
        module = importlib.import_module(WITH_ARGUMENTS[command])
    else:
        module = importlib.import_module(COMMANDS.get(command, f"pipeline.stages.{command}"))
    sys.argv = [f"aiic {command}", *rest]
    run(module.main, f"aiic {command}")


if __name__ == "__main__":
    main()
