"""`python -m pipeline COMMAND ...`: the same as `aiic COMMAND ...` (dvc.yaml runs stages so)."""

from pipeline.cli import main

main()
