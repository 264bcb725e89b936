"""`aiic`: one entry point for every stage (`aiic prepare` = `python -m pipeline.prepare`)."""

from __future__ import annotations

import importlib
import sys

STAGES = (
    "scrape", "prepare", "features", "balance", "robustness", "train", "evaluate",
    "compare", "export",
)  # fmt: skip
USAGE = f"""usage: aiic COMMAND [ARGS...]

commands:
  {" | ".join(STAGES)}
                 run one pipeline stage (as `dvc repro` does; per-backbone stages take the name)
  predict PATH_OR_URL... [--model DIR] [--format table|json|csv] [--recursive]
                 score images, folders and URLs with the exported model
  compose [OVERRIDE...]
                 compose configs/ into params.yaml with Hydra overrides, as `dvc exp run -S` does
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "compose":
        from pipeline.params import compose

        compose(rest)
        return
    if command not in (*STAGES, "predict"):
        sys.exit(f"aiic: unknown command {command!r}\n{USAGE}")
    sys.argv = [f"aiic {command}", *rest]
    importlib.import_module(f"pipeline.{command}").main()


if __name__ == "__main__":
    main()
