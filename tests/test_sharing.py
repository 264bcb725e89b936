"""Sharing cached results between machines through a DVC remote (docs/cluster.md, "Sharing
results"): what one machine computed and pushed, another pulls instead of recomputing."""

import sys

import numpy as np
import pytest

from conftest import run

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.mark.slow
def test_a_pushed_stage_output_is_pulled_into_a_fresh_clone_without_running_it(tmp_path):
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    runs = tmp_path / "runs"
    origin.mkdir()
    code = (
        "import numpy as np, pathlib; pathlib.Path('out').mkdir(); "
        "np.save('out/features.npy', np.arange(12, dtype=np.float32).reshape(3, 4)); "
        f"open({str(runs)!r}, 'a').write('ran\\n')"
    )
    (origin / "dvc.yaml").write_text(
        f'stages:\n  features:\n    cmd: {sys.executable} -c "{code}"\n    outs:\n      - out\n'
    )
    dvc = [sys.executable, "-m", "dvc"]
    for command in (
        ["git", "init", "-q"],
        [*dvc, "init", "-q"],
        [*dvc, "repro", "-q"],
        [*dvc, "remote", "add", "-d", "shared", str(remote)],
        ["git", "add", "-A"],
        [*GIT, "commit", "-q", "-m", "features"],
        [*dvc, "push", "-q"],
    ):
        run(command, origin)
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "out").exists()
    run([*dvc, "pull", "-q"], clone)
    pulled = np.load(clone / "out" / "features.npy")
    np.testing.assert_array_equal(pulled, np.load(origin / "out" / "features.npy"))
    assert "up to date" in run([*dvc, "status"], clone).stdout
    assert runs.read_text() == "ran\n"  # computed once, on the first machine
