"""Import boundaries: the library loads no tool dependency; the tools use only public names."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path):
    """Every module name imported by ``path`` (absolute ``import`` and ``from`` forms)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


TOOLS = sorted((ROOT / "embeddings_jax" / "tools").glob("*.py"))
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", TOOLS + SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tools_and_scripts_import_only_the_public_api(path):
    private = [
        m
        for m in _imports(path)
        if m.split(".")[0] == "embeddings_jax"
        and not m.startswith("embeddings_jax.tools")  # the tools' own helpers
        and any(part.startswith("_") for part in m.split(".")[1:])
    ]
    assert not private, f"{path.name} imports private modules: {private}"


def test_library_never_imports_the_tools():
    lib = [p for p in (ROOT / "embeddings_jax").rglob("*.py") if "tools" not in p.parts]
    bad = {p.name: m for p in lib for m in _imports(p) if m.startswith("embeddings_jax.tools")}
    assert not bad
