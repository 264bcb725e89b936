"""DVCLive's logger as the train and evaluate stages open it: one `Live` per stage process for
every backbone, writing into the stage's output folder, with DVCLive's own dvc.yaml section off
(dvc.yaml declares each kind of plot once, as a folder of one file per backbone) and no
experiment of its own (the stage already runs under `dvc repro` or `dvc exp run`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import AiicError
from pipeline.core.io import make_json_strict

if TYPE_CHECKING:
    from dvclive import Live


class NoCommit(AiicError, RuntimeError):
    """DVCLive was asked to log inside a Git repository that has no commit yet."""


@functools.cache
def _strict_live() -> type[Live]:
    from dvclive import Live

    class StrictLive(Live):
        """DVCLive's `Live`, whose end leaves strict JSON files: DVCLive writes its plots with
        json.dumps' defaults, so the ROC file's first threshold (scikit-learn's `inf`) comes out
        as Infinity; here it becomes null. (A metric that is not finite it logs as a string.)"""

        def end(self) -> None:
            super().end()
            for path in Path(self.dir).rglob("*.json"):
                make_json_strict(path)

    return StrictLive


def open_live(folder: Path) -> Live:
    """A DVCLive `Live` writing into `folder` (use it as a context manager: its end writes the
    summary, leaves every JSON file in `folder` strict and, inside `dvc exp run`, keeps the
    folder tracked)."""
    from scmrepo.exceptions import SCMError

    try:
        return _strict_live()(str(folder), dvcyaml=False, save_dvc_exp=False)
    except SCMError as error:
        raise NoCommit(
            f"DVCLive could not read this project's Git history to log {folder} ({error}). "
            "Commit once (git add . && git commit -m start) and run the stage again."
        ) from error
