"""Atomic outputs: a kill at any moment leaves a complete copy, and outputs land together."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import strict_json
from pipeline.core import io


def write_folder(folder, text):
    folder.mkdir()
    (folder / "a.txt").write_text(text)


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    for text in ("old", "new"):
        with io.atomic_path(out) as tmp:
            write_folder(tmp, text)
    assert (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_keeps_the_old_output(tmp_path):
    out = tmp_path / "out.json"
    io.write_json(out, {"v": 1})
    with pytest.raises(RuntimeError), io.atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert io.read_json(out) == {"v": 1} and not (tmp_path / ".tmp-out.json").exists()


def test_a_kill_between_the_two_renames_leaves_a_copy_that_the_next_run_restores(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    with io.atomic_path(out) as tmp:
        write_folder(tmp, "old")
    replace = os.replace
    calls = []

    def killed_after_the_first_rename(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the moment the old code deleted the output
        replace(src, dst)

    monkeypatch.setattr(io.os, "replace", killed_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt), io.atomic_path(out) as tmp:
        write_folder(tmp, "new")
    monkeypatch.setattr(io.os, "replace", replace)
    assert not out.exists() and (tmp_path / ".old-out" / "a.txt").read_text() == "old"
    io.recover(out)
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_several_outputs_land_together_or_not_at_all(tmp_path, monkeypatch):
    folder, report = tmp_path / "prepared", tmp_path / "reports" / "r.json"
    with io.atomic_outputs(folder, report) as (tmp_folder, tmp_report):
        write_folder(tmp_folder, "old")
        tmp_report.write_text("old")

    # killed while writing: nothing of the new run is visible
    with pytest.raises(KeyboardInterrupt), io.atomic_outputs(folder, report) as (f, r):
        write_folder(f, "new")
        raise KeyboardInterrupt
    assert (folder / "a.txt").read_text() == "old" and report.read_text() == "old"

    # killed after the commit point, between the renames: the next writer rolls forward
    replace = os.replace
    calls = []

    def killed_mid_commit(src, dst):
        calls.append(src)
        if len(calls) == 3:  # the journal, then the folder aside, then the folder in
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(io.os, "replace", killed_mid_commit)
    with pytest.raises(KeyboardInterrupt), io.atomic_outputs(folder, report) as (f, r):
        write_folder(f, "new")
        r.write_text("new")
    monkeypatch.setattr(io.os, "replace", replace)
    assert report.read_text() == "old"  # a mix, until recovery
    io.recover(folder, report)
    assert (folder / "a.txt").read_text() == "new" and report.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "reports"]
    assert sorted(p.name for p in report.parent.iterdir()) == ["r.json"]


def test_json_is_written_strict_with_null_for_numbers_that_are_not_finite(tmp_path):
    out = tmp_path / "m.json"
    data = {"ece": math.nan, "rows": [{"t": math.inf}, (np.float64("-inf"), 0.5)], "n": 3}
    io.write_json(out, data)
    assert strict_json(out) == {"ece": None, "rows": [{"t": None}, [None, 0.5]], "n": 3}


def test_another_writers_nan_and_infinity_are_rewritten_as_null(tmp_path):
    dvclive_style = tmp_path / "roc.json"
    dvclive_style.write_text(json.dumps({"roc": [{"fpr": 0.0, "threshold": math.inf}]}))
    assert io.make_json_strict(dvclive_style)
    assert strict_json(dvclive_style) == {"roc": [{"fpr": 0.0, "threshold": None}]}
    already = dvclive_style.read_bytes()
    assert not io.make_json_strict(dvclive_style) and dvclive_style.read_bytes() == already


def test_outputs_reach_the_disk_before_the_renames_that_publish_them(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def recorded_replace(source, destination):
        events.append(("rename", str(source), str(destination)))
        replace(source, destination)

    monkeypatch.setattr(io.os, "fsync", recorded_fsync)
    monkeypatch.setattr(io.os, "replace", recorded_replace)
    folder, report = tmp_path / "prepared", tmp_path / "r.json"
    with io.atomic_outputs(folder, report) as (tmp_folder, tmp_report):
        (tmp_folder / "sub").mkdir(parents=True)
        (tmp_folder / "sub" / "a.txt").write_text("a")
        tmp_report.write_text("{}")
    flushed = [event[1] for event in events if event[0] == "fsync"]
    renames = [(i, event[1], event[2]) for i, event in enumerate(events) if event[0] == "rename"]
    first_rename = renames[0][0]
    contents = [tmp_folder / "sub" / "a.txt", tmp_folder / "sub", tmp_folder, tmp_report]
    assert {str(path) for path in contents} <= set(flushed[:first_rename])
    assert renames[0][2].endswith(".commit-prepared.json")  # the journal, flushed before too
    assert events[first_rename - 1] == ("fsync", renames[0][1])
    for i, _, destination in renames:  # each rename is on the disk before the next step
        assert events[i + 1] == ("fsync", str(Path(destination).parent))
    assert (folder / "sub" / "a.txt").read_text() == "a" and report.read_text() == "{}"
