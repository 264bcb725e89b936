"""Writing outputs so that an interrupted stage never leaves a half-written one behind.

One output (`atomic_path`) is written to a temporary sibling and swapped in: the old copy is
renamed aside, the new one renamed in, then the old one deleted, so that a kill at any moment
leaves at least one complete copy, which the next writer of that path restores.

Several outputs that must land together (`atomic_outputs`) are all written to temporary siblings
first; then a commit journal naming them is written atomically, and only then are they swapped
in. A kill before the journal exists leaves every old output; a kill after it is rolled forward
by the next writer (or `recover`), so that readers never see a mix of old and new outputs once
the stage has run again.

A power cut is survived too: every temporary file and folder is flushed to the disk (fsync)
before the rename that publishes it, and the folder holding the renamed entry after it, since
a file system may otherwise persist a rename before the data it points to (ext4's delayed
allocation; see fsync(2) on directories).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FLUSH_THREADS = 16  # fsync waits on the disk, not the CPU


def _sibling(path: Path, role: str) -> Path:
    # A prefix, not a suffix: writers such as Keras' save_weights check the file's ending.
    return path.with_name(f".{role}-{path.name}")


def _journal(paths: list[Path]) -> Path:
    return _sibling(paths[0], "commit").with_suffix(".json")


def _fsync(path: Path | str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _flush(path: Path) -> None:
    """Flush `path` to the disk: a file, or a folder with every file and folder in it (their
    entries too), many at once: the file system commits concurrent flushes together, several
    times faster than one after another for a folder of many small files (BENCHMARKS.md)."""
    if not path.is_dir():
        _fsync(path)
        return
    entries = []
    for folder, _, files in os.walk(path):
        entries.append(folder)
        entries += [
            name for name in (os.path.join(folder, f) for f in files) if not os.path.islink(name)
        ]
    with ThreadPoolExecutor(FLUSH_THREADS) as pool:
        list(pool.map(_fsync, entries))


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by `tmp` (already flushed); a complete copy of one of them exists at every
    moment, and the swap itself is on the disk when this returns."""
    if tmp.is_dir() and path.exists():
        old = _sibling(path, "old")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _fsync(path.parent)
        _remove(old)
    else:
        os.replace(tmp, path)  # atomic for a file, and for a folder onto nothing
        _fsync(path.parent)


def _restore(path: Path) -> None:
    """Undo a swap cut short between its two renames; drop the aside copy of a finished one."""
    old = _sibling(path, "old")
    if old.exists() and not path.exists():
        os.replace(old, path)
    _remove(old)


def recover(*paths: Path | str) -> None:
    """Finish a multi-output commit that a kill interrupted, and restore any output left aside.

    Temporary copies of an uncommitted write are deleted: the old outputs stay.
    """
    targets = [Path(path) for path in paths]
    journal = _journal(targets)
    if journal.is_file():
        for tmp, path in json.loads(journal.read_text(encoding="utf-8")):
            if Path(tmp).exists():
                _swap_in(Path(tmp), Path(path))
            _restore(Path(path))
        journal.unlink()
    for path in targets:
        _restore(path)
        _remove(_sibling(path, "tmp"))


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (file or folder); it replaces `path` only on success."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(*paths: Path | str) -> Iterator[tuple[Path, ...]]:
    """Yield a temporary sibling of each path; on success all of them replace their paths together
    (see the module's docstring), and none does on failure."""
    targets = [Path(path) for path in paths]
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
    recover(*targets)
    tmps = tuple(_sibling(path, "tmp") for path in targets)
    try:
        yield tmps
    except BaseException:
        for tmp in tmps:
            _remove(tmp)
        raise
    for tmp in tmps:
        _flush(tmp)
    if len(targets) == 1:
        _swap_in(tmps[0], targets[0])
        return
    journal = _journal(targets)
    pending = _sibling(journal, "tmp")
    pending.write_text(json.dumps([[str(t), str(p)] for t, p in zip(tmps, targets, strict=True)]))
    _flush(pending)
    os.replace(pending, journal)  # the commit point
    _fsync(journal.parent)
    recover(*targets)


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data), encoding="utf-8")


def json_text(data: Any) -> str:
    """Strict JSON (RFC 8259 has no NaN or Infinity, which json.dumps writes by default): a
    number that is not finite is written as null, the missing value."""
    try:
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_or_none(data), indent=2, allow_nan=False)
    return text + "\n"


def _finite_or_none(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite_or_none(value) for value in data]
    return data


class _NotStrict(ValueError):
    pass


def _refuse(constant: str) -> None:
    raise _NotStrict(constant)


def make_json_strict(path: Path | str) -> bool:
    """Rewrite a JSON file that another writer left with NaN or Infinity (DVCLive writes with
    json.dumps' defaults) as json_text writes it, those numbers as null; True if it had any."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        json.loads(text, parse_constant=_refuse)
    except _NotStrict:
        write_json(path, json.loads(text, parse_constant=lambda constant: None))
        return True
    return False


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
