"""The layers of pipeline/: each sub-package imports only from its own layer and those below it,
so that the tree drawn in docs/architecture.md stays true (the model code never imports a stage
or the server)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
LAYERS = ("core", "data", "models", "serving", "stages")  # bottom to top


def pipeline_imports(path: Path) -> set[str]:
    """The pipeline modules `path` imports, at its top or inside a function, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pipeline":
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
    return found


def layer_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer():
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert loose == set()
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_above_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = {
        f"{path.name} imports {name}"
        for path in (PACKAGE / layer).glob("*.py")
        for name in pipeline_imports(path)
        if layer_of(name) not in allowed | {None}
    }
    assert upward == set()


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_says_what_lives_there_and_what_it_may_import(layer):
    docstring = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
    below = LAYERS[: LAYERS.index(layer)]
    assert docstring and all(f"pipeline.{name}" in docstring or name in docstring for name in below)


def test_the_readme_and_the_docs_draw_the_layers_as_they_are():
    """The README's drawing names the layers top to bottom, and the docs' tree shows each."""
    root = PACKAGE.parent
    section = (root / "README.md").read_text().split("## Architecture")[1]
    drawing = section.split("```text\n")[1].split("```")[0]
    words = [line.replace("->", "").split()[0] for line in drawing.splitlines()]
    assert [word.removeprefix("pipeline/") for word in words] == list(reversed(LAYERS))
    docs = (root / "docs" / "pipeline.md").read_text().split("## Architecture")[1]
    assert all(f"  {layer}/ " in docs for layer in LAYERS)
