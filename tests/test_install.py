"""The environment pyproject.toml installs: one TensorFlow distribution, never two; no extra
that its distribution does not provide."""

import itertools
from importlib.metadata import PackageNotFoundError, metadata, packages_distributions

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT


def test_exactly_one_distribution_provides_tensorflow():
    """tensorflow, tensorflow-cpu, tensorflow-intel, tf-nightly... all install the same
    `tensorflow` package folder: with two, one overwrites the other's files and the mix breaks
    at import or, worse, at run time."""
    providers = sorted(set(packages_distributions().get("tensorflow", [])))
    assert len(providers) == 1, (
        f"TensorFlow is installed by {providers or 'no distribution'}; keep exactly one "
        "(pyproject.toml's `tensorflow`), e.g. `pip uninstall -y tensorflow-cpu` then "
        "`pip install -e .` again"
    )


def test_every_extra_pyproject_asks_of_a_dependency_exists():
    """pip only warns, and installs nothing, for an extra that a distribution does not provide
    (`dvc[hydra]` once): each one named in pyproject.toml must be one its distribution declares."""
    missing = []
    for requirement in project_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            provided = metadata(requirement.name).get_all("Provides-Extra") or []
        except PackageNotFoundError:
            continue  # an optional extra of ours that is not installed here
        normalized = {canonicalize_name(extra) for extra in provided}
        missing += [
            f"{requirement.name}[{extra}]"
            for extra in requirement.extras
            if canonicalize_name(extra) not in normalized
        ]
    assert not missing, f"pyproject.toml asks for extras that do not exist: {missing}"


def project_requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml: the dependencies and each extra's."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *itertools.chain(*project["optional-dependencies"].values())]
    return [Requirement(line) for line in lines]
