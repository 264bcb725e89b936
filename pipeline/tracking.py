"""DVCLive's logger as the train and evaluate stages open it: one `Live` per stage process for
every backbone, writing into the stage's output folder, with DVCLive's own dvc.yaml section off
(dvc.yaml declares each kind of plot once, as a folder of one file per backbone) and no
experiment of its own (the stage already runs under `dvc repro` or `dvc exp run`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import AiicError

if TYPE_CHECKING:
    from dvclive import Live


class NoCommit(AiicError, RuntimeError):
    """DVCLive was asked to log inside a Git repository that has no commit yet."""


def open_live(folder: Path) -> Live:
    """A DVCLive `Live` writing into `folder` (use it as a context manager: its end writes the
    summary and, inside `dvc exp run`, keeps the folder tracked)."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(str(folder), dvcyaml=False, save_dvc_exp=False)
    except SCMError as error:
        raise NoCommit(
            f"DVCLive could not read this project's Git history to log {folder} ({error}). "
            "Commit once (git add . && git commit -m start) and run the stage again."
        ) from error
