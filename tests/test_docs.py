"""The README and the documentation site (mkdocs.yml, docs/): a short README whose setup and test
commands are the ones CI runs, and a site whose every page exists and builds with --strict."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from pipeline.stages.scrape import DEMO_COMMAND

README = ROOT / "README.md"
DOCS = ROOT / "docs"
INSTALL = 'pip install -e ".[dev]"'


def nav_pages(entries) -> list[str]:
    """Every page that mkdocs.yml's nav names, nested sections included."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def test_the_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move sections into docs/"


def test_every_page_of_the_nav_exists_and_every_page_is_in_it():
    pages = nav_pages(mkdocs_config()["nav"])
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that docs/ lacks: {missing}"
    names = (path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    left_out = sorted(name for name in names if name not in pages)
    assert not left_out, f"pages of docs/ that mkdocs.yml's nav leaves out: {left_out}"


def test_the_readme_installs_and_tests_as_ci_does():
    """.ci/run is the README's setup then the README's test command: the two must not drift."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    blocks = code_blocks(README.read_text())
    assert INSTALL in blocks[0] and 'pip install --quiet -e ".[dev]"' in ci
    assert blocks[1].strip() == "pytest" and "pytest" in ci


def test_the_quick_start_reads_alike_in_the_readme_and_the_docs():
    readme, docs = README.read_text(), (DOCS / "getting-started.md").read_text()
    assert code_blocks(readme)[:2] == code_blocks(docs)[:2]
    assert DEMO_COMMAND in readme and DEMO_COMMAND in docs


def test_the_dev_extra_installs_the_docs_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras["docs"]) <= set(extras["dev"])


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason='MkDocs or its Material theme is not installed (pip install -e ".[docs]")',
)
def test_the_site_builds_with_strict(tmp_path):
    """`mkdocs build --strict`, as CI runs it: a broken link between pages, a missing anchor or a
    page left out of the nav fails it (about a second)."""
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice on stderr
    )
    assert built.returncode == 0, built.stderr[-3000:]
    # BENCHMARKS.md is a page by inclusion (pymdownx.snippets)
    assert '<h1 id="benchmarks">' in (tmp_path / "site/benchmark-results/index.html").read_text()
