"""The environment pyproject.toml installs: one TensorFlow distribution, never two."""

from importlib.metadata import packages_distributions


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
